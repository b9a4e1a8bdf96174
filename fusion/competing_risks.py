"""Discrete-time competing risks: the cause-specific PMF likelihood, DeepHit's competing-risks loss
and cumulative incidence functions.

Conventions (those of :mod:`clinfuse.fusion.discrete_time`, with ``R`` causes):

- ``K`` bins; ``bin`` in ``[0, K)``; ``cause`` 0 = censored, ``1..R`` = the event's cause.
- ``logits`` (B, R * K + 1): one softmax over the ``R * K`` (cause, bin) cells plus a last column
  for "no event of any cause by the end of the last bin"; cell (cause ``r``, bin ``k``) is column
  ``(r - 1) * K + k``. The extra column gives a sample censored in the last bin a non-zero
  likelihood, as in the single-risk PMF.
- An event of cause ``r`` in bin ``k`` has likelihood ``p_{r,k}``. A sample censored in bin ``k``
  survived THROUGH bin ``k`` (as in the single-risk losses): likelihood ``sum_{r, j > k} p_{r,j} +
  p_beyond``.
- Cumulative incidence at the end of bin ``k``: ``CIF_r(k) = sum_{j <= k} p_{r,j}``; all-cause
  survival ``S_k = 1 - sum_r CIF_r(k)``.

With ``R = 1`` every function here equals its single-risk counterpart (``pmf_nll``,
``deephit_loss``), which the tests check. DeepHit: Lee et al., AAAI 2018 ("DeepHit: a deep
learning approach to survival analysis with competing risks"), one shared softmax over causes and
times, as there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clinfuse.fusion.discrete_time import log_unseen_share


def _check(name: str, logits: torch.Tensor, bin: torch.Tensor, cause: torch.Tensor, n_causes: int) -> int:
    """Validate shapes and label ranges; returns ``K``."""
    if n_causes < 1:
        raise ValueError(f"{name}: n_causes must be >= 1, got {n_causes}")
    if logits.dim() != 2 or (logits.shape[1] - 1) % n_causes or logits.shape[1] < n_causes + 1:
        raise ValueError(f"{name}: logits must be (B, R * K + 1) with R = {n_causes}; got {tuple(logits.shape)}")
    k = (logits.shape[1] - 1) // n_causes
    b = logits.shape[0]
    if bin.shape != (b,) or cause.shape != (b,):
        raise ValueError(f"{name}: bin and cause must be ({b},); got {tuple(bin.shape)} and {tuple(cause.shape)}")
    if b and (bin.min() < 0 or bin.max() >= k):
        raise ValueError(f"{name}: bins must lie in [0, {k}); got {bin.min().item()}..{bin.max().item()}")
    c = cause.long()
    if b and ((c != cause).any() or c.min() < 0 or c.max() > n_causes):
        raise ValueError(f"{name}: causes must be integers in [0, {n_causes}] (0 = censored)")
    return k


def _log_terms(logits: torch.Tensor, bin: torch.Tensor, cause: torch.Tensor, n_causes: int, k: int,
               censored_share: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample log-likelihood, shape (B,); a censored sample with ``censored_share`` ``s`` also
    keeps the unseen share ``1 - s`` of its own bin's cells (``discrete_time``'s docstring)."""
    logp = F.log_softmax(logits, dim=1)  # (B, R*K + 1)
    b = bin.long()
    c = cause.long()
    event_col = ((c - 1).clamp_min(0) * k + b)[:, None]  # (B, 1) the (cause, bin) cell of an event
    log_event = logp.gather(1, event_col)[:, 0]
    cell_bin = torch.arange(k, device=logits.device).repeat(n_causes)  # (R*K,) bin of every cell
    later = torch.cat([cell_bin[None, :] > b[:, None], torch.ones_like(b[:, None], dtype=torch.bool)], dim=1)
    kept = logp.masked_fill(~later, float("-inf"))
    log_rest = log_unseen_share(censored_share, logits)
    if log_rest is not None:
        own = torch.cat([cell_bin[None, :] == b[:, None], torch.zeros_like(b[:, None], dtype=torch.bool)], dim=1)
        kept = torch.where(own, logp + log_rest[:, None], kept)
    log_censored = torch.logsumexp(kept, dim=1)  # bins after k + beyond (+ the unseen share of bin k)
    return torch.where(c > 0, log_event, log_censored)


