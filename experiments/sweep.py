"""``clinfuse sweep``: Optuna hyperparameter sweeps over stacked configs, tracked in MLflow.

    clinfuse sweep --config experiments/quickstart.yaml --sweep experiments/sweeps/quickstart.yaml \\
        --n-trials 20 [--storage sqlite:///optuna.db] [--out sweeps]

Each trial builds the Lightning CLI from the ``--config`` stack, the trial's sampled config files
and dotted keys (:mod:`clinfuse.experiments.sweep_space`), trains with optuna-integration's Lightning
pruning callback on the sweep's metric, and returns the best validation value of that metric
(the checkpoint callback's best score). Every trial is an MLflow run nested under one parent run
per study (tag ``mlflow.parentRunId``); the parent records the best value so far and, at the end,
``best_config.yaml``, the best trial's full resolved config, also written to
``<out>/<study>/best_config.yaml`` ready for ``clinfuse fit --config``. The parent run is FINISHED
when the command ends (FAILED when the sweep raised, KILLED on Ctrl-C; left RUNNING while another
worker still runs a trial, which then finishes it); resuming the study reopens it.

Storage: sqlite in the working directory by default; any SQLAlchemy URL (e.g.
``postgresql://user@host/db``) lets workers on several machines share one study: start the same
command on each. Trials heartbeat to the storage; a worker killed mid-trial leaves a RUNNING trial
that the next worker marks FAIL once the heartbeat is ``grace`` seconds old and re-queues with the
same parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``), so a killed sweep resumes by re-running
the command.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from clinfuse.experiments.sweep_space import SweepSpace

HEARTBEAT_S = 30


def make_storage(url: str | None, heartbeat: int = HEARTBEAT_S, grace: int | None = None) -> RDBStorage:
    """An RDB storage with heartbeats (default: ``sqlite:///optuna.db`` in the working directory)."""
    import random
    import time

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    url = url or f"sqlite:///{Path.cwd() / 'optuna.db'}"
    for attempt in range(5):
        try:
            with local_store_lock(url), warnings.catch_warnings():  # workers starting together on a fresh sqlite file race to create it
                # heartbeats are "experimental" in Optuna since 2.8; they are the documented way to recover killed workers
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=heartbeat,
                    grace_period=grace or 4 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                    engine_kwargs={"pool_pre_ping": True},
                )
        except (IntegrityError, ProgrammingError):
            # a server database (PostgreSQL, MySQL): workers starting together on a fresh database
            # race to create Optuna's tables and the loser gets a unique-violation; by the retry the
            # tables exist and creation is skipped
            if attempt == 4:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")  # pragma: no cover


def local_store_lock(url: str):
    """A file lock next to a ``sqlite:///`` store (schema creation is not safe to run twice at
    once: a half-migrated file stays broken); a no-op for server databases."""
    from contextlib import nullcontext

    from filelock import FileLock

    if url.startswith("sqlite:///"):
        return FileLock(url[len("sqlite:///"):] + ".lock", timeout=600)
    return nullcontext()


class Objective:
    """One trial = one ``fit`` of the CLI built from the stacked configs plus the sampled values."""

    def __init__(self, space: SweepSpace, configs: Sequence[str], extra: Sequence[str], out: Path, parent_run: str | None) -> None:
        self.space, self.configs, self.extra, self.out, self.parent_run = space, list(configs), list(extra), out, parent_run

    def args(self, trial: optuna.Trial) -> list[str]:
        configs, values = self.space.suggest(trial)
        args = [a for c in [*self.configs, *configs] for a in ("--config", c)]
        args += [f"--{k}={_cli_value(v)}" for k, v in values.items()]
        return args + self.extra

    def __call__(self, trial: optuna.Trial) -> float:
        from optuna_integration import PyTorchLightningPruningCallback
        from lightning.pytorch.loggers import MLFlowLogger

        from clinfuse.experiments.cli import cli_main

        args = self.args(trial)
        cli = cli_main(args, run=False)
        _monitor_sweep_metric(cli.trainer, self.space.metric, self.space.direction)
        config_text = cli.parser.dump(cli.config, skip_none=False)
        path = self.out / f"trial-{trial.number:04d}.yaml"
        path.write_text(config_text)
        trial.set_user_attr("config", config_text)
        trial.set_user_attr("args", args)
        for logger in cli.trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                tags = {"mlflow.runName": f"{self.space.study_name}-trial-{trial.number}",
                        "optuna.study": self.space.study_name, "optuna.trial": str(trial.number)}
                if self.parent_run:
                    tags["mlflow.parentRunId"] = self.parent_run
                logger.tags = {**(logger.tags or {}), **tags}
                trial.set_user_attr("mlflow_run_id", logger.run_id)
                logger.experiment.log_text(logger.run_id, config_text, "config.yaml")
        cli.trainer.callbacks.append(PyTorchLightningPruningCallback(trial, monitor=self.space.metric))
        try:
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        except SystemExit:
            if cli.trainer.interrupted:  # Lightning turns Ctrl-C into sys.exit(1), which Optuna would not see:
                raise KeyboardInterrupt from None  # as an interrupt, the trial is marked failed, the parent KILLED
            raise
        finally:  # pruned trials too: the run's last epoch value is not what the sweep compares
            _log_trial_best(cli.trainer, self.space.metric)
        score = cli.trainer.checkpoint_callback.best_model_score if cli.trainer.checkpoint_callback else None
        if score is None:
            score = cli.trainer.callback_metrics.get(self.space.metric)
        if score is None:
            raise ValueError(f"trial {trial.number}: the metric {self.space.metric!r} was never logged; logged: "
                             f"{sorted(cli.trainer.callback_metrics)}")
        return float(score)


