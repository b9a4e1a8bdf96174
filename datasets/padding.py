"""Zero-padding of per-patient arrays into batch tensors: the one helper every reader's collate uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def present_mask(items: Sequence[object | None]) -> torch.Tensor:
    """``present (B,)`` bool: True where the patient's item is not ``None``."""
    return torch.tensor([item is not None for item in items], dtype=torch.bool)


def pad_stack(
    arrays: Sequence[np.ndarray | None],
    shape: Sequence[int | None],
    dtype: type | np.dtype,
    name: str = "array",
) -> torch.Tensor:
    """Stack per-patient arrays into one zero-padded tensor.

    An axis given as an ``int`` in ``shape`` is fixed (every array must match it); an axis given
    as ``None`` varies and is padded to the batch maximum, at least 1 so that a batch of absent
    patients still has a well-formed (all-padding) tensor. ``None`` arrays (absent patients) become
    all zeros (all False for bool).

    Args:
        arrays: one array per patient, or ``None``.
        shape: the per-patient shape, ``None`` for variable axes.
        dtype: the numpy dtype of the output.
        name: used in error messages.

    Returns:
        The padded tensor.

    Shapes:
        arrays[i]: ``shape`` with variable axes of any length; returns ``(B, *padded_shape)``.

    Raises:
        ValueError: an array has the wrong number of axes or a wrong fixed axis length.
    """
    dims = []
    for axis, fixed in enumerate(shape):
        if fixed is not None:
            dims.append(int(fixed))
        else:
            lengths = [a.shape[axis] for a in arrays if a is not None and a.ndim == len(shape)]
            dims.append(max([1, *lengths]))
    out = np.zeros((len(arrays), *dims), dtype=dtype)
    for i, a in enumerate(arrays):
        if a is None:
            continue
        if a.ndim != len(shape) or any(f is not None and a.shape[k] != f for k, f in enumerate(shape)):
            raise ValueError(f"{name}: item {i} has shape {tuple(a.shape)}, expected {tuple(shape)}")
        out[(i, *(slice(0, n) for n in a.shape))] = a
    return torch.from_numpy(out)


def pick(items: Sequence[dict[str, np.ndarray] | None], key: str) -> list[np.ndarray | None]:
    """``items[i][key]`` for every present item, ``None`` for absent ones."""
    return [None if item is None else item[key] for item in items]
