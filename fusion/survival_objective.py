"""The survival objective of a model: how the task head's output becomes a loss, a risk and S(t).

One object hides the difference between the continuous-time Cox model (one log-risk per patient,
survival curves from a Breslow baseline fitted after training) and the discrete-time models (one
logit per time bin; survival read from the outputs directly):

- ``cox``: Cox partial likelihood (Breslow or Efron ties). With ``risk_memory > 0`` the training
  loss uses :class:`~clinfuse.fusion.risk_memory.CoxRiskMemory` (risk sets enlarged by recent
  detached samples, for tiny batches such as WSI batch size 1; see that module for why this is an
  approximation and when gradient accumulation is the exact alternative).
- ``logistic_hazard``: logistic-hazard NLL on ``n_bins`` quantile bins (MCAT / PORPOISE).
- ``pmf``: the PMF (softmax) NLL, ``n_bins + 1`` outputs (the last = beyond the last bin).
- ``deephit``: DeepHit = ``alpha`` PMF NLL + ``(1 - alpha)`` ranking term.
- ``pmf_cr``, ``deephit_cr``: the same with ``n_causes`` competing causes (labels ``cause``: 0 =
  censored, 1..R): one softmax over (cause, bin) cells, ``n_causes * n_bins + 1`` outputs
  (:mod:`clinfuse.fusion.competing_risks`). Survival, risk and median are all-cause; the
  cause-specific cumulative incidence comes from :meth:`SurvivalObjective.cumulative_incidence`.

Bin edges are quantiles of the TRAINING split's event times (:meth:`fit_bins`); they are a
persistent buffer, so a checkpoint restores them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clinfuse.fusion.competing_risks import cr_deephit_loss, cr_pmf_nll
from clinfuse.fusion.competing_risks import cumulative_incidence as _cumulative_incidence
from clinfuse.fusion.discrete_time import (
    deephit_loss,
    discretize,
    logistic_hazard_nll,
    pmf_nll,
    quantile_bins,
    survival_from_hazards,
)
from clinfuse.fusion.losses import cox_ph_loss
from clinfuse.fusion.risk_memory import CoxRiskMemory

SurvivalLoss = Literal["cox", "logistic_hazard", "pmf", "deephit", "pmf_cr", "deephit_cr"]
SURVIVAL_LOSSES: tuple[str, ...] = ("cox", "logistic_hazard", "pmf", "deephit", "pmf_cr", "deephit_cr")
COMPETING_LOSSES: tuple[str, ...] = ("pmf_cr", "deephit_cr")


class SurvivalObjective(nn.Module):
    """Loss, risk score and survival function of one survival parametrisation.

    Args:
        loss: ``cox``, ``logistic_hazard``, ``pmf``, ``deephit``, or with competing causes
            ``pmf_cr`` / ``deephit_cr``.
        n_bins: time bins of the discrete-time losses.
        ties: tie handling of the Cox likelihood (``breslow`` or ``efron``).
        risk_memory: Cox only: size of the memory of recent (risk, time, event) samples added to
            the risk sets during training; 0 = off (the plain batch likelihood).
        deephit_alpha: weight of the likelihood in the DeepHit loss.
        deephit_sigma: scale of the DeepHit ranking term.
        n_causes: competing causes ``R`` of the ``*_cr`` losses (ignored by the others).
        censored_bin: discrete losses: a patient censored inside a bin counts as surviving the
            ``whole`` bin (default; MCAT / PORPOISE's convention), or only the ``observed`` part of
            it, up to the censoring time, with the bin's event probability spread evenly over the
            bin as :meth:`survival` reads it (in the open last bin: up to its start). ``whole``
            overstates survival when many patients are censored inside bins (``fusion/discrete_time.py``).
    """

    def __init__(
        self,
        loss: SurvivalLoss = "cox",
        n_bins: int = 16,
        ties: Literal["breslow", "efron"] = "breslow",
        risk_memory: int = 0,
        deephit_alpha: float = 0.5,
        deephit_sigma: float = 0.1,
        n_causes: int = 1,
        censored_bin: Literal["whole", "observed"] = "whole",
    ) -> None:
        super().__init__()
        if censored_bin not in ("whole", "observed"):
            raise ValueError(f"censored_bin must be 'whole' or 'observed', got {censored_bin!r}")
        if loss not in SURVIVAL_LOSSES:
            raise ValueError(f"unknown survival loss {loss!r}; expected one of {SURVIVAL_LOSSES}")
        if loss != "cox" and n_bins < 1:
            raise ValueError(f"n_bins must be >= 1 for the {loss!r} loss, got {n_bins}")
        if risk_memory and loss != "cox":
            raise ValueError(f"risk_memory applies to the Cox loss only, not {loss!r}")
        if loss in COMPETING_LOSSES and int(n_causes) < 1:
            raise ValueError(f"the {loss!r} loss needs n_causes >= 1 (the data's largest 'cause' label), got {n_causes}")
        if risk_memory and ties != "breslow":
            raise ValueError("risk_memory uses the Breslow likelihood; set ties='breslow'")
        self.loss_name, self.n_bins, self.ties = loss, int(n_bins), ties
        self.deephit_alpha, self.deephit_sigma = float(deephit_alpha), float(deephit_sigma)
        self.n_causes = int(n_causes) if loss in COMPETING_LOSSES else 1
        self.censored_bin = censored_bin
        self.memory = CoxRiskMemory(risk_memory) if risk_memory else None
        # NaN edges = not fitted yet; persistent so checkpoints carry the training bins (Cox: None, so a
        # Cox model's state dict is unchanged)
        self.register_buffer("edges", torch.full((self.n_bins + 1,), float("nan")) if self.discrete else None)

    @property
    def discrete(self) -> bool:
        return self.loss_name != "cox"

    @property
    def competing(self) -> bool:
        """Whether the loss models competing causes (needs the ``cause`` label)."""
        return self.loss_name in COMPETING_LOSSES

    @property
    def n_outputs(self) -> int:
        """Width of the task head's output: 1 (Cox log-risk), K hazards, K + 1 PMF logits or
        R * K + 1 competing-risks logits."""
        if not self.discrete:
            return 1
        if self.competing:
            return self.n_causes * self.n_bins + 1
        return self.n_bins if self.loss_name == "logistic_hazard" else self.n_bins + 1

    @property
    def fitted(self) -> bool:
        return not self.discrete or bool(torch.isfinite(self.edges[:-1]).all())

    def fit_bins(self, time: torch.Tensor, event: torch.Tensor) -> "SurvivalObjective":
        """Place the bin edges at quantiles of the training event times (no-op for Cox)."""
        if self.discrete:
            edges = quantile_bins(time.double(), event, self.n_bins)
            if not (edges[2:] > edges[1:-1]).all() or not edges[1] > 0:  # the onset may equal q_1
                raise ValueError(
                    f"{self.n_bins} time bins give repeated edges {edges.tolist()} (heavily tied event "
                    f"times); use fewer bins (model.n_time_bins)"
                )
            self.edges.copy_(edges.to(self.edges))
        return self

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ValueError(
                "the discrete-time survival bins are not fitted: call fit_bins(train_time, train_event) "
                "(ClinFuseModule does so in setup() from the data module's training split)"
            )

    def loss(
        self, out: torch.Tensor, time: torch.Tensor, event: torch.Tensor, training: bool = False,
        cause: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The batch loss; ``cause`` (0 = censored, 1..R) is required by the competing-risks losses.

        Shapes:
            out: (B,) Cox log-risk or (B, n_outputs) logits; time, event, cause: (B,) -> scalar
        """
        if not self.discrete:
            if self.memory is not None and training:
                return self.memory.loss(out, time, event.to(out.dtype))
            return cox_ph_loss(out, time, event, ties=self.ties)
        self._require_fitted()
        bins = discretize(time, self.edges)
        share = self.censored_share(time, bins) if self.censored_bin == "observed" else None
        if self.competing:
            if cause is None:
                raise ValueError(f"the {self.loss_name!r} loss needs the 'cause' label (0 = censored, 1..R)")
            if ((cause > 0) != (event > 0)).any():
                raise ValueError("labels 'cause' and 'event' disagree: cause must be 0 exactly where event is 0")
            if self.loss_name == "pmf_cr":
                return cr_pmf_nll(out, bins, cause, self.n_causes, censored_share=share)
            return cr_deephit_loss(out, bins, cause, self.n_causes, alpha=self.deephit_alpha, sigma=self.deephit_sigma,
                                   censored_share=share)
        if self.loss_name == "logistic_hazard":
            return logistic_hazard_nll(out, bins, event, censored_share=share)
        if self.loss_name == "pmf":
            return pmf_nll(out, bins, event, censored_share=share)
        return deephit_loss(out, bins, event, alpha=self.deephit_alpha, sigma=self.deephit_sigma, censored_share=share)

    def censored_share(self, time: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """The share of its bin each sample was seen to survive: ``(t - e_k) / (e_{k+1} - e_k)``,
        0 in the open last bin (nothing is known of its length).

        Shapes:
            time, bins: (B,) -> (B,) in [0, 1], on ``time``'s device
        """
        edges = self.edges.to(time.device)
        lo, hi = edges[bins], edges[bins + 1]
        finite = torch.isfinite(hi)
        width = torch.where(finite, hi - lo, torch.ones_like(hi))
        return torch.where(finite, (time.to(edges.dtype) - lo) / width, torch.zeros_like(lo)).clamp(0.0, 1.0)

    def survival_at_bin_ends(self, out: torch.Tensor) -> torch.Tensor:
        """Discrete models: S at the end of each of the K bins.

        Shapes:
            out: (B, n_outputs) -> (B, K)
        """
        if not self.discrete:
            raise ValueError("a Cox model's survival function needs a Breslow baseline (BreslowBaseline)")
        if self.loss_name == "logistic_hazard":
            return survival_from_hazards(out)
        if self.competing:
            return (1.0 - self.cumulative_incidence(out).sum(1)).clamp(0.0, 1.0)
        cdf = torch.cumsum(F.softmax(out, dim=1), dim=1)[:, : self.n_bins]  # (B, K)
        return (1.0 - cdf).clamp(0.0, 1.0)

    def cumulative_incidence(self, out: torch.Tensor) -> torch.Tensor:
        """Competing-risks models: each cause's cumulative incidence at the end of each bin.

        Shapes:
            out: (B, n_outputs) -> (B, R, K)
        """
        if not self.competing:
            raise ValueError(f"cumulative incidence needs a competing-risks loss, not {self.loss_name!r}")
        return _cumulative_incidence(out, self.n_causes)

    def cumulative_incidence_at(self, out: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Competing-risks models: ``CIF_r(t)`` at ``times``, read between the bin ends as
        :meth:`survival` is (so ``S(t) + sum_r CIF_r(t) = 1`` at every ``t``).

        Shapes:
            out: (B, n_outputs), times: (T,) -> (B, R, T)
        """
        self._require_fitted()
        cif = self.cumulative_incidence(out)  # (B, R, K)
        cif = torch.cat([torch.zeros_like(cif[..., :1]), cif], dim=2)  # index k = CIF at e_k
        return self._between_ends(cif, times)

    def risk(self, out: torch.Tensor) -> torch.Tensor:
        """One risk score per patient (higher = earlier event), for C-indices and risk groups.

        Cox: the log-risk itself. Discrete: minus the expected number of bins survived,
        ``-sum_k S_k`` (a restricted-mean-survival proxy, as MCAT ranks by).

        Shapes:
            out: (B,) or (B, n_outputs) -> (B,)
        """
        if not self.discrete:
            return out
        return -self.survival_at_bin_ends(out).sum(1)

    def survival(self, out: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Discrete models: S(t) at ``times``, linear between the bin ends.

        The model gives S at each bin end; inside a bin the event probability is spread evenly
        over the bin (constant density, pycox's interpolation), so S falls linearly to the bin's
        end value; in bin 0 from the earliest training event on (``edges[0]``, the onset; S = 1
        before it, as a Breslow curve before its first event; checkpoints fitted before the onset
        edge have 0 there). Read as a step at the bin ends instead, every patient would have
        S = 1 until the first bin ends, whatever the model predicts, and D-calibration and the
        Brier score would penalise even a perfect model. The last bin has no end: from the last
        finite edge on, S is held at its value there (a horizon past it is flagged by the
        prediction API).

        Shapes:
            out: (B, n_outputs), times: (T,) -> (B, T)
        """
        self._require_fitted()
        s = self.survival_at_bin_ends(out)  # (B, K)
        s = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)  # (B, K + 1): index k = survival at e_k
        return self._between_ends(s, times)

    def _between_ends(self, at_edges: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Read values given at the edges linearly between the finite edges, held after the last.

        Shapes:
            at_edges: (..., K + 1), index k = value at ``edges[k]`` (index K, at inf, unused);
            times: (T,) -> (..., T)
        """
        finite = self.edges[:-1]  # (K,) e_0 (the onset) ... e_{K-1}
        t = times.to(finite.dtype).to(finite.device)
        k = torch.bucketize(t, finite[1:].contiguous(), right=True)  # (T,) in 0..K-1: t in [e_k, e_{k+1})
        nxt = (k + 1).clamp(max=finite.shape[0] - 1)  # the last finite edge reads itself: held
        width = finite[nxt] - finite[k]  # (T,) 0 from the last finite edge on
        frac = torch.where(width > 0, (t - finite[k]) / torch.where(width > 0, width, 1.0), 0.0).clamp(0.0, 1.0)
        k, nxt = k.to(at_edges.device), nxt.to(at_edges.device)
        lo, hi = at_edges[..., k], at_edges[..., nxt]
        return lo + frac.to(at_edges.device, at_edges.dtype) * (hi - lo)

    def median(self, out: torch.Tensor) -> torch.Tensor:
        """Discrete models: where :meth:`survival` (linear between bin ends) first reaches 0.5.

        ``inf`` when the median is not reached within the model's time range: S is still above
        0.5 at the last finite bin end (the open last bin cannot place it).

        Shapes:
            out: (B, n_outputs) -> (B,)
        """
        self._require_fitted()
        s = self.survival_at_bin_ends(out)  # (B, K)
        s = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)[:, : self.edges.shape[0] - 1]  # (B, K): S at e_0..e_{K-1}
        finite = self.edges[:-1].to(s.device, s.dtype)  # (K,)
        below = s <= 0.5  # (B, K); never at e_0 (S = 1)
        j = below.float().argmax(1).clamp(min=1)  # (B,) first finite edge with S <= 0.5
        s_hi, s_lo = s.gather(1, (j - 1)[:, None])[:, 0], s.gather(1, j[:, None])[:, 0]
        frac = (s_hi - 0.5) / (s_hi - s_lo).clamp(min=torch.finfo(s.dtype).tiny)
        median = finite[j - 1] + frac.clamp(0.0, 1.0) * (finite[j] - finite[j - 1])
        return torch.where(below.any(1), median, torch.full_like(median, math.inf))
