"""Discrete-time survival: quantile bins, logistic-hazard / PMF likelihoods, DeepHit.

Conventions (one everywhere in this file):

- ``K`` bins with edges ``e_0 <= e_1 < ... < e_K = +inf``; bin ``k`` is ``[e_k, e_{k+1})``, except
  that bin 0 starts at time 0: ``e_0`` is the onset (earliest training event, :func:`quantile_bins`),
  where survival read between bin ends starts to fall.
- A sample with an EVENT in bin ``k`` died in bin ``k``. A CENSORED sample in bin ``k`` is taken to
  have SURVIVED THROUGH bin ``k`` (MCAT / PORPOISE's ``nll_loss`` convention: its likelihood is
  ``S_k``, survival to the END of bin ``k``), unless ``censored_share`` says which share ``s`` of
  its bin it was seen to survive: then its likelihood is ``S(c) = S_{k-1} - s (S_{k-1} - S_k)``,
  survival to its censoring time with the bin's event probability spread evenly over the bin
  (how :meth:`~clinfuse.fusion.survival_objective.SurvivalObjective.survival` reads S between bin
  ends). Counting the whole bin overstates survival when many patients are censored inside bins.
- Logistic hazard: ``logits`` (B, K), ``h_k = sigmoid(logits_k) = P(T in bin k | T >= bin k)``,
  ``S_k = prod_{j<=k} (1 - h_j)``.
- PMF (DeepHit): ``logits`` (B, K + 1), softmax over ``K`` bins plus one last column for "beyond
  the last bin". The extra column is what gives a sample censored in the last bin a non-zero
  likelihood ``sum_{j>k} p_j``; with ``p_k = h_k S_{k-1}`` and ``p_K = S_{K-1}`` the PMF likelihood
  equals the hazard likelihood exactly.

All log-probabilities go through ``logsigmoid`` / ``log_softmax``; every loss is a batch mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def quantile_bins(times: torch.Tensor, events: torch.Tensor, n_bins: int = 4) -> torch.Tensor:
    """Bin edges at the quantiles of the EVENT times (censored times are ignored), as MCAT does.

    Interior edges are the ``1/n_bins, ..., (n_bins-1)/n_bins`` quantiles (linear interpolation)
    of the times whose event is observed, the last edge is ``+inf``. The first edge is the
    earliest event time (the *onset*): bin 0 still holds every time below ``q_1`` from 0 on
    (:func:`discretize`), but survival read between bin ends stays 1 until the onset, as a
    Breslow curve does before the first training event, instead of falling from time 0 (which
    misplaces bin 0's events for outcomes that start late: no cGvHD event before day 63). Compute
    them on the TRAINING split only. Heavily tied event times can give repeated interior edges
    (empty bins); pass fewer bins then.

    Args:
        times: observed times, non-negative.
        events: 1 where the event was observed.
        n_bins: number of bins ``K``.

    Returns:
        Edges ``[onset, q_1, ..., q_{K-1}, inf]`` in ``times``' float dtype (``onset <= q_1``).

    Raises:
        ValueError: on bad shapes, ``n_bins < 1`` or no events.

    Shapes:
        times, events: (N,) -> (K + 1,)
    """
    if times.dim() != 1 or times.shape != events.shape:
        raise ValueError(
            f"quantile_bins wants times, events of one shape (N,), got "
            f"{tuple(times.shape)}, {tuple(events.shape)}"
        )
    if n_bins < 1:
        raise ValueError(f"quantile_bins: n_bins must be >= 1, got {n_bins}")
    dtype = times.dtype if times.is_floating_point() else torch.get_default_dtype()
    event_times = times[events.bool()].to(dtype)
    if event_times.numel() == 0:
        raise ValueError("quantile_bins: no events, cannot place bins")
    q = torch.linspace(0, 1, n_bins + 1, dtype=event_times.dtype, device=times.device)[1:-1]
    inner = torch.quantile(event_times, q)
    onset = event_times.min().reshape(1)
    return torch.cat([onset, inner, inner.new_full((1,), float("inf"))])


def discretize(time: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bin index ``k`` with ``edges[k] <= time < edges[k+1]`` (a time on an edge goes up); bin 0
    starts at time 0 whatever ``edges[0]`` (the onset of :func:`quantile_bins`) is.

    Shapes:
        time: (B,), edges: (K + 1,) -> (B,) long in ``[0, K)``
    """
    if time.dim() != 1 or edges.dim() != 1 or edges.numel() < 2:
        raise ValueError(
            f"discretize wants time (B,) and edges (K+1,) with K >= 1, got "
            f"{tuple(time.shape)}, {tuple(edges.shape)}"
        )
    if (time < 0).any():
        raise ValueError("discretize: a time is negative")
    return torch.bucketize(time.to(edges.dtype).contiguous(), edges[1:-1].contiguous(), right=True)


def _check(name: str, logits: torch.Tensor, bin: torch.Tensor, event: torch.Tensor, n_bins: int) -> None:
    if logits.dim() != 2 or bin.shape != (logits.shape[0],) or event.shape != (logits.shape[0],):
        raise ValueError(
            f"{name} wants logits (B, K), bin (B,), event (B,), got "
            f"{tuple(logits.shape)}, {tuple(bin.shape)}, {tuple(event.shape)}"
        )
    if bin.numel() and (bin.min() < 0 or bin.max() >= n_bins):
        raise ValueError(f"{name}: bin indices must lie in [0, {n_bins}) for logits {tuple(logits.shape)}")


def log_unseen_share(censored_share: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``log(1 - s)`` of each sample's censored share ``s`` (None: the whole bin, ``s = 1``).

    Shapes:
        censored_share: (B,) in ``[0, 1]`` -> (B,) in ``like``'s dtype and device
    """
    if censored_share is None:
        return None
    s = censored_share.to(like.dtype).to(like.device)
    if s.shape != like.shape[:1] or bool(((s < 0) | (s > 1) | ~torch.isfinite(s)).any()):
        raise ValueError(f"censored_share must be ({like.shape[0]},) values in [0, 1], got shape {tuple(s.shape)}")
    return torch.log1p(-s)


def logistic_hazard_nll(
    logits: torch.Tensor, bin: torch.Tensor, event: torch.Tensor, censored_share: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative log-likelihood of the logistic (discrete-time) hazard model, batch mean.

    Event in bin ``k``: ``-[sum_{j<k} log(1 - h_j) + log h_k]``; censored in bin ``k`` (survives
    through it, MCAT's convention): ``-sum_{j<=k} log(1 - h_j)``; with ``censored_share`` ``s``:
    ``-[sum_{j<k} log(1 - h_j) + log(1 - s h_k)]`` (module docstring).

    Shapes:
        logits: (B, K), bin: (B,) long, event: (B,), censored_share: (B,) or None -> scalar
    """
    _check("logistic_hazard_nll", logits, bin, event, logits.shape[-1] if logits.dim() == 2 else 0)
    k = torch.arange(logits.shape[1], device=logits.device)
    b = bin.long()[:, None]
    ev = event.to(logits.dtype)[:, None].bool()
    log_surv = F.logsigmoid(-logits)  # log(1 - h)
    log_haz = F.logsigmoid(logits)  # log h
    log_rest = log_unseen_share(censored_share, logits)
    censored = log_surv
    if log_rest is not None:  # log(1 - s h) = log((1 - s) + s (1 - h))
        log_s = torch.log(censored_share.to(logits.dtype).to(logits.device))[:, None]
        censored = torch.logaddexp(log_rest[:, None].expand_as(logits), log_s + log_surv)
    # survive j < k always; at j == k: hazard for events, survival (of the seen share) for censored
    terms = torch.where(k < b, log_surv, torch.zeros_like(logits))
    terms = terms + torch.where(k == b, torch.where(ev, log_haz, censored), torch.zeros_like(logits))
    return -terms.sum(1).mean()


def _pmf_log_terms(
    logits: torch.Tensor, bin: torch.Tensor, event: torch.Tensor, censored_share: torch.Tensor | None = None
) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1)
    b = bin.long()
    log_event = log_p.gather(1, b[:, None])[:, 0]
    k = torch.arange(logits.shape[1], device=logits.device)
    later = log_p.masked_fill(k[None, :] <= b[:, None], float("-inf"))
    log_rest = log_unseen_share(censored_share, logits)
    if log_rest is not None:  # the unseen share of bin k's mass: the event may still fall there
        later = torch.where(k[None, :] == b[:, None], log_p + log_rest[:, None], later)
    log_censored = torch.logsumexp(later, dim=1)  # log sum_{j>k} p_j (+ (1 - s) p_k); finite since k <= K-1
    return torch.where(event.bool(), log_event, log_censored)


def pmf_nll(
    logits: torch.Tensor, bin: torch.Tensor, event: torch.Tensor, censored_share: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative log-likelihood of the PMF (softmax) parametrisation, batch mean.

    ``p = softmax(logits)`` over ``K`` bins and a last "beyond the last bin" column. Event in bin
    ``k``: ``-log p_k``; censored in bin ``k``: ``-log sum_{j>k} p_j`` (strictly later, i.e.
    survives through bin ``k``: the same convention as :func:`logistic_hazard_nll`); with
    ``censored_share`` ``s``: ``-log(sum_{j>k} p_j + (1 - s) p_k)``.

    Shapes:
        logits: (B, K + 1), bin: (B,) long in ``[0, K)``, event: (B,), censored_share: (B,) or None -> scalar
    """
    _check("pmf_nll", logits, bin, event, logits.shape[-1] - 1 if logits.dim() == 2 else 0)
    return -_pmf_log_terms(logits, bin, event, censored_share).mean()


def deephit_loss(
    logits: torch.Tensor,
    bin: torch.Tensor,
    event: torch.Tensor,
    alpha: float = 0.5,
    sigma: float = 0.1,
    censored_share: torch.Tensor | None = None,
) -> torch.Tensor:
    """DeepHit (single risk): ``alpha * pmf_nll + (1 - alpha) * ranking``.

    Ranking term: mean over comparable pairs ``(i, j)`` of ``exp(-(F_i(k_i) - F_j(k_i)) / sigma)``
    with ``F_i(k) = sum_{l<=k} p_il`` the CDF at the end of bin ``k``. A pair is comparable when
    ``i`` has an event and ``k_i < k_j``, or ``k_i == k_j`` and ``j`` is censored (censored
    survives through its bin; this is pycox's ``DeepHitSingle`` rule on bin indices). With no
    comparable pair the ranking term is ``0 * logits.sum()``. Normalisation: the mean over
    comparable pairs, so the term does not grow with the batch; the paper sums over pairs and
    pycox divides the sum by ``B^2``, so an ``alpha``/``sigma`` tuned there weights the ranking
    term differently here (by ``B^2 / n_pairs`` against pycox). ``censored_share``: as
    :func:`pmf_nll`, for the likelihood term.

    Shapes:
        logits: (B, K + 1), bin: (B,) long in ``[0, K)``, event: (B,) -> scalar
    """
    _check("deephit_loss", logits, bin, event, logits.shape[-1] - 1 if logits.dim() == 2 else 0)
    nll = -_pmf_log_terms(logits, bin, event, censored_share).mean()
    cdf = torch.cumsum(F.softmax(logits, dim=1), dim=1)  # (B, K+1)
    b = bin.long()
    ev = event.bool()
    f_at = cdf[:, b]  # f_at[j, i] = F_j(k_i)
    diff = torch.diagonal(f_at)[None, :] - f_at  # [j, i] = F_i(k_i) - F_j(k_i)
    comparable = ev[None, :] & ((b[None, :] < b[:, None]) | ((b[None, :] == b[:, None]) & ~ev[:, None]))
    n_pairs = comparable.sum()
    if n_pairs == 0:
        rank = logits.sum() * 0.0
    else:
        rank = torch.where(comparable, torch.exp(-diff / sigma), torch.zeros_like(diff)).sum() / n_pairs
    return alpha * nll + (1.0 - alpha) * rank


def survival_from_hazards(logits: torch.Tensor) -> torch.Tensor:
    """Survival at the END of each bin, ``S_k = prod_{j<=k} (1 - sigmoid(logits_j))``.

    Shapes:
        logits: (B, K) -> (B, K), non-increasing along K, in [0, 1]
    """
    if logits.dim() != 2:
        raise ValueError(f"survival_from_hazards wants logits (B, K), got {tuple(logits.shape)}")
    return torch.exp(torch.cumsum(F.logsigmoid(-logits), dim=1))
