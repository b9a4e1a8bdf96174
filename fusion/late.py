"""Late fusion baseline: one prediction per present modality, averaged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.base import FusionHead, FusionOutput


class LateFusion(FusionHead):
    """Per-modality representations whose task predictions are averaged over present modalities.

    The head builds one vector per modality (masked token mean through a per-modality MLP). It
    sets ``late = True``: the LightningModule then applies the task head to each modality's vector
    and averages the predictions (logits / log-risks) over the modalities the patient has, using
    ``extras["present"]``. ``pooled`` is the mean of the present modalities' vectors (a learned
    ``empty`` vector for a patient with no data), used only for that patient and for inspection.

    Args:
        d_model: width ``D`` of tokens and output.
        modalities: the modality names this head accepts.
        dropout: dropout inside the per-modality MLPs.
    """

    late = True

    def __init__(self, d_model: int, modalities: Sequence[str], dropout: float = 0.1) -> None:
        super().__init__(d_model, modalities)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Dropout(dropout), nn.LayerNorm(d_model))
            for _ in self.modalities
        )
        self.empty = nn.Parameter(torch.zeros(d_model))

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """Per-modality vectors for late fusion.

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - pooled and every per_modality value: ``(B, D)``; extras["present"]: ``(B, M)`` bool
        """
        means, present = self.modality_means(inputs)  # (B, M, D), (B, M)
        vecs = torch.stack([f(means[:, i]) for i, f in enumerate(self.branches)], dim=1)  # (B, M, D)
        vecs = torch.where(present[..., None], vecs, torch.zeros_like(vecs))  # (B, M, D)
        n = present.sum(1, keepdim=True)  # (B, 1)
        pooled = torch.where(n > 0, vecs.sum(1) / n.clamp(min=1).to(vecs.dtype), self.empty.expand(vecs.shape[0], -1))
        per_modality = {m: vecs[:, i] for i, m in enumerate(self.modalities)}
        return FusionOutput(pooled=pooled, per_modality=per_modality, extras={"present": present})


def late_average(predict, output: FusionOutput, modalities: Sequence[str]) -> torch.Tensor:
    """Average ``predict(per_modality[m])`` over each patient's present modalities.

    A patient with no modality gets ``predict(pooled)`` (the learned empty vector).

    Shapes:
        returns ``(B,)`` or ``(B, C)`` like ``predict``'s output.
    """
    present = output.extras["present"]  # (B, M)
    preds = torch.stack([predict(output.per_modality[m]) for m in modalities], dim=1)  # (B, M[, C])
    w = present.to(preds.dtype)
    while w.dim() < preds.dim():
        w = w[..., None]
    n = w.sum(1)
    avg = (preds * w).sum(1) / n.clamp(min=1)
    return torch.where(n > 0, avg, predict(output.pooled))