def _log_trial_best(trainer, metric: str) -> None:  # noqa: ANN001 - a Trainer
    """Log the trial's best value of the sweep metric (what Optuna records) as ``best/<metric>``
    to its MLflow run, so runs can be ranked in MLflow by what the sweep optimised."""
    from lightning.pytorch.loggers import MLFlowLogger

    ckpt = trainer.checkpoint_callback
    if ckpt is None or ckpt.best_model_score is None:
        return
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            logger.experiment.log_metric(logger.run_id, f"best/{metric}", float(ckpt.best_model_score))


def _monitor_sweep_metric(trainer, metric: str, direction: str) -> None:  # noqa: ANN001 - a Trainer
    """Make the trainer's best checkpoint the best of the sweep metric (the CLI's default monitors
    ``monitor_for(task)``, linked from ``model.task``, which a sweep may not optimise)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    old = trainer.checkpoint_callback
    mode = "max" if direction == "maximize" else "min"
    if old is not None and old.monitor == metric and old.mode == mode:
        return
    new = ModelCheckpoint(dirpath=old.dirpath if old else None, filename="best-{epoch}", monitor=metric, mode=mode)
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)] + [new]


def _cli_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


def _parent_run(space: SweepSpace, study: optuna.Study) -> str | None:
    """The study's MLflow parent run (created by the first worker, found by tag by the others).

    Held under a file lock for a local sqlite MLflow store: workers starting together would race to
    create its schema (and two parent runs).
    """
    from clinfuse.experiments.tracking import default_tracking_uri

    with local_store_lock(default_tracking_uri()):
        return _find_or_create_parent(space, study)


def _find_or_create_parent(space: SweepSpace, study: optuna.Study) -> str | None:
    import mlflow

    from clinfuse.experiments.tracking import EXPERIMENT_NAME, default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri())  # also for a resumed study: write_best logs to it
    if study.user_attrs.get("mlflow_parent_run"):
        return study.user_attrs["mlflow_parent_run"]
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT_NAME)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT_NAME, artifact_location=str(Path.cwd() / "mlartifacts"))
    found = client.search_runs([exp_id], filter_string=f"tags.`optuna.study` = '{space.study_name}' and tags.`clinfuse.sweep` = 'parent'")
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(exp_id, run_name=space.study_name,
                                tags={"optuna.study": space.study_name, "clinfuse.sweep": "parent"})
        run_id = run.info.run_id
        client.log_dict(run_id, {"metric": space.metric, "direction": space.direction, "space": space.space,
                                 "fixed": space.fixed}, "sweep.yaml")
    study.set_user_attr("mlflow_parent_run", run_id)
    return run_id


def run_sweep(
    space: SweepSpace,
    configs: Sequence[str],
    n_trials: int,
    storage: str | None = None,
    out: str | Path = "sweeps",
    extra: Sequence[str] = (),
    heartbeat: int = HEARTBEAT_S,
    grace: int | None = None,
) -> optuna.Study:
    """Run ``n_trials`` trials of ``space`` in this process (more workers may share ``storage``)."""
    import mlflow

    from clinfuse.experiments.tracking import default_tracking_uri

    study = optuna.create_study(
        study_name=space.study_name, storage=make_storage(storage, heartbeat, grace), direction=space.direction,
        sampler=space.make_sampler(), pruner=space.make_pruner(), load_if_exists=True,
    )
    outdir = Path(out) / space.study_name
    outdir.mkdir(parents=True, exist_ok=True)
    parent = _parent_run(space, study)
    client = mlflow.MlflowClient(default_tracking_uri())
    _set_parent_status(client, parent, study, "RUNNING")  # a resumed study's parent ran before: open again

    def record_best(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if done:  # the parent run is shared by every worker: serialised like write_best's writes
            with local_store_lock(default_tracking_uri()):
                _retry(lambda: client.log_metric(parent, f"best/{space.metric}", study.best_value, step=trial.number))

    try:
        study.optimize(Objective(space, configs, extra, outdir, parent), n_trials=n_trials, callbacks=[record_best],
                       catch=(ValueError, RuntimeError), gc_after_trial=True)
        write_best(study, outdir, parent, metric=space.metric)
    except BaseException as err:  # the parent run must not stay RUNNING: marked, then the error goes on
        _set_parent_status(client, parent, study, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    _set_parent_status(client, parent, study, "FINISHED")
    return study


def _set_parent_status(client, parent_run: str | None, study: optuna.Study,  # noqa: ANN001 - an MlflowClient
                       status: str) -> None:
    """Set the parent run's status. ``RUNNING`` reopens a terminated one (a resumed study); a
    terminal status ends it, except ``FINISHED`` while another worker still runs a trial of the
    study: the last worker to finish ends it."""
    from clinfuse.experiments.tracking import default_tracking_uri

    if not parent_run:
        return
    with local_store_lock(default_tracking_uri()):
        current = client.get_run(parent_run).info.status
        if status == "RUNNING":
            if current != "RUNNING":
                _retry(lambda: client.update_run(parent_run, status="RUNNING"))
            return
        if status == "FINISHED" and study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            return
        _retry(lambda: client.set_terminated(parent_run, status))


def write_best(study: optuna.Study, outdir: Path, parent_run: str | None = None, metric: str | None = None) -> Path | None:
    """Write the best COMPLETE trial's resolved config to ``outdir/best_config.yaml`` (and MLflow);
    ``metric`` names the value in what is printed and written."""
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        print(f"study {study.study_name}: no completed trial yet")
        return None
    from filelock import FileLock

    from clinfuse.experiments.tracking import default_tracking_uri

    best = study.best_trial
    path = outdir / "best_config.yaml"
    # workers finishing together write the same file and the same parent-run tags: one at a time
    # (a local sqlite MLflow store rejects two concurrent upserts of one tag)
    with FileLock(str(outdir / ".best_config.lock"), timeout=600), local_store_lock(default_tracking_uri()):
        named = f"best {metric} (validation)" if metric else "value"
        path.write_text(f"# best trial {best.number} of study {study.study_name}: {named} {best.value}\n"
                        f"# params {best.params}\n" + best.user_attrs["config"])
        if parent_run:
            tags = {"best_trial": str(best.number)}
            if best.user_attrs.get("mlflow_run_id"):
                tags["best_run_id"] = best.user_attrs["mlflow_run_id"]
            _retry(lambda: _write_parent(parent_run, path, tags))
    counts = {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
    named = f"best {metric} (validation)" if metric else "value"
    print(f"study {study.study_name}: best trial {best.number}, {named} {best.value:.4f}, params {best.params}")
    print(f"trials: { {k: v for k, v in counts.items() if v} }; best config: {path}")
    return path


def _write_parent(run_id: str, path: Path, tags: dict[str, str]) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    client.log_artifact(run_id, str(path))
    for k, v in tags.items():
        client.set_tag(run_id, k, v)


def _retry(fn, attempts: int = 5) -> None:  # noqa: ANN001 - a callable
    """Call ``fn``, retrying a tracking-server write that lost a race with another worker."""
    import time

    from mlflow.exceptions import MlflowException

    for i in range(attempts):
        try:
            return fn()
        except MlflowException:
            if i == attempts - 1:
                raise
            time.sleep(0.2 * (i + 1))


def sweep_main(argv: Sequence[str]) -> None:
    """``clinfuse sweep``: run Optuna trials of a sweep file over stacked configs."""
    p = argparse.ArgumentParser(prog="clinfuse sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="config file to stack (repeatable)")
    p.add_argument("--sweep", required=True, help="the sweep file (search space, metric, direction)")
    p.add_argument("--n-trials", type=int, default=20)
    p.add_argument("--storage", default=os.environ.get("CLINFUSE_OPTUNA_STORAGE"),
                   help="SQLAlchemy URL (default sqlite:///optuna.db in the working directory)")
    p.add_argument("--out", default="sweeps", help="folder for trial configs and best_config.yaml")
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT_S, help="seconds between trial heartbeats")
    a, extra = p.parse_known_args(list(argv))
    # each trial hands LightningCLI its arguments in-process, as intended; its sys.argv warning is noise
    warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter.*")
    if a.n_trials < 1:
        p.error("--n-trials must be >= 1")
    run_sweep(SweepSpace.load(a.sweep), a.config, a.n_trials, a.storage, a.out, extra, a.heartbeat)
