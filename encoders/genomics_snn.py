"""Self-normalising network (SNN) genomics encoder: ``[expression, mutations]`` -> one token."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.genomics import GenomicsMLPEncoder


def snn_block(n_in: int, n_out: int, dropout: float) -> nn.Sequential:
    """``Linear -> SELU -> AlphaDropout`` with LeCun-normal weights and zero bias (SELU, as
    Klambauer et al. prescribe; the MCAT/PORPOISE/SurvPath ``SNN_Block`` uses ELU).

    LeCun normal is ``N(0, 1/fan_in)``; torch documents it as ``kaiming_normal_`` with
    ``nonlinearity="linear"`` (not ``"selu"``) for self-normalising networks.
    """
    linear = nn.Linear(n_in, n_out)
    nn.init.kaiming_normal_(linear.weight, mode="fan_in", nonlinearity="linear")
    nn.init.zeros_(linear.bias)
    return nn.Sequential(linear, nn.SELU(), nn.AlphaDropout(dropout))


class GenomicsSNNEncoder(ModalityEncoder):
    """A stack of SNN blocks over the concatenated expression and mutation vector, one token out.

    Follows the self-normalising networks of Klambauer et al., "Self-Normalizing Neural Networks"
    (NeurIPS 2017), as used for omics by the SNN baseline of MCAT/PORPOISE (Chen et al. 2021/2022).

    Every layer is ``Linear -> SELU -> AlphaDropout`` with LeCun-normal initialisation, so
    activations stay near zero mean and unit variance through depth without any normalisation
    layer (and without BatchNorm, which would mix patients). The last block maps to ``d_model``.

    Args:
        d_model: width ``D`` of the output token.
        spec: ``{"genes": [...], "mutations": [...], "gene_groups": {...}}`` (``docs/formats.md``
            section 3); ``gene_groups`` is not used by this encoder.
        hidden: widths of the hidden SNN blocks (MCAT's "small" SNN uses ``(256, 256)``).
        dropout: alpha-dropout rate of every block.
        l1: strength of the L1 penalty on the blocks' weights (:meth:`penalty`, added to the
            training loss), as MCAT/PORPOISE train their omics SNN (``--reg_type omic``, there
            1e-4); 0 switches it off. The default 3e-3 was chosen on one synthetic cohort with many
            uninformative genes (1e-4 changed nothing in its ~80 optimizer steps, 1e-2 hurt) and
            checked on other draws: ``docs/benchmarks/encoders.md``, "The SNN's L1 penalty". It
            is summed over all weights, so it is large next to a Cox loss (about 27 at
            initialisation for the default widths on 56 inputs); compare runs by ``task_loss``.
    """

    modality = "genomics"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        hidden: tuple[int, ...] = (256, 256),
        dropout: float = 0.1,
        l1: float = 3e-3,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "genes", "mutations")
        self.n_genes = len(spec["genes"])
        self.n_mutations = len(spec["mutations"])
        if self.n_genes + self.n_mutations == 0:
            raise ValueError(f"{type(self).__name__}: the spec lists no genes and no mutations")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"{type(self).__name__}: hidden widths must be >= 1, got {list(hidden)}")
        if not (l1 >= 0 and math.isfinite(l1)):
            raise ValueError(f"{type(self).__name__}: l1 must be >= 0 and finite, got {l1}")
        self.l1 = float(l1)
        widths = [self.n_genes + self.n_mutations, *(int(h) for h in hidden), d_model]
        self.blocks = nn.Sequential(*(snn_block(a, b, dropout) for a, b in zip(widths[:-1], widths[1:])))

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode each patient's profile into one token.

        Args:
            inputs: ``expression``, ``mutations`` and ``present``.

        Returns:
            One token per patient (``N = 1``), masked for absent patients; ``times`` is None.

        Shapes:
            - expression: ``(B, G)`` float; mutations: ``(B, G_mut)`` float; present: ``(B,)`` bool
            - output tokens: ``(B, 1, D)``, mask: ``(B, 1)``
        """
        b = self.require(inputs, "expression", "mutations")
        present = inputs["present"]
        self.check_shape("expression", inputs["expression"], (b, self.n_genes))
        self.check_shape("mutations", inputs["mutations"], (b, self.n_mutations))
        x = torch.cat([inputs["expression"], inputs["mutations"].to(inputs["expression"].dtype)], dim=1)
        x = torch.where(present[:, None], x, torch.zeros_like(x))  # (B, G + G_mut); absent rows never read
        tokens = self.blocks(x)[:, None, :]  # (B, 1, D)
        return ModalityTokens.from_tokens(tokens, present[:, None], present)

    def penalty(self) -> torch.Tensor | None:
        """``l1`` times the sum of the absolute weights of every block (biases are not penalised);
        None when ``l1`` is 0. With many genes and few patients it drives the weights of
        uninformative genes towards 0."""
        if not self.l1:
            return None
        return self.l1 * sum(block[0].weight.abs().sum() for block in self.blocks)

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return GenomicsMLPEncoder.example_spec()

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"hidden": (32, 32)}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """The genomics batch format, identical to :class:`GenomicsMLPEncoder` (a drop-in replacement).

        Example:
            >>> x = GenomicsSNNEncoder.example_inputs()
            >>> x["expression"].shape, x["mutations"].shape
            (torch.Size([3, 12]), torch.Size([3, 4]))
        """
        return GenomicsMLPEncoder.example_inputs(batch_size, seed)
