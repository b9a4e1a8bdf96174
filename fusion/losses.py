"""Survival losses.

The Cox partial likelihood is written here rather than taken from a library because it has to be a
differentiable torch function of a mini-batch (lifelines / scikit-survival fit their own models on
numpy arrays). Tests compare it against lifelines' ``CoxPHFitter`` log-likelihood (Efron) and
scikit-survival's ``CoxPHOptimizer`` (Breslow).
"""

from __future__ import annotations

from typing import Literal

import torch


def cox_ph_loss(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    ties: Literal["breslow", "efron"] = "breslow",
) -> torch.Tensor:
    """Negative Cox partial log-likelihood, averaged over events.

    For a distinct event time ``t`` with event set ``D`` (``d = |D|`` events) and risk set
    ``R = {j : time_j >= t}`` (tied censored samples included), the log-likelihood term is

    - Breslow: ``sum_{i in D} risk_i - d * log S_R``
    - Efron:   ``sum_{i in D} risk_i - sum_{l=0}^{d-1} log(S_R - l/d * S_D)``

    with ``S_A = sum_{j in A} exp(risk_j)``. Both agree when no event times are tied. The loss is
    ``-log_likelihood / n_events``. Fully vectorised (sort + ``logcumsumexp`` + per-tie-group
    ``index_add``), no Python loop over samples or event times. Times are tied when exactly equal.

    Args:
        risk: log-risk scores (higher = earlier event).
        time: observed times (event or censoring).
        event: 1 where the event was observed, 0 where censored.
        ties: ``"breslow"`` (default, the historical behaviour) or ``"efron"`` (lifelines' choice).

    Returns:
        A scalar. When the batch holds no event the loss is ``0 * risk.sum()``: finite, and its
        gradient is zero rather than NaN.

    Raises:
        ValueError: on shapes other than three equal (B,), or an unknown ``ties``.

    Shapes:
        risk, time, event: (B,)
    """
    if not (risk.shape == time.shape == event.shape) or risk.dim() != 1:
        raise ValueError(
            f"cox_ph_loss wants risk, time, event of one shape (B,), got "
            f"{tuple(risk.shape)}, {tuple(time.shape)}, {tuple(event.shape)}"
        )
    if ties not in ("breslow", "efron"):
        raise ValueError(f"cox_ph_loss: ties must be 'breslow' or 'efron', got {ties!r}")
    event = event.to(risk.dtype)
    n_events = event.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    # Sort by descending time: the risk set of sample i is then the prefix [0..i] plus every later
    # sample that shares its time (tied samples all stay in each other's risk set).
    order = torch.argsort(time, descending=True, stable=True)
    r, t, e = risk[order], time[order], event[order]
    log_cum = torch.logcumsumexp(r, dim=0)  # (B,)
    # for tied times use the cumulative sum up to the LAST sample of the tie group
    last_of_group = torch.searchsorted(-t, -t, right=True) - 1  # (B,) indices into sorted order
    log_risk_set = log_cum[last_of_group]  # (B,) log S_R of each sample's tie group
    log_lik = (r - log_risk_set) * e  # Breslow terms
    if ties == "efron":
        first_of_group = torch.searchsorted(-t, -t, right=False)  # (B,)
        group = torch.unique_consecutive(t, return_inverse=True)[1]  # (B,) tie-group id
        n_groups = int(group.max()) + 1
        # S_D / S_R per group, summed term by term so that each term exp(r_i - log S_R) <= 1
        ratio = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add(
            0, group, torch.exp(r - log_risk_set) * e
        )
        d = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add(0, group, e)
        cum_e = torch.cumsum(e, 0)
        rank = cum_e - e - (cum_e[first_of_group] - e[first_of_group])  # l: events before, in group
        # non-events get fraction 0, so log1p never sees -1 on a masked term (no NaN gradients)
        frac = torch.where(e > 0, rank / d[group].clamp_min(1.0), torch.zeros_like(r))
        log_lik = log_lik - torch.log1p(-frac * ratio[group]) * e
    return -log_lik.sum() / n_events
