"""An Optuna sampler whose random state is set by the sweep file's seed and the trial's number."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class TrialSeededSampler(BaseSampler):
    """Draw trial ``n`` with a fresh inner sampler seeded ``seed + n``.

    Optuna's samplers take one seed per process, so several workers of one study that start with
    the same seed draw the same points, and a restarted worker replays its first points. Trial
    numbers are unique within a study (the storage hands them out), so seeding each trial by its
    number gives every worker different points, and one uninterrupted worker the same points on
    every run. Optuna has no per-trial seed, hence this wrapper. The inner samplers used here (TPE
    without ``multivariate``, random) keep no state between trials besides their random state: they
    read the study's history from the storage at every draw.

    Args:
        make: inner sampler from a seed, e.g. ``lambda s: optuna.samplers.TPESampler(seed=s)``.
        seed: the sweep file's seed.
    """

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make, self._seed = make, int(seed)
        self._inner: dict[int, BaseSampler] = {}

    def for_trial(self, number: int) -> BaseSampler:
        """The inner sampler of trial ``number`` (made on first use)."""
        if number not in self._inner:
            self._inner[number] = self._make(self._seed + number)
        return self._inner[number]

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.for_trial(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.for_trial(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.for_trial(trial.number).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.for_trial(trial.number).before_trial(study, trial)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.for_trial(trial.number).after_trial(study, trial, state, values)
        self._inner.pop(trial.number, None)  # the trial is over: its sampler is not needed again

    def reseed_rng(self) -> None:
        """Called by Optuna for ``n_jobs > 1`` threads: the seeds are per trial already, nothing to do."""
