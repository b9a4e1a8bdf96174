"""Per-modality encoders: each turns one modality's batch inputs into ModalityTokens."""

from clinfuse.encoders.abmil import ABMILEncoder
from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.ecg import ECGConvEncoder
from clinfuse.encoders.ft_tabular import FTTransformerEncoder
from clinfuse.encoders.genomics import GenomicsMLPEncoder
from clinfuse.encoders.genomics_groups import GenomicsGroupEncoder
from clinfuse.encoders.genomics_snn import GenomicsSNNEncoder
from clinfuse.encoders.inception1d import Inception1dEncoder
from clinfuse.encoders.notes import NotesBagEncoder
from clinfuse.encoders.notes_pretrained import NotesPretrainedEncoder
from clinfuse.encoders.notes_transformer import NotesTransformerEncoder
from clinfuse.encoders.registry import ENCODER_CLASSES, ENCODERS
from clinfuse.encoders.strats import STraTSEncoder
from clinfuse.encoders.tabular import TabularMLPEncoder
from clinfuse.encoders.timeseries import TimeSeriesTripletEncoder
from clinfuse.encoders.transmil import TransMILEncoder
from clinfuse.encoders.utde import UTDEEncoder
from clinfuse.encoders.wsi import WSIMeanEncoder
from clinfuse.encoders.xresnet1d import XResNet1dEncoder

__all__ = [
    "ABMILEncoder",
    "ECGConvEncoder",
    "ENCODERS",
    "ENCODER_CLASSES",
    "FTTransformerEncoder",
    "GenomicsGroupEncoder",
    "GenomicsMLPEncoder",
    "GenomicsSNNEncoder",
    "Inception1dEncoder",
    "ModalityEncoder",
    "ModalityTokens",
    "NotesBagEncoder",
    "NotesPretrainedEncoder",
    "NotesTransformerEncoder",
    "STraTSEncoder",
    "TabularMLPEncoder",
    "TimeSeriesTripletEncoder",
    "TransMILEncoder",
    "UTDEEncoder",
    "WSIMeanEncoder",
    "XResNet1dEncoder",
]
