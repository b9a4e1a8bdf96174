"""Early fusion baseline: concatenate each modality's pooled vector with presence flags, then an MLP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.base import FusionHead, FusionOutput


class EarlyFusion(FusionHead):
    """Concatenation of per-modality vectors and presence flags through an MLP.

    Each modality's tokens are mean-pooled over real tokens and projected; an absent modality's slot
    is a learned per-modality "absent" vector (not zeros) and its presence flag is 0, so the MLP
    always knows what is missing.

    Args:
        d_model: width ``D`` of tokens and output.
        modalities: the modality names this head accepts.
        hidden: width of the MLP's hidden layer (default ``2 * d_model``).
        dropout: dropout inside the MLP.
    """

    def __init__(self, d_model: int, modalities: Sequence[str], hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__(d_model, modalities)
        m = len(self.modalities)
        hidden = hidden or 2 * d_model
        self.project = nn.ModuleList(nn.Linear(d_model, d_model) for _ in self.modalities)
        self.absent = nn.Parameter(torch.zeros(m, d_model))
        self.mlp = nn.Sequential(
            nn.Linear(m * d_model + m, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_model),
            nn.LayerNorm(d_model),
        )

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """Fuse by concatenation.

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - pooled and every per_modality value: ``(B, D)``
        """
        means, present = self.modality_means(inputs)  # (B, M, D), (B, M)
        projected = torch.stack([p(means[:, i]) for i, p in enumerate(self.project)], dim=1)  # (B, M, D)
        slots = torch.where(present[..., None], projected, self.absent.expand_as(projected))  # (B, M, D)
        x = torch.cat([slots.flatten(1), present.to(slots.dtype)], dim=1)  # (B, M * D + M)
        per_modality = {
            m: torch.where(present[:, i : i + 1], projected[:, i], torch.zeros_like(projected[:, i]))
            for i, m in enumerate(self.modalities)
        }
        return FusionOutput(pooled=self.mlp(x), per_modality=per_modality)
