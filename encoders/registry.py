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

from clinfuse.encoders.ft_tabular import FTTransformerEncoder
from clinfuse.encoders.strats import STraTSEncoder
from clinfuse.encoders.utde import UTDEEncoder
from clinfuse.encoders.inception1d import Inception1dEncoder
from clinfuse.encoders.xresnet1d import XResNet1dEncoder
from clinfuse.encoders.notes_pretrained import NotesPretrainedEncoder
from clinfuse.encoders.notes_transformer import NotesTransformerEncoder
from clinfuse.encoders.abmil import ABMILEncoder
from clinfuse.encoders.transmil import TransMILEncoder
from clinfuse.encoders.genomics_groups import GenomicsGroupEncoder
from clinfuse.encoders.genomics_snn import GenomicsSNNEncoder

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
        FTTransformerEncoder,
        STraTSEncoder,
        UTDEEncoder,
        XResNet1dEncoder,
        Inception1dEncoder,
        NotesTransformerEncoder,
        NotesPretrainedEncoder,
        ABMILEncoder,
        TransMILEncoder,
        GenomicsSNNEncoder,
        GenomicsGroupEncoder,
    ]
}
