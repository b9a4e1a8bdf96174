"""Per-modality encoders: each turns one modality's batch inputs into ModalityTokens."""

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.ecg import ECGConvEncoder
from clinfuse.encoders.genomics import GenomicsMLPEncoder
from clinfuse.encoders.notes import NotesBagEncoder
from clinfuse.encoders.registry import ENCODERS
from clinfuse.encoders.tabular import TabularMLPEncoder
from clinfuse.encoders.timeseries import TimeSeriesTripletEncoder
from clinfuse.encoders.wsi import WSIMeanEncoder

__all__ = [
    "ENCODERS",
    "ECGConvEncoder",
    "GenomicsMLPEncoder",
    "ModalityEncoder",
    "ModalityTokens",
    "NotesBagEncoder",
    "TabularMLPEncoder",
    "TimeSeriesTripletEncoder",
    "WSIMeanEncoder",
]
