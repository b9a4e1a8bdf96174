"""The default encoder class of each modality (an explicit dict; nothing registers itself)."""

from __future__ import annotations

from clinfuse.encoders.base import ModalityEncoder
from clinfuse.encoders.ecg import ECGConvEncoder
from clinfuse.encoders.genomics import GenomicsMLPEncoder
from clinfuse.encoders.notes import NotesBagEncoder
from clinfuse.encoders.tabular import TabularMLPEncoder
from clinfuse.encoders.timeseries import TimeSeriesTripletEncoder
from clinfuse.encoders.wsi import WSIMeanEncoder

#: modality name -> default encoder class, built as ``cls(d_model, spec[modality], **kwargs)``
ENCODERS: dict[str, type[ModalityEncoder]] = {
    "tabular": TabularMLPEncoder,
    "timeseries": TimeSeriesTripletEncoder,
    "ecg": ECGConvEncoder,
    "notes": NotesBagEncoder,
    "wsi": WSIMeanEncoder,
    "genomics": GenomicsMLPEncoder,
}
