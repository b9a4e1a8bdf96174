"""Fusion heads: combine whatever modality tokens a patient has into one vector.

A head takes ``dict[str, ModalityTokens]`` and returns a :class:`FusionOutput`. It never computes
the task loss (that lives in the LightningModule). Rules every head obeys (checked by
``tests/test_conformance.py`` for every registered head):

1. an absent modality may be omitted from the dict or passed with ``present=False``: same output;
2. dict order never matters;
3. padding content is ignored;
4. a patient with no data at all still gets a finite output;
5. every parameter gets a gradient; sample i's output does not depend on sample j.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens


def masked_token_mean(toks: ModalityTokens) -> torch.Tensor:
    """Mean of the real tokens of each patient; zero for an absent patient.

    Shapes:
        - toks.tokens: ``(B, N, D)``, toks.mask: ``(B, N)``
        - returns: ``(B, D)``
    """
    mask = toks.mask & toks.present[:, None]  # (B, N)
    x = torch.where(mask[..., None], toks.tokens, torch.zeros_like(toks.tokens))  # (B, N, D)
    count = mask.sum(1, keepdim=True).clamp(min=1).to(x.dtype)  # (B, 1)
    return x.sum(1) / count  # (B, D)


@dataclass
class FusionOutput:
    """What a fusion head returns.

    Attributes:
        pooled: ``(B, D)`` the fused patient representation.
        per_modality: optional ``modality -> (B, D)`` representation of each modality alone
            (zero for absent patients), for late fusion and contributions.
        per_step: optional list of ``(B, D)`` states after each step of a sequential head.
        aux_loss: optional scalar the head wants added to the task loss (e.g. a completion loss).
    """

    pooled: torch.Tensor
    per_modality: dict[str, torch.Tensor] | None = None
    per_step: list[torch.Tensor] | None = None
    aux_loss: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class FusionHead(nn.Module):
    """Base class of every fusion head.

    Args:
        d_model: width ``D`` of the incoming tokens and of ``FusionOutput.pooled``.
        modalities: the modality names this head accepts, in a canonical order (the order is
            used only where a head needs one, e.g. sequential heads; dict order never matters).
    """

    def __init__(self, d_model: int, modalities: Sequence[str]) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, numbers.Integral) or d_model <= 0:
            raise ValueError(f"d_model must be a positive integer, got {d_model!r}")
        if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
            raise TypeError(f"modalities must be a list of modality names, got {modalities!r}")
        if len(modalities) == 0:
            raise ValueError("a fusion head needs at least one modality")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"duplicate modality names: {list(modalities)}")
        self.d_model = d_model
        self.modalities = list(modalities)

    def check_inputs(self, inputs: Mapping[str, ModalityTokens]) -> int:
        """Validate the dict against this head; return the batch size.

        Raises:
            ValueError: an unknown modality, an empty dict, a batch-size or width mismatch.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError(f"{type(self).__name__}: inputs must be a dict modality -> ModalityTokens, got {type(inputs).__name__}")
        if not inputs:
            raise ValueError(f"{type(self).__name__}: got no modalities (expected some of {self.modalities})")
        wrong = sorted(m for m, t in inputs.items() if not isinstance(t, ModalityTokens))
        if wrong:
            raise TypeError(f"{type(self).__name__}: inputs {wrong} must be ModalityTokens (an encoder's output, or "
                            f"ModalityTokens.from_tokens(tokens, mask)), got {type(inputs[wrong[0]]).__name__}")
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown modalities {unknown}; this head was built for {self.modalities}")
        sizes = {name: tuple(t.tokens.shape) for name, t in inputs.items()}
        batch = {s[0] for s in sizes.values()}
        if len(batch) != 1:
            raise ValueError(f"{type(self).__name__}: modalities disagree on batch size: {sizes}")
        for name, toks in inputs.items():
            if toks.tokens.shape[2] != self.d_model:
                raise ValueError(
                    f"{type(self).__name__}: modality {name!r} has tokens of shape {sizes[name]}, "
                    f"expected width D={self.d_model}"
                )
        return batch.pop()

    def check_order(self, order: Sequence[str] | None) -> list[str]:
        """A step order for sequential heads: ``modalities`` when None, else a validated permutation.

        Raises:
            ValueError: naming the unknown, missing and repeated modalities.
        """
        if order is None:
            return list(self.modalities)
        order = list(order)
        unknown = sorted(set(order) - set(self.modalities))
        missing = [m for m in self.modalities if m not in order]
        repeated = sorted({m for m in order if order.count(m) > 1})
        if unknown or missing or repeated:
            raise ValueError(
                f"{type(self).__name__}: order must be a permutation of modalities {self.modalities}; "
                f"got {order} (unknown: {unknown}, missing: {missing}, repeated: {repeated})"
            )
        return order

    def ordered(self, inputs: Mapping[str, ModalityTokens]) -> list[tuple[str, ModalityTokens]]:
        """The given modalities in this head's canonical order (so dict order never matters)."""
        return [(m, inputs[m]) for m in self.modalities if m in inputs]

    def modality_means(self, inputs: Mapping[str, ModalityTokens]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's masked token mean, in canonical order, with presence.

        Omitted modalities count as absent (zero mean, presence False), so omitting a modality and
        passing it with ``present=False`` give the same result.

        Shapes:
            returns means ``(B, M, D)`` (zero where absent) and present ``(B, M)`` bool.
        """
        b = self.check_inputs(inputs)
        ref = self.reference(inputs)
        means, present = [], []
        for m in self.modalities:
            toks = inputs.get(m)
            if toks is None:
                means.append(ref.new_zeros(b, self.d_model))
                present.append(torch.zeros(b, dtype=torch.bool, device=ref.device))
                continue
            means.append(masked_token_mean(toks))  # (B, D)
            present.append(toks.present)
        return torch.stack(means, dim=1), torch.stack(present, dim=1)  # (B, M, D), (B, M)

    def reference(self, inputs: Mapping[str, ModalityTokens]) -> torch.Tensor:
        """Any tokens tensor of the batch, for device/dtype/batch-size lookups."""
        return next(iter(inputs.values())).tokens

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:  # pragma: no cover
        raise NotImplementedError

    def pooled_output(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """The output for callers that read ``pooled`` (and ``per_step``) only, e.g. prediction.

        Default: :meth:`forward`. A head may override it to skip work (``per_modality``) when that
        saves time; ``pooled`` must stay the same.
        """
        return self(inputs)
