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


def harrell_c_index(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Harrell's concordance index (scikit-survival); NaN when no pair is comparable.

    Shapes:
        risk, time, event: (B,)
    """
    risk, time, event = (np.asarray(a, dtype=float).ravel() for a in (risk, time, event))
    if event.sum() == 0 or len(np.unique(time)) < 2:
        return float("nan")
    try:
        return float(concordance_index_censored(event.astype(bool), time, risk)[0])
    except NoComparablePairException:  # e.g. the only events are at the largest time (a small val split)
        return float("nan")


def classification_metrics(scores: torch.Tensor, target: torch.Tensor, task: str, n_classes: int = 2) -> dict[str, float]:
    """AUROC and AUPRC (binary) or macro AUROC (multiclass) via torchmetrics.

    Shapes:
        scores: (B,) logits for binary, (B, C) logits for multiclass; target: (B,)
    """
    if task == "binary":
        target = target.long()
        if target.unique().numel() < 2:
            return {"auroc": float("nan"), "auprc": float("nan")}
        probs = torch.sigmoid(scores.float())
        return {
            "auroc": float(binary_auroc(probs, target)),
            "auprc": float(binary_average_precision(probs, target)),
        }
    probs = torch.softmax(scores.float(), dim=-1)
    return {"auroc": float(multiclass_auroc(probs, target.long(), num_classes=n_classes, average="macro"))}
