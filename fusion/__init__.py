"""Fusion heads, modality dropout, task heads and losses."""

from clinfuse.fusion.base import FusionHead, FusionOutput

__all__ = ["FusionHead", "FusionOutput"]
