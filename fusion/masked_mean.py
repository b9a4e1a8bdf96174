"""The simplest fusion baseline: average the tokens a patient has, then a small MLP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.base import FusionHead, FusionOutput, masked_token_mean  # noqa: F401 (re-export)


class MaskedMeanFusion(FusionHead):
    """Mean over present modalities of each modality's masked token mean, then an MLP.

    Every present modality weighs the same whatever its number of tokens. A patient with no data at
    all gets a learned ``empty`` vector. ``per_modality`` is the MLP applied to each modality's
    token mean alone (zero where the modality is absent).

    Args:
        d_model: width ``D`` of tokens and output.
        modalities: the modality names this head accepts.
        hidden: width of the MLP's hidden layer (default ``d_model``).
        dropout: dropout inside the MLP.
    """

    def __init__(
        self, d_model: int, modalities: Sequence[str], hidden: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__(d_model, modalities)
        hidden = hidden or d_model
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_model)
        )
        self.empty = nn.Parameter(torch.zeros(d_model))

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """Fuse by averaging.

        Args:
            inputs: modality -> tokens; absent modalities may be omitted or have ``present=False``.

        Returns:
            ``pooled`` and ``per_modality`` (one entry per modality of the head).

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - pooled and every per_modality value: ``(B, D)``
        """
        stacked, present = self.modality_means(inputs)  # (B, M, D), (B, M)
        b = stacked.shape[0]
        zeros = stacked.new_zeros(b, self.d_model)
        n_present = present.sum(1, keepdim=True)  # (B, 1)
        mean = stacked.sum(1) / n_present.clamp(min=1).to(stacked.dtype)  # (B, D)
        pooled = torch.where(n_present > 0, self.mlp(mean), self.empty.expand(b, -1))  # (B, D)
        per_modality = {
            m: torch.where(present[:, i : i + 1], self.mlp(stacked[:, i]), zeros)  # (B, D)
            for i, m in enumerate(self.modalities)
        }
        return FusionOutput(pooled=pooled, per_modality=per_modality)
