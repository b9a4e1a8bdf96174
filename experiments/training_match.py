"""Does a data module hold the data a checkpoint was trained on? (``Prognosis.from_training``,
``clinfuse test/validate/predict/fit --ckpt_path``)

The Breslow baseline of a Cox model is fitted on the training split's predicted risks, so building
a predictor with another cohort, other modalities or other splits than the checkpoint's gives
silently wrong survival curves. The checkpoint stores its modality spec (hyperparameters) and its
data module's fitted preprocessing (means, vocabularies, ...), which are compared here with the
data module's own. Keys that exist on one side only are skipped: a checkpoint saved by an older
version lacks statistics added since.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


FIX = "pass the ClinicalDataModule the checkpoint was trained with (same root, modalities, splits and reader settings)"


def check_training_data(checkpoint: str | Path, spec: Mapping[str, Any], saved: Mapping[str, Any] | None,
                        datamodule: Any, fix: str = FIX) -> None:
    """Raise unless ``datamodule`` looks like the data module ``checkpoint`` was trained with.

    Args:
        checkpoint: the checkpoint path (for messages).
        spec: the model's modality spec (its ``spec`` hyperparameter).
        saved: the checkpoint's saved data-module preprocessing state (None: not saved, not compared).
        datamodule: a ``ClinicalDataModule``.
        fix: what the error messages tell the user to do.

    Raises:
        TypeError: ``datamodule`` is not a data module (e.g. a path string).
        ValueError: other modalities, another spec, or other fitted statistics than the checkpoint's,
            naming the modality and the field.
    """
    if not hasattr(datamodule, "preprocessing_state") or not hasattr(datamodule, "spec"):
        raise TypeError(f"datamodule must be the ClinicalDataModule the checkpoint was trained with, "
                        f"got {type(datamodule).__name__} {datamodule!r:.80}")
    data_spec = datamodule.spec
    if set(spec) != set(data_spec):
        raise ValueError(f"checkpoint {checkpoint} was trained on modalities {sorted(spec)}, the datamodule loads "
                         f"{sorted(data_spec)}: {fix}")
    for m in spec:
        field = _first_difference(spec[m], data_spec[m])
        if field is not None:
            raise ValueError(f"checkpoint {checkpoint}: modality {m!r} has another spec in the datamodule "
                             f"(field {field!r}): {fix}")
    if not saved:
        return
    ours = datamodule.preprocessing_state().get("modalities", {})
    for m, theirs in (saved.get("modalities") or {}).items():
        if m not in ours:
            continue
        for part in ("config", "fitted"):
            field = _first_difference(theirs.get(part) or {}, ours[m].get(part) or {})
            if field is not None:
                what = "reader setting" if part == "config" else "training statistic"
                raise ValueError(f"checkpoint {checkpoint}: the datamodule's {m!r} {what} {field!r} differs from the "
                                 f"one the model was trained with (another cohort or split?): {fix}")


def check_checkpoint_data(checkpoint: str | Path, datamodule: Any, fix: str = FIX,
                          ckpt: Mapping[str, Any] | None = None) -> None:
    """:func:`check_training_data` for a checkpoint file: its saved spec and data-module state
    against ``datamodule`` (a checkpoint without them, e.g. not written by ``clinfuse fit``, passes).
    ``ckpt``: the checkpoint already loaded (else it is read from ``checkpoint``).

    Raises:
        ValueError: as :func:`check_training_data`.
    """
    if ckpt is None:
        import torch

        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    spec = (ckpt.get("hyper_parameters") or {}).get("spec")
    if spec is None:
        return
    saved = ckpt.get(type(datamodule).__qualname__) or {}
    check_training_data(checkpoint, spec, saved.get("preprocessing"), datamodule, fix)


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first key path where ``a`` and ``b`` differ (numbers to 1e-6 relative), keys present in
    both mappings only; None when they agree."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in a:
            if k in b:
                found = _first_difference(a[k], b[k], f"{path}.{k}" if path else str(k))
                if found is not None:
                    return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return path or "."
        try:
            x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        except (TypeError, ValueError):
            return next((path or "." for u, v in zip(a, b) if _first_difference(u, v) is not None), None)
        return None if np.allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True) else (path or ".")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return None if np.isclose(float(a), float(b), rtol=1e-6, atol=1e-9, equal_nan=True) else (path or ".")
    return None if a == b else (path or ".")
