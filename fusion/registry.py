"""The fusion heads by name (an explicit dict; nothing registers itself)."""

from __future__ import annotations

from clinfuse.fusion.base import FusionHead
from clinfuse.fusion.cascaded import CascadedFusion
from clinfuse.fusion.early import EarlyFusion
from clinfuse.fusion.hetero_graph import HeteroGraphFusion
from clinfuse.fusion.late import LateFusion
from clinfuse.fusion.masked_mean import MaskedMeanFusion
from clinfuse.fusion.multimodn import MultiModNFusion
from clinfuse.fusion.symile import SymileFusion
from clinfuse.fusion.transformer import TransformerFusion

#: head name -> class, built as ``cls(d_model, modalities, **kwargs)``
FUSION_HEADS: dict[str, type[FusionHead]] = {
    "cascaded": CascadedFusion,
    "early": EarlyFusion,
    "hetero_graph": HeteroGraphFusion,
    "late": LateFusion,
    "masked_mean": MaskedMeanFusion,
    "multimodn": MultiModNFusion,
    "symile": SymileFusion,
    "transformer": TransformerFusion,
}
