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
        n_outputs: survival only: outputs per patient; 1 (default) = a Cox log-risk ``(B,)``, more =
            discrete-time logits ``(B, n_outputs)`` (see ``SurvivalObjective.n_outputs``).
    """

    def __init__(
        self, d_model: int, task: Task = "survival", n_classes: int = 2, dropout: float = 0.1, n_outputs: int = 1
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        if task == "multiclass" and n_classes < 2:
            raise ValueError(f"multiclass needs n_classes >= 2, got {n_classes}")
        if n_outputs < 1 or (n_outputs > 1 and task != "survival"):
            raise ValueError(f"n_outputs must be 1, or > 1 for the survival task only; got {n_outputs} for {task!r}")
        self.task = task
        self.vector = task == "multiclass" or n_outputs > 1
        out = n_classes if task == "multiclass" else n_outputs
        self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Dropout(dropout), nn.Linear(d_model, out))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Read out logits or risks.

        Shapes:
            pooled: (B, D) -> (B,) for binary / Cox survival, (B, C) for multiclass, (B, K) for
            discrete-time survival.
        """
        out = self.net(pooled)
        return out if self.vector else out.squeeze(-1)
