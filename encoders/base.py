"""The token contract between encoders and fusion heads.

Every encoder turns one modality's batch inputs into a :class:`ModalityTokens`; every fusion head
consumes a ``dict[str, ModalityTokens]``. The shape alphabet used in all ``Shapes:`` sections:

- ``B``: batch (patients)
- ``M``: modalities
- ``N``: tokens of one modality
- ``D``: model width (``d_model``)
- ``T``: time steps / observations
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class ModalityTokens:
    """Tokens one encoder emits for one modality.

    Attributes:
        tokens: ``(B, N, D)`` float, exactly zero where ``mask`` is False.
        mask: ``(B, N)`` bool, True marks a real token (one convention everywhere).
        present: ``(B,)`` bool, False when the patient has no data for this modality;
            always equal to ``mask.any(1)``.
        times: ``(B, N)`` float hours from the index time, or None for untimed tokens.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    present: torch.Tensor
    times: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self, name: str = "tokens") -> None:
        """Raise ``ValueError`` naming the bad shape or value when the contract is broken."""
        t, m, p = self.tokens, self.mask, self.present
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name}: tokens must be a (B, N, D) tensor, got shape {_shape(t)}")
        b, n, _ = t.shape
        if not t.is_floating_point():
            raise ValueError(f"{name}: tokens must be floating point, got {t.dtype}")
        if not isinstance(m, torch.Tensor) or m.shape != (b, n) or m.dtype != torch.bool:
            raise ValueError(
                f"{name}: mask must be a bool tensor of shape (B, N)=({b}, {n}), "
                f"got {_shape(m)} {getattr(m, 'dtype', None)}"
            )
        if not isinstance(p, torch.Tensor) or p.shape != (b,) or p.dtype != torch.bool:
            raise ValueError(
                f"{name}: present must be a bool tensor of shape (B,)=({b},), "
                f"got {_shape(p)} {getattr(p, 'dtype', None)}"
            )
        if self.times is not None and (
            not isinstance(self.times, torch.Tensor) or self.times.shape != (b, n)
        ):
            raise ValueError(f"{name}: times must have shape (B, N)=({b}, {n}), got {_shape(self.times)}")
        if not torch.equal(p, m.any(1)):
            raise ValueError(f"{name}: present must equal mask.any(1) for every patient")

    # ------------------------------------------------------------------ helpers
    @classmethod
    def from_tokens(
        cls,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        present: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
    ) -> "ModalityTokens":
        """Build tokens that obey the contract: masked positions zeroed, ``present`` derived.

        ``present`` (when given) additionally masks out every token of absent patients, so an
        encoder never has to special-case a patient without data.
        """
        mask = mask.bool()
        if present is not None:
            mask = mask & present.bool()[:, None]
        tokens = tokens * mask[..., None].to(tokens.dtype)  # (B, N, D)
        if times is not None:
            times = times.masked_fill(~mask, 0.0)
        return cls(tokens=tokens, mask=mask, present=mask.any(1), times=times)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def d_model(self) -> int:
        return self.tokens.shape[2]

    def select(self, rows: torch.Tensor) -> "ModalityTokens":
        """Keep only the patients where ``rows`` (``(B,)`` bool) is True; others become absent."""
        keep = rows.bool() & self.present
        return ModalityTokens.from_tokens(self.tokens, self.mask, keep, self.times)


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


class ModalityEncoder(nn.Module):
    """Base class of all encoders: ``forward(inputs) -> ModalityTokens``.

    Subclasses take ``d_model`` as their first constructor argument, store only typed arguments
    (no I/O in ``__init__``) and provide :meth:`example_inputs`, a tiny batch in the exact input
    format the encoder reads (living documentation, used by the conformance suite).

    Every input dict carries ``present`` ``(B,)`` bool; a patient with ``present=False`` gets
    ``mask`` all False and zero tokens, whatever else its padded inputs contain.
    """

    #: the modality this encoder reads by default (``tabular``, ``timeseries``, ``ecg``, ...)
    modality: str = ""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        if d_model <= 0:
            raise ValueError(f"d_model must be positive, got {d_model}")
        self.d_model = d_model

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """A tiny seeded input batch; the last patient has ``present=False``."""
        raise NotImplementedError(f"{cls.__name__} must define example_inputs")

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        """Constructor arguments (besides ``d_model``) that match :meth:`example_inputs`."""
        return {}
