"""Fusion heads, modality dropout, task heads and losses."""

from clinfuse.fusion.base import FusionHead, FusionOutput
from clinfuse.fusion.cascaded import CascadedFusion
from clinfuse.fusion.early import EarlyFusion
from clinfuse.fusion.hetero_graph import HeteroGraphFusion
from clinfuse.fusion.late import LateFusion
from clinfuse.fusion.masked_mean import MaskedMeanFusion
from clinfuse.fusion.modality_dropout import ModalityDropout
from clinfuse.fusion.multimodn import MultiModNFusion
from clinfuse.fusion.registry import FUSION_HEADS
from clinfuse.fusion.symile import SymileFusion
from clinfuse.fusion.transformer import TransformerFusion

__all__ = [
    "CascadedFusion",
    "EarlyFusion",
    "HeteroGraphFusion",
    "LateFusion",
    "FUSION_HEADS",
    "FusionHead",
    "FusionOutput",
    "MaskedMeanFusion",
    "ModalityDropout",
    "MultiModNFusion",
    "SymileFusion",
    "TransformerFusion",
]
