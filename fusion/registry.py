"""The fusion heads by name (an explicit dict; nothing registers itself)."""

from __future__ import annotations

from clinfuse.fusion.base import FusionHead
from clinfuse.fusion.masked_mean import MaskedMeanFusion
from clinfuse.fusion.transformer import TransformerFusion

#: head name -> class, built as ``cls(d_model, modalities, **kwargs)``
FUSION_HEADS: dict[str, type[FusionHead]] = {
    "masked_mean": MaskedMeanFusion,
    "transformer": TransformerFusion,
}