def cr_pmf_nll(logits: torch.Tensor, bin: torch.Tensor, cause: torch.Tensor, n_causes: int,
               censored_share: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood of the cause-specific PMF (module docstring).

    Shapes:
        logits: (B, R * K + 1), bin: (B,) long in ``[0, K)``, cause: (B,) in ``[0, R]``,
        censored_share: (B,) or None -> scalar
    """
    k = _check("cr_pmf_nll", logits, bin, cause, n_causes)
    return -_log_terms(logits, bin, cause, n_causes, k, censored_share).mean()


def cumulative_incidence(logits: torch.Tensor, n_causes: int) -> torch.Tensor:
    """``CIF_r`` at the end of each bin.

    Shapes:
        logits: (B, R * K + 1) -> (B, R, K), non-decreasing along K; the sum over R is <= 1
    """
    if logits.dim() != 2 or (logits.shape[1] - 1) % n_causes:
        raise ValueError(f"cumulative_incidence: logits must be (B, R * K + 1) with R = {n_causes}; got {tuple(logits.shape)}")
    p = F.softmax(logits, dim=1)[:, :-1]  # (B, R*K)
    return torch.cumsum(p.reshape(p.shape[0], n_causes, -1), dim=2)


def cr_deephit_loss(
    logits: torch.Tensor,
    bin: torch.Tensor,
    cause: torch.Tensor,
    n_causes: int,
    alpha: float = 0.5,
    sigma: float = 0.1,
    censored_share: torch.Tensor | None = None,
) -> torch.Tensor:
    """DeepHit with competing risks: ``alpha * cr_pmf_nll + (1 - alpha) * ranking``.

    Ranking term (Lee et al. 2018, equal weight per cause): over every cause ``r``, the pairs
    ``(i, j)`` where ``i`` had an event of cause ``r`` and ``k_i < k_j``, or ``k_i == k_j`` and ``j``
    is censored (``j`` of any status, as in the paper; the tie rule is the single-risk
    ``deephit_loss``'s), summed ``exp(-(CIF_r,i(k_i) - CIF_r,j(k_i)) / sigma)``, divided by the
    number of such pairs over all causes (the paper sums; pycox divides by ``B^2``: see
    ``deephit_loss``). With no pair it is ``0 * logits.sum()``.

    Shapes:
        logits: (B, R * K + 1), bin: (B,), cause: (B,) -> scalar
    """
    k = _check("cr_deephit_loss", logits, bin, cause, n_causes)
    nll = -_log_terms(logits, bin, cause, n_causes, k, censored_share).mean()
    cif = cumulative_incidence(logits, n_causes)  # (B, R, K)
    b, c = bin.long(), cause.long()
    censored = c == 0
    later = (b[None, :] < b[:, None]) | ((b[None, :] == b[:, None]) & censored[:, None])  # [j, i]: j outlives i
    total = logits.sum() * 0.0
    n_pairs = 0
    for r in range(1, n_causes + 1):
        f_at = cif[:, r - 1, b]  # [j, i] = CIF_r,j(k_i)
        diff = torch.diagonal(f_at)[None, :] - f_at  # [j, i] = CIF_r,i(k_i) - CIF_r,j(k_i)
        comparable = (c == r)[None, :] & later
        n_pairs += int(comparable.sum())
        total = total + torch.where(comparable, torch.exp(-diff / sigma), torch.zeros_like(diff)).sum()
    rank = total / n_pairs if n_pairs else total
    return alpha * nll + (1.0 - alpha) * rank
