"""Which way is better for a logged metric (checkpoint ``mode``, a sweep's default ``direction``)."""

from __future__ import annotations


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of a logged metric is the better one: a loss (``val/loss``,
    ``val/task_loss``, ``val/step_loss``), the integrated Brier score (``ibs``) or a Brier score.

    Example:
        >>> lower_is_better("val/task_loss"), lower_is_better("val/ibs"), lower_is_better("val/c_index")
        (True, True, False)
    """
    name = str(metric).split("/")[-1]
    return name.endswith("loss") or name.startswith(("ibs", "brier"))
