"""A simple genomics encoder: expression and mutation flags through a self-normalising MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens


class GenomicsMLPEncoder(ModalityEncoder):
    """Encode an expression profile and mutation flags into one token.

    ``[expression, mutations]`` goes through ``Linear -> SELU -> AlphaDropout -> Linear`` (a
    self-normalising network, the usual baseline for bulk omics) and a LayerNorm.

    Args:
        d_model: width ``D`` of the output token.
        spec: ``{"genes": [...], "mutations": [...], "gene_groups": {...}}`` (``docs/formats.md``
            section 3); ``gene_groups`` is not used by this encoder.
        hidden: width of the hidden layer.
        dropout: alpha-dropout rate after the hidden layer.
    """

    modality = "genomics"

    def __init__(self, d_model: int, spec: dict[str, Any], hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "genes", "mutations")
        self.n_genes = len(spec["genes"])
        self.n_mutations = len(spec["mutations"])
        if self.n_genes + self.n_mutations == 0:
            raise ValueError("GenomicsMLPEncoder: the spec lists no genes and no mutations")
        self.mlp = nn.Sequential(
            nn.Linear(self.n_genes + self.n_mutations, hidden),
            nn.SELU(),
            nn.AlphaDropout(dropout),
            nn.Linear(hidden, d_model),
            nn.LayerNorm(d_model),
        )

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode each patient's profile into one token.

        Args:
            inputs: ``expression``, ``mutations`` and ``present``.

        Returns:
            One token per patient (``N = 1``), masked for absent patients; ``times`` is None.

        Shapes:
            - expression: ``(B, G)`` float; mutations: ``(B, G_mut)`` float
            - output tokens: ``(B, 1, D)``, mask: ``(B, 1)``
        """
        b = self.require(inputs, "expression", "mutations")
        present = inputs["present"]
        self.check_shape("expression", inputs["expression"], (b, self.n_genes))
        self.check_shape("mutations", inputs["mutations"], (b, self.n_mutations))
        x = torch.cat([inputs["expression"], inputs["mutations"].to(inputs["expression"].dtype)], dim=1)
        x = torch.where(present[:, None], x, torch.zeros_like(x))  # (B, G + G_mut)
        tokens = self.mlp(x)[:, None, :]  # (B, 1, D)
        return ModalityTokens.from_tokens(tokens, present[:, None], present)

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        genes = [f"GENE{i}" for i in range(12)]
        return {
            "genes": genes,
            "mutations": ["TP53", "KRAS", "PIK3CA", "BRCA1"],
            "gene_groups": {"cell_cycle": [0, 1, 2, 3], "immune": [4, 5, 6, 7], "metabolism": [8, 9, 10, 11]},
        }

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """12 genes and 4 mutation flags per patient; the last patient is absent.

        Example:
            >>> x = GenomicsMLPEncoder.example_inputs()
            >>> x["expression"].shape, x["mutations"].shape
            (torch.Size([3, 12]), torch.Size([3, 4]))
        """
        g = torch.Generator().manual_seed(seed)
        b = batch_size
        expression = torch.randn(b, 12, generator=g)
        mutations = (torch.rand(b, 4, generator=g) < 0.3).float()
        present = torch.ones(b, dtype=torch.bool)
        present[-1] = False
        # the absent patient's row is padding: fill it with garbage an encoder must ignore
        expression[-1] = torch.randn(12, generator=g) * 100
        mutations[-1] = torch.randint(0, 5, (4,), generator=g).float()
        return {"expression": expression, "mutations": mutations, "present": present}
