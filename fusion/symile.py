"""Symile representations per modality, with a learned stand-in for a missing modality.

The head serves two uses. Contrastive pretraining (``clinfuse.experiments.symile_pretrain``) takes
:meth:`SymileFusion.represent`: one L2-normalised ``(B, D)`` vector per modality, where a patient
lacking the modality gets that modality's learned "missing" embedding, so incomplete patients still
contribute to the Symile loss. Supervised training takes :meth:`SymileFusion.forward`: ``pooled`` is
a small MLP over the concatenated representations, the input of the task head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.base import FusionHead, FusionOutput
from clinfuse.fusion.masked_mean import masked_token_mean


class SymileFusion(FusionHead):
    """Per-modality Symile representations, concatenated and mixed by an MLP.

    For modality ``m`` the representation of a patient who has it is
    ``normalize(W_m @ mean of its real tokens + b_m)``; of a patient who lacks it (omitted from the
    dict or ``present=False``), ``normalize(missing_m)``, a learned vector. ``pooled`` is
    ``MLP(concat over the head's modalities)``, so it sees which modalities are missing.
    ``per_modality[m]`` is the representation where the patient has ``m`` and zero where not (the
    :class:`FusionOutput` contract); :meth:`represent` gives the version with missing embeddings.

    Args:
        d_model: width ``D`` of the incoming tokens, of each representation and of ``pooled``.
        modalities: the modality names this head accepts (their order is the concatenation order).
        dropout: dropout inside the pooling MLP.
    """

    def __init__(self, d_model: int, modalities: Sequence[str], dropout: float = 0.1) -> None:
        super().__init__(d_model, modalities)
        self.projections = nn.ModuleDict({m: nn.Linear(d_model, d_model) for m in self.modalities})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(d_model) * 0.02) for m in self.modalities})
        self.mlp = nn.Sequential(
            nn.Linear(len(self.modalities) * d_model, d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_model, d_model),
        )

    def represent(
        self, inputs: Mapping[str, ModalityTokens]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The Symile representation of every modality of the head, missing embeddings filled in.

        Args:
            inputs: modality -> tokens; absent modalities may be omitted or have ``present=False``.

        Returns:
            ``(representations, present)``: modality -> unit-norm ``(B, D)``, and modality -> ``(B,)``
            bool, for every modality of the head (omitted ones are absent for every patient).

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - representations[m]: ``(B, D)``; present[m]: ``(B,)``
        """
        b = self.check_inputs(inputs)
        device = self.reference(inputs).device
        reps, present = {}, {}
        for m in self.modalities:
            missing = F.normalize(self.missing[m], dim=-1).expand(b, -1)  # (B, D)
            if m not in inputs:
                reps[m], present[m] = missing, torch.zeros(b, dtype=torch.bool, device=device)
                continue
            toks = inputs[m]
            z = F.normalize(self.projections[m](masked_token_mean(toks)), dim=-1)  # (B, D)
            reps[m] = torch.where(toks.present[:, None], z, missing)  # (B, D)
            present[m] = toks.present
        return reps, present

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """Fuse by concatenating the representations and applying the MLP.

        Args:
            inputs: modality -> tokens; absent modalities may be omitted or have ``present=False``.

        Returns:
            ``pooled`` and ``per_modality`` (one entry per modality of the head, zero where absent).

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - pooled and every per_modality value: ``(B, D)``
        """
        reps, present = self.represent(inputs)
        stacked = torch.cat([reps[m] for m in self.modalities], dim=-1)  # (B, M * D)
        per_modality = {m: reps[m] * present[m][:, None].to(reps[m].dtype) for m in self.modalities}  # (B, D) each
        return FusionOutput(pooled=self.mlp(stacked), per_modality=per_modality)
