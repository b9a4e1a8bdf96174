"""Evaluation metrics, computed by well-kept libraries (scikit-survival, torchmetrics)."""

from __future__ import annotations

import numpy as np
import torch
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import concordance_index_censored
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multiclass_auroc,
)

TASKS = ("binary", "multiclass")


def harrell_c_index(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Harrell's concordance index (scikit-survival); NaN when no pair is comparable.

    NaN (not an error) when there is no event, fewer than two distinct times or no comparable pair:
    small validation splits during training hit these, and the metric is then simply undefined.

    Shapes:
        risk, time, event: (B,)

    Raises:
        ValueError: naming the argument and the first bad index: ``time`` not finite and > 0,
            ``event`` not 0/1 (or bool), ``risk`` not 1-D, not finite or of another length.
    """
    # imported here: survival_metrics imports this module. Time must be > 0 as everywhere else:
    # every caller's times come from labels checked > 0 (datasets.cohort.read_labels,
    # meds_labels, the synthetic cohort's floor of 1e-3 days), so no caller passes 0 legitimately.
    from clinfuse.experiments.survival_metrics import _check_scores, validate_survival

    time, event = validate_survival(time, event)
    risk = _check_scores(risk, len(time), "risk")
    if not event.any() or len(np.unique(time)) < 2:
        return float("nan")
    try:
        return float(concordance_index_censored(event, time, risk)[0])
    except NoComparablePairException:  # e.g. the only events are at the largest time (a small val split)
        return float("nan")


def _as_tensor(a, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a numeric array or tensor: {err}") from None


def _first_bad_row(bad: torch.Tensor) -> int:
    return int(torch.nonzero(bad.reshape(bad.shape[0], -1).any(dim=1))[0, 0])


def classification_metrics(scores, target, task: str, n_classes: int = 2) -> dict[str, float]:
    """AUROC and AUPRC (binary) or macro AUROC (multiclass) via torchmetrics.

    Args:
        scores: logits, a torch tensor or anything ``numpy.asarray`` accepts (e.g. a numpy array).
        target: class labels, tensor or array: 0/1 for binary, integers in ``[0, n_classes)``.
        task: ``"binary"`` or ``"multiclass"``.
        n_classes: number of classes (multiclass).

    Shapes:
        scores: (B,) logits for binary, (B, C) logits for multiclass; target: (B,)

    Returns:
        ``{"auroc", "auprc"}`` (binary; both NaN when ``target`` has one class) or ``{"auroc"}``.

    Raises:
        ValueError: an unknown ``task``; ``scores`` / ``target`` of the wrong shape, not finite, or
            labels outside the task's classes (naming the argument and the first bad index).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    scores, target = _as_tensor(scores, "scores"), _as_tensor(target, "target")
    if target.ndim != 1:
        raise ValueError(f"target must be 1-D, got shape {tuple(target.shape)}")
    n = target.shape[0]
    want = (n,) if task == "binary" else (n, n_classes)
    if tuple(scores.shape) != want:
        raise ValueError(f"scores must have shape {want} for task {task!r} (target has {n} rows), "
                         f"got {tuple(scores.shape)}")
    scores, target_f = scores.double(), target.double()
    bad = ~torch.isfinite(scores)
    if bad.any():
        raise ValueError(f"scores must be finite; first bad index {_first_bad_row(bad)}")
    labels = (0, 1) if task == "binary" else tuple(range(n_classes))
    bad = ~torch.isin(target_f, torch.tensor(labels, dtype=torch.double))
    if bad.any():
        i = _first_bad_row(bad)
        raise ValueError(f"target must hold labels in {{0..{labels[-1]}}} for task {task!r}; first bad index {i} "
                         f"(value {target[i].item()})")
    target = target_f.long()
    if task == "binary":
        if target.unique().numel() < 2:
            return {"auroc": float("nan"), "auprc": float("nan")}
        probs = torch.sigmoid(scores.float())
        return {
            "auroc": float(binary_auroc(probs, target)),
            "auprc": float(binary_average_precision(probs, target)),
        }
    probs = torch.softmax(scores.float(), dim=-1)
    return {"auroc": float(multiclass_auroc(probs, target, num_classes=n_classes, average="macro"))}
