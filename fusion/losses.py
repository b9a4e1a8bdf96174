"""Survival losses.

The Cox partial likelihood is written here rather than taken from a library because it has to be a
differentiable torch function of a mini-batch (lifelines / scikit-survival fit their own models on
numpy arrays). Tests compare it against lifelines' ``CoxPHFitter`` log-likelihood.
"""

from __future__ import annotations

import torch


def cox_ph_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood with Breslow's handling of ties, averaged over events.

    Args:
        risk: log-risk scores (higher = earlier event).
        time: observed times (event or censoring).
        event: 1 where the event was observed, 0 where censored.

    Returns:
        A scalar. When the batch holds no event the loss is ``0 * risk.sum()``: finite, and its
        gradient is zero rather than NaN.

    Shapes:
        risk, time, event: (B,)
    """
    if not (risk.shape == time.shape == event.shape) or risk.dim() != 1:
        raise ValueError(
            f"cox_ph_loss wants risk, time, event of one shape (B,), got "
            f"{tuple(risk.shape)}, {tuple(time.shape)}, {tuple(event.shape)}"
        )
    event = event.to(risk.dtype)
    n_events = event.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    # Sort by descending time: the risk set of sample i is then the prefix [0..i] plus every later
    # sample that shares its time (Breslow: tied samples all stay in each other's risk set).
    order = torch.argsort(time, descending=True, stable=True)
    r, t, e = risk[order], time[order], event[order]
    log_cum = torch.logcumsumexp(r, dim=0)  # (B,)
    # for tied times use the cumulative sum up to the LAST sample of the tie group
    last_of_group = torch.searchsorted(-t, -t, right=True) - 1  # (B,) indices into sorted order
    log_risk_set = log_cum[last_of_group]
    return -((r - log_risk_set) * e).sum() / n_events
