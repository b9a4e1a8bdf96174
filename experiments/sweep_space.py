"""The sweep file: search space over dotted config keys, the metric and its direction.

A sweep file (``experiments/sweeps/<name>.yaml``)::

    study_name: quickstart-lr          # default: the file name
    metric: val/c_index                # any metric the module logs per validation epoch
    direction: maximize                # or minimize; default: minimize for a loss, IBS or Brier score
    sampler: {name: tpe, seed: 0}      # tpe | random
    pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 2}   # median | none
    fixed:                             # dotted config keys set in every trial
      trainer.max_epochs: 8
    space:
      model.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      model.d_model: {type: categorical, choices: [32, 64]}
      model.n_time_bins: {type: int, low: 4, high: 16, step: 4}
      fusion: {type: config, choices: [experiments/configs/fusion/transformer.yaml, ...]}

``type: config`` picks one YAML file to stack (after ``--config`` files, before the dotted keys):
the way to search over components (fusion heads, encoders) whose ``init_args`` differ. Relative
config paths resolve against the working directory, then the sweep file's repository root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from clinfuse.experiments.metric_direction import lower_is_better
from clinfuse.experiments.trial_seeded_sampler import TrialSeededSampler

PARAM_TYPES = ("float", "int", "categorical", "config")


@dataclass
class SweepSpace:
    """A parsed sweep file (see the module docstring)."""

    study_name: str
    metric: str
    direction: str
    space: dict[str, dict[str, Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> "SweepSpace":
        """Read and validate a sweep file; ``ValueError`` naming the file and the key."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"sweep file {path} does not exist")
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a sweep file is a mapping, got {type(doc).__name__}")
        unknown = sorted(set(doc) - {"study_name", "metric", "direction", "space", "fixed", "sampler", "pruner"})
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}")
        for key in ("metric", "space"):
            if key not in doc:
                raise ValueError(f"{path}: missing key '{key}'")
        lower = lower_is_better(doc["metric"])
        direction = doc.get("direction", "minimize" if lower else "maximize")
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"{path}: direction must be maximize or minimize, got {direction!r}")
        if lower and direction == "maximize":
            raise ValueError(f"{path}: direction maximize for metric {doc['metric']!r}, where lower is better "
                             "(a loss, IBS or Brier score): use direction minimize")
        space = doc["space"]
        if not isinstance(space, dict) or not space:
            raise ValueError(f"{path}: 'space' must be a non-empty mapping of dotted key -> distribution")
        for key, dist in space.items():
            _check_param(path, key, dist)
        return cls(
            study_name=str(doc.get("study_name") or path.stem),
            metric=str(doc["metric"]),
            direction=direction,
            space=space,
            fixed=dict(doc.get("fixed") or {}),
            sampler=dict(doc.get("sampler") or {}),
            pruner=dict(doc.get("pruner") or {}),
            path=path,
        )

    def suggest(self, trial: optuna.Trial) -> tuple[list[str], dict[str, Any]]:
        """Sample one point: (config files to stack, dotted key -> value incl. ``fixed``)."""
        configs, values = [], dict(self.fixed)
        for key, dist in self.space.items():
            kind = dist["type"]
            if kind == "float":
                values[key] = trial.suggest_float(key, float(dist["low"]), float(dist["high"]), log=bool(dist.get("log", False)))
            elif kind == "int":
                values[key] = trial.suggest_int(key, int(dist["low"]), int(dist["high"]), step=int(dist.get("step", 1)), log=bool(dist.get("log", False)))
            elif kind == "categorical":
                values[key] = trial.suggest_categorical(key, list(dist["choices"]))
            else:  # config
                configs.append(self.resolve(trial.suggest_categorical(key, [str(c) for c in dist["choices"]])))
        return configs, values

    def resolve(self, config: str) -> str:
        """A config path as given if it exists, else relative to a folder above the sweep file, else
        relative to the clinfuse checkout (``experiments/configs/...`` of an editable install)."""
        if Path(config).exists():
            return config
        above = list(self.path.resolve().parents) if self.path is not None else []
        for parent in [*above, Path(__file__).resolve().parents[1]]:
            if (parent / config).exists():
                return str(parent / config)
        raise ValueError(f"{self.path}: config file {config!r} not found (relative to the working directory or "
                         f"any folder above the sweep file)")

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """The sampler of the file. With a ``seed``, trial ``n`` is drawn with seed ``seed + n``
        (:class:`TrialSeededSampler`): one uninterrupted worker is reproducible, and workers sharing
        a study, or a restarted one, draw different points (trial numbers are unique in a study)."""
        name, seed = self.sampler.get("name", "tpe"), self.sampler.get("seed")
        if name not in ("tpe", "random"):
            raise ValueError(f"{self.path}: sampler.name must be tpe or random, got {name!r}")
        make = optuna.samplers.TPESampler if name == "tpe" else optuna.samplers.RandomSampler
        if seed is None:
            return make()
        return TrialSeededSampler(lambda s: make(seed=s), int(seed))

    def make_pruner(self) -> optuna.pruners.BasePruner:
        opts = dict(self.pruner)
        name = opts.pop("name", "median")
        if name == "median":
            return optuna.pruners.MedianPruner(**opts)
        if name == "none":
            return optuna.pruners.NopPruner()
        raise ValueError(f"{self.path}: pruner.name must be median or none, got {name!r}")


def _check_param(path: Path, key: str, dist: Any) -> None:
    if not isinstance(dist, dict) or dist.get("type") not in PARAM_TYPES:
        raise ValueError(f"{path}: space.{key} needs 'type' in {PARAM_TYPES}, got {dist!r}")
    if dist["type"] in ("float", "int"):
        missing = [k for k in ("low", "high") if k not in dist]
        if missing:
            raise ValueError(f"{path}: space.{key} ({dist['type']}) misses {missing}")
        if float(dist["low"]) >= float(dist["high"]):
            raise ValueError(f"{path}: space.{key}: low must be < high, got {dist['low']} >= {dist['high']}")
        if dist.get("log") and float(dist["low"]) <= 0:
            raise ValueError(f"{path}: space.{key}: a log scale needs low > 0")
    else:
        choices = dist.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{path}: space.{key} ({dist['type']}) needs a non-empty 'choices' list")
        if dist["type"] == "categorical" and not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ValueError(f"{path}: space.{key}: categorical choices must be scalars; use type: config for components")
