"""Modality dropout: during training, hide whole modalities of a patient at random."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens


class ModalityDropout(nn.Module):
    """Drop each present modality of each patient independently, never all of them.

    In training mode, modality ``m`` of patient ``i`` is dropped with probability ``p[m]`` (its
    tokens zeroed, mask and ``present`` set False, via :meth:`ModalityTokens.select`). When the
    draws would remove every modality a patient has, one of that patient's present modalities,
    chosen uniformly at random, is kept. A patient who had nothing keeps nothing. In eval mode, or
    when every rate is 0, the inputs are returned unchanged.

    Because of that rescue the realised drop rate of ``m`` is ``p[m] - prod_k p[k] / K`` for a
    patient with ``K`` present modalities, slightly below ``p[m]``.

    Args:
        p: one drop rate for every modality, or ``modality -> rate`` (modalities not named are never
            dropped). Each rate lies in ``[0, 1)``.
        modalities: if given, the modality names a ``p`` dict may use (catches typos).

    Raises:
        ValueError: a rate outside ``[0, 1)`` or a dict key that is not a known modality name.
    """

    def __init__(self, p: float | dict[str, float] = 0.0, modalities: Sequence[str] | None = None) -> None:
        super().__init__()
        rates = dict(p) if isinstance(p, Mapping) else {None: p}
        for name, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
                where = "p" if name is None else f"p[{name!r}]"
                raise ValueError(f"ModalityDropout: {where} must be a number in [0, 1), got {rate!r}")
        if isinstance(p, Mapping):
            bad = [k for k in p if not isinstance(k, str) or not k]
            if bad:
                raise ValueError(f"ModalityDropout: p keys must be modality names (non-empty str), got {bad}")
            if modalities is not None:
                unknown = sorted(set(p) - set(modalities))
                if unknown:
                    raise ValueError(f"ModalityDropout: p names unknown modalities {unknown}; known: {list(modalities)}")
        self.p = {k: float(v) for k, v in p.items()} if isinstance(p, Mapping) else float(p)

    def rate(self, modality: str) -> float:
        """The drop rate of ``modality``."""
        return self.p.get(modality, 0.0) if isinstance(self.p, dict) else self.p

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> dict[str, ModalityTokens]:
        """Drop modalities per patient (training only).

        Args:
            inputs: modality -> tokens of one batch.

        Returns:
            A new dict with the same keys; dropped patients are absent in the dropped modality.

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].present: ``(B,)``
            - the output has the same shapes
        """
        names = list(inputs)
        rates = [self.rate(m) for m in names]
        if self.training and names and isinstance(self.p, dict) and self.p and not set(self.p) & set(names):
            if not getattr(self, "_warned", False):  # once: every batch would say the same
                self._warned = True
                warnings.warn(f"ModalityDropout: p names {sorted(self.p)}, none of which is in the batch "
                              f"({names}): nothing is dropped (pass modalities= to catch a typo early)", stacklevel=2)
        if not self.training or not names or all(r == 0.0 for r in rates):
            return dict(inputs)
        device = inputs[names[0]].present.device
        present = torch.stack([inputs[m].present for m in names], dim=1)  # (B, M)
        p = torch.tensor(rates, device=device)  # (M,)
        drop = (torch.rand(present.shape, device=device) < p) & present  # (B, M)
        lost_all = present.any(1) & ~(present & ~drop).any(1)  # (B,)
        if bool(lost_all.any()):
            # keep one present modality, uniformly at random, for every patient who lost them all
            score = torch.rand(present.shape, device=device).masked_fill(~present, -1.0)  # (B, M)
            rescue = torch.zeros_like(drop).scatter_(1, score.argmax(1, keepdim=True), True)  # (B, M)
            drop = drop & ~(rescue & lost_all[:, None])
        return {m: inputs[m].select(~drop[:, j]) for j, m in enumerate(names)}
