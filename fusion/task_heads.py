"""Task heads: map the fused patient vector to the outputs of one prediction task."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Task = Literal["binary", "multiclass", "survival"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "survival")


class TaskHead(nn.Module):
    """A linear read-out of the pooled representation for one task.

    Args:
        d_model: width of the fused representation.
        task: ``binary`` (one logit), ``multiclass`` (``n_classes`` logits) or ``survival`` (one
            Cox log-risk).
        n_classes: number of classes for ``multiclass``.
        dropout: dropout on the pooled vector before the read-out.
    """

    def __init__(self, d_model: int, task: Task = "survival", n_classes: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        if task == "multiclass" and n_classes < 2:
            raise ValueError(f"multiclass needs n_classes >= 2, got {n_classes}")
        self.task = task
        out = n_classes if task == "multiclass" else 1
        self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Dropout(dropout), nn.Linear(d_model, out))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Read out logits or risks.

        Shapes:
            pooled: (B, D) -> (B,) for binary/survival, (B, C) for multiclass.
        """
        out = self.net(pooled)
        return out if self.task == "multiclass" else out.squeeze(-1)
