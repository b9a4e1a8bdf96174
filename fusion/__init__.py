"""Fusion heads, modality dropout, task heads and losses."""

from clinfuse.fusion.base import FusionHead, FusionOutput
from clinfuse.fusion.masked_mean import MaskedMeanFusion
from clinfuse.fusion.modality_dropout import ModalityDropout
from clinfuse.fusion.registry import FUSION_HEADS
from clinfuse.fusion.transformer import TransformerFusion

__all__ = [
    "FUSION_HEADS",
    "FusionHead",
    "FusionOutput",
    "MaskedMeanFusion",
    "ModalityDropout",
    "TransformerFusion",
]
