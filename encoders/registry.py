"""The default encoder class of each modality, and every encoder class (explicit dicts; nothing
registers itself)."""

from __future__ import annotations

from clinfuse.encoders.base import ModalityEncoder
from clinfuse.encoders.ecg import ECGConvEncoder
from clinfuse.encoders.genomics import GenomicsMLPEncoder
from clinfuse.encoders.notes import NotesBagEncoder
from clinfuse.encoders.tabular import TabularMLPEncoder
from clinfuse.encoders.timeseries import TimeSeriesTripletEncoder
from clinfuse.encoders.wsi import WSIMeanEncoder

# -- imports: tabular family
# -- imports: timeseries family
# -- imports: ecg family
# -- imports: notes family
# -- imports: wsi family
# -- imports: genomics family

#: modality name -> default encoder class, built as ``cls(d_model, spec[modality], **kwargs)``
ENCODERS: dict[str, type[ModalityEncoder]] = {
    "tabular": TabularMLPEncoder,
    "timeseries": TimeSeriesTripletEncoder,
    "ecg": ECGConvEncoder,
    "notes": NotesBagEncoder,
    "wsi": WSIMeanEncoder,
    "genomics": GenomicsMLPEncoder,
}

#: every encoder class: the defaults and the alternatives, each selectable from YAML by
#: ``class_path``. The conformance suite runs over this list, so an encoder listed here is tested.
ENCODER_CLASSES: dict[str, type[ModalityEncoder]] = {
    cls.__name__: cls
    for cls in [
        *ENCODERS.values(),
        # -- classes: tabular family
        # -- classes: timeseries family
        # -- classes: ecg family
        # -- classes: notes family
        # -- classes: wsi family
        # -- classes: genomics family
    ]
}
