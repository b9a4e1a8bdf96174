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

from collections.abc import Mapping
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
        tokens = torch.where(mask[..., None], tokens, torch.zeros_like(tokens))  # (B, N, D); NaN * 0 would stay NaN
        if times is not None:
            times = times.masked_fill(~mask, 0.0)
        return cls(tokens=tokens, mask=mask, present=mask.any(1), times=times)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def d_model(self) -> int:
        return self.tokens.shape[2]

    def float(self) -> "ModalityTokens":
        """The same tokens with half-precision values upcast to float32 (:func:`upcast_half`;
        ``self`` when there is nothing to upcast), e.g. after an encoder ran under bfloat16 autocast."""
        tokens = upcast_half(self.tokens)
        return self if tokens is self.tokens else ModalityTokens(tokens, self.mask, self.present, self.times)

    def select(self, rows: torch.Tensor) -> "ModalityTokens":
        """Keep only the patients where ``rows`` (``(B,)`` bool) is True; others become absent."""
        keep = rows.bool() & self.present
        return ModalityTokens.from_tokens(self.tokens, self.mask, keep, self.times)


def upcast_half(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 when it is bfloat16 or float16 (what matrix products return under
    autocast), unchanged otherwise: for sums over many patches, words or events, which lose digits
    in an 8- or 11-bit mantissa."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def check_finite_tokens(tokens: Mapping[str, ModalityTokens]) -> None:
    """Raise ``ValueError`` naming the modality and batch rows whose real tokens are NaN or infinite.

    Readers and the prediction API refuse non-finite inputs, so such tokens come from a hand-built
    batch with NaN at unmasked positions or from diverged weights; either way the fusion head
    would spread the NaN to the patient's prediction and the loss. One device-to-host sync per call.
    """
    bad = {m: (~torch.isfinite(t.tokens).all(-1) & t.mask).any(1) for m, t in tokens.items()}  # (B,) each
    if not bad or not bool(torch.stack([rows.any() for rows in bad.values()]).any()):
        return
    for m, rows in bad.items():
        if rows.any():
            where = rows.nonzero().flatten().tolist()
            raise ValueError(
                f"the {m} encoder returned NaN/infinite tokens for batch rows {where[:10]}"
                f"{' ...' if len(where) > 10 else ''}: its inputs hold NaN or infinite values at real "
                "(unmasked) positions, or the weights have diverged (try a lower model.lr)"
            )


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


class ModalityEncoder(nn.Module):
    """Base class of all encoders: ``forward(inputs) -> ModalityTokens``.

    Subclasses take ``d_model`` as their first constructor argument, store only typed arguments
    (no I/O in ``__init__``) and provide :meth:`example_inputs`, a tiny batch in the exact input
    format the encoder reads (living documentation, used by the conformance suite), with the
    matching :meth:`example_spec`. The shapes of ``example_inputs`` depend on ``batch_size`` only,
    never on ``seed``.

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
    def example_spec(cls) -> dict[str, Any]:
        """The modality spec (``docs/formats.md`` section 3) that matches :meth:`example_inputs`."""
        raise NotImplementedError(f"{cls.__name__} must define example_spec")

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        """Constructor arguments (besides ``d_model``) that match :meth:`example_inputs`."""
        return {}

    def penalty(self) -> torch.Tensor | None:
        """A regularisation term this encoder adds to the training objective (a scalar >= 0 that
        depends on its parameters only, e.g. the genomics SNN's L1 on its weights), or None.

        The LightningModule adds every encoder's penalty to ``loss`` (``task_loss`` stays the task
        loss alone) and logs the sum as ``penalty``.
        """
        return None

    def require(self, inputs: Mapping[str, torch.Tensor], *keys: str) -> int:
        """Check that ``inputs`` holds ``present`` and ``keys``; return the batch size ``B``.

        Raises:
            ValueError: a key is missing or ``present`` is not a ``(B,)`` bool tensor.
        """
        missing = [k for k in ("present", *keys) if k not in inputs]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: {self.modality} inputs lack keys {missing}; "
                f"got {sorted(inputs)} (see docs/formats.md section 2)"
            )
        present = inputs["present"]
        if present.dim() != 1 or present.dtype != torch.bool:
            raise ValueError(
                f"{type(self).__name__}: {self.modality} 'present' must be a (B,) bool tensor, "
                f"got {_shape(present)} {present.dtype}"
            )
        return present.shape[0]

    def check_shape(self, key: str, tensor: torch.Tensor, expected: tuple[int | None, ...]) -> None:
        """Raise ``ValueError`` naming ``key`` when ``tensor`` does not have shape ``expected``.

        ``None`` in ``expected`` matches any size.
        """
        ok = tensor.dim() == len(expected) and all(
            e is None or e == s for e, s in zip(expected, tensor.shape)
        )
        if not ok:
            dims = ["*" if e is None else str(e) for e in expected]
            want = f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"
            raise ValueError(
                f"{type(self).__name__}: {self.modality} input {key!r} must have shape {want}, "
                f"got {tuple(tensor.shape)}"
            )

    def check_indices(self, key: str, ids: torch.Tensor, valid: torch.Tensor, high: int) -> None:
        """Raise ``ValueError`` naming ``key`` when an id at a ``valid`` position is outside ``[0, high)``."""
        bad = valid & ((ids < 0) | (ids >= high))
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{type(self).__name__}: {self.modality} input {key!r} holds {int(ids[where])} at "
                f"index {where}, outside [0, {high}) given by the spec"
            )

    @classmethod
    def require_spec(cls, spec: Mapping[str, Any], *keys: str) -> None:
        """Raise ``ValueError`` when the modality spec lacks one of ``keys``."""
        if not isinstance(spec, Mapping):
            raise TypeError(f"{cls.__name__}: spec must be a dict, got {type(spec).__name__}")
        missing = [k for k in keys if k not in spec]
        if missing:
            raise ValueError(
                f"{cls.__name__}: {cls.modality} spec lacks keys {missing}; got {sorted(spec)} "
                "(see docs/formats.md section 3)"
            )
