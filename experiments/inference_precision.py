"""Arithmetic precision of prediction: float32 throughout, or bfloat16 matrix products.

``"32-true"`` (the default) runs every operation in float32. ``"bf16-mixed"`` runs the model's
encoders and fusion under ``torch.autocast`` with bfloat16, Lightning's name for the same thing:
matrix products and convolutions in bfloat16, normalisations and the outputs read by the
prediction API (task-head outputs, risks, survival curves) in float32. On CPUs with AMX or
AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) bfloat16 matrix products are
several times faster; elsewhere they are emulated and slower, which :func:`check_precision` warns
about. Risk scores then differ from float32's by a few thousandths (``docs/benchmarks/prognosis.md``
has the measured differences), so it is an opt-in for serving, never a training setting.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

#: the precisions :class:`~clinfuse.experiments.prognosis.Prognosis` predicts in
PRECISIONS = ("32-true", "bf16-mixed")


def native_bf16_cpu() -> bool | None:
    """Whether this CPU computes bfloat16 matrix products natively (AMX tiles or AVX512-BF16);
    None where this torch build cannot tell."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    checks = [c for c in checks if c is not None]
    if not checks:
        return None
    return any(bool(c()) for c in checks)


def check_precision(precision: object, warn: bool = True) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ValueError naming the choices.

    With ``warn``, ``"bf16-mixed"`` on a CPU without native bfloat16 arithmetic warns that it will
    be slower than float32 there.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if warn and precision == "bf16-mixed" and native_bf16_cpu() is False:
        warnings.warn("precision 'bf16-mixed': this CPU has neither AMX nor AVX512-BF16, so bfloat16 matrix "
                      "products are emulated and prediction will be slower than with '32-true'", stacklevel=3)
    return str(precision)


def precision_context(precision: str, device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """The context to run the model's forward pass in: autocast to bfloat16 for ``"bf16-mixed"``,
    nothing for ``"32-true"``."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
