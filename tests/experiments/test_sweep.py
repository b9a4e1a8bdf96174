"""``clinfuse sweep``: sweep files, trials as nested MLflow runs, shared storage, resumable studies."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from clinfuse.experiments.cli import cli_main
from clinfuse.experiments.sweep import make_storage, run_sweep
from clinfuse.experiments.sweep_space import SweepSpace

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
CLINFUSE = Path(sys.executable).with_name("clinfuse")


def _fast_args(cohort: Path) -> list[str]:
    return [f"--data.root={cohort}", "--data.synth_if_missing=false", "--data.modalities=[tabular,genomics]",
            "--data.batch_size=32", "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]


def _sweep_file(tmp_path: Path, name: str = "tiny", epochs: int = 2) -> Path:
    doc = {
        "study_name": name, "metric": "val/c_index", "direction": "maximize",
        "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
        "fixed": {"trainer.max_epochs": epochs},
        "space": {
            "model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "model.d_model": {"type": "categorical", "choices": [16, 32]},
            "fusion": {"type": "config", "choices": ["experiments/configs/fusion/masked_mean.yaml",
                                                     "experiments/configs/fusion/late.yaml"]},
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    "doc,match",
    [
        ({"metric": "val/c_index"}, "missing key 'space'"),
        ({"metric": "m", "space": {"model.lr": {"type": "float", "low": 1, "high": 0.1}}}, "low must be < high"),
        ({"metric": "m", "space": {"model.lr": {"type": "float", "low": 0, "high": 1, "log": True}}}, "log scale"),
        ({"metric": "m", "space": {"model.lr": {"type": "gauss"}}}, "space.model.lr needs 'type'"),
        ({"metric": "m", "space": {"x": {"type": "categorical", "choices": [{"a": 1}]}}}, "type: config"),
        ({"metric": "m", "direction": "up", "space": {"x": {"type": "categorical", "choices": [1]}}}, "direction"),
        ({"metric": "m", "spaces": {}}, r"unknown key\(s\) \['spaces'\]"),
        ({"metric": "val/task_loss", "direction": "maximize", "space": {"x": {"type": "categorical", "choices": [1]}}},
         "direction maximize for metric 'val/task_loss', where lower is better"),
    ],
)
def test_bad_sweep_files_are_rejected_naming_the_key(tmp_path, doc, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=match):
        SweepSpace.load(path)


def test_every_shipped_sweep_file_parses_and_its_configs_exist():
    files = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))
    assert files
    for path in files:
        space = SweepSpace.load(path)
        study = optuna.create_study(direction=space.direction)
        configs, values = space.suggest(study.ask())
        assert all(Path(c).is_file() for c in configs)
        assert set(space.fixed) <= set(values)


def test_sweep_trials_are_nested_mlflow_runs_and_best_config_fits(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = SweepSpace.load(_sweep_file(tmp_path))
    study = run_sweep(space, [str(QUICKSTART)], n_trials=2, extra=_fast_args(synthetic_cohort))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and (tmp_path / "optuna.db").exists()
    assert 0.0 <= study.best_value <= 1.0
    # MLflow: one parent run for the study, each trial a child run carrying its sampled params
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("clinfuse").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("clinfuse.sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["optuna.trial"] for r in children) == ["0", "1"]
    best_child = next(r for r in children if r.info.run_id == parent.data.tags["best_run_id"])
    assert float(best_child.data.params["lr"]) == pytest.approx(study.best_params["model.lr"])
    assert "val/c_index" in best_child.data.metrics
    # each run carries the value Optuna compared (the best epoch's), so MLflow ranks runs like the sweep
    for r in children:
        trial = study.trials[int(r.data.tags["optuna.trial"])]
        assert r.data.metrics["best/val/c_index"] == pytest.approx(trial.value)
    # the best config: written to disk and to the parent run, and ready for `clinfuse fit`
    best = tmp_path / "sweeps" / "tiny" / "best_config.yaml"
    assert best.exists() and "best_config.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    cfg = yaml.safe_load(best.read_text())
    assert cfg["model"]["lr"] == pytest.approx(study.best_params["model.lr"])
    assert best.read_text().startswith(f"# best trial {study.best_trial.number} of study tiny: best val/c_index (validation)")
    cli = cli_main(["fit", "--config", str(best), "--trainer.fast_dev_run=1", "--trainer.logger=false"])
    assert cli.trainer.state.finished and cli.model.hparams.lr == pytest.approx(study.best_params["model.lr"])


def _worker(tmp_path: Path, cohort: Path, sweep: Path, storage: str, n_trials: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [str(CLINFUSE), "sweep", "--config", str(QUICKSTART), "--sweep", str(sweep), "--n-trials", str(n_trials),
            "--storage", storage, *extra, *_fast_args(cohort)]
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_two_workers(tmp_path: Path, cohort: Path, storage: str) -> optuna.Study:
    sweep = _sweep_file(tmp_path, "shared")
    workers = [_worker(tmp_path, cohort, sweep, storage, 1) for _ in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=600)
        assert w.returncode == 0, out[-3000:]
    return optuna.load_study(study_name="shared", storage=storage)


def test_two_worker_processes_share_one_study(synthetic_cohort, tmp_path):
    study = _run_two_workers(tmp_path, synthetic_cohort, f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_killed_worker_leaves_a_resumable_study(synthetic_cohort, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep = _sweep_file(tmp_path, "killed", epochs=100_000)  # never finishes before it is killed
    victim = _worker(tmp_path, synthetic_cohort, sweep, storage, 1, "--heartbeat", "1")
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            trials = optuna.load_study(study_name="killed", storage=storage).trials
        except KeyError:  # the study does not exist yet
            trials = []
        if trials and trials[0].state == optuna.trial.TrialState.RUNNING:
            break
        time.sleep(1)
    else:
        victim.kill()
        pytest.fail("the worker never started a trial")
    time.sleep(3)  # a few heartbeats
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(5)  # the heartbeat goes stale (grace = 4 heartbeats)
    # resuming: the next worker marks the stale trial FAIL and re-queues its parameters
    storage_obj = make_storage(storage, heartbeat=1)
    study = optuna.load_study(study_name="killed", storage=storage_obj)
    optuna.storages.fail_stale_trials(study)
    trials = study.trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert len(trials) == 2 and trials[1].state == optuna.trial.TrialState.WAITING
    assert trials[1].params == trials[0].params  # the retry keeps the killed trial's parameters


@pytest.mark.slow
def test_two_workers_against_a_real_postgresql_server(synthetic_cohort, tmp_path):
    pytest.importorskip("psycopg")
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed (Debian: apt install postgresql)")
    # the server refuses to run as root: then run it as the Debian package's postgres user
    as_user: list[str] = []
    pg_dir = Path(tempfile.mkdtemp(prefix="clinfuse-pg-"))  # outside pytest's 0700 tmp root
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(pg_dir, pw.pw_uid, pw.pw_gid)
    data = pg_dir / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "clinfuse", "--auth=trust"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = f"-p {port} -k {pg_dir} -h 127.0.0.1"
    pg_ctl = [*as_user, pg_ctl]
    subprocess.run([*pg_ctl, "-D", str(data), "-o", opts, "-l", str(pg_dir / "pg.log"), "-w", "start"], check=True, capture_output=True)
    try:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "clinfuse", "optuna"], check=True, capture_output=True)
        study = _run_two_workers(tmp_path, synthetic_cohort, f"postgresql://clinfuse@127.0.0.1:{port}/optuna")
        assert sorted(t.number for t in study.trials) == [0, 1]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    finally:
        subprocess.run([*pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


def test_storage_creation_race_on_a_server_database_is_retried(monkeypatch):
    """Two workers creating Optuna's tables at once on a fresh PostgreSQL: the loser's unique
    violation (seen in CI) is retried, not fatal; a persistent error still surfaces."""
    import clinfuse.experiments.sweep as sweep_module
    from sqlalchemy.exc import IntegrityError

    calls = []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise IntegrityError("CREATE TABLE studies", {}, Exception("duplicate key value violates unique constraint"))
        return "storage"

    monkeypatch.setattr(sweep_module, "RDBStorage", racing)
    monkeypatch.setattr("time.sleep", lambda s: None)
    assert make_storage("postgresql://u@h/db") == "storage" and len(calls) == 2

    def always(url, **kwargs):
        raise IntegrityError("CREATE TABLE studies", {}, Exception("broken"))

    monkeypatch.setattr(sweep_module, "RDBStorage", always)
    with pytest.raises(IntegrityError):
        make_storage("postgresql://u@h/db")


# --- the parent run ends with the sweep ----------------------------------------------------------


def _parent_status(tmp_path: Path, study_name: str) -> str:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("clinfuse").experiment_id],
                              filter_string=f"tags.`optuna.study` = '{study_name}' and tags.`clinfuse.sweep` = 'parent'")
    assert len(runs) == 1
    return runs[0].info.status


def _quick_objective(monkeypatch, fail_on: int | None = None, error: type[BaseException] = TypeError) -> None:
    """Trials that train nothing: a sampled value as the score (``fail_on``: that trial raises ``error``)."""
    import clinfuse.experiments.sweep as sweep_module

    def call(self, trial):
        if trial.number == fail_on:
            raise error("boom")
        trial.set_user_attr("config", "model:\n  lr: 0.001\n")
        return trial.suggest_float("model.lr", 1e-4, 1e-2, log=True)

    monkeypatch.setattr(sweep_module.Objective, "__call__", call)


def test_sweep_parent_run_is_finished_at_the_end_and_reopened_on_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _quick_objective(monkeypatch)
    space = SweepSpace.load(_sweep_file(tmp_path, "ends"))
    run_sweep(space, [str(QUICKSTART)], n_trials=2)
    assert _parent_status(tmp_path, "ends") == "FINISHED"
    # resuming the study reopens the same parent run while trials run, and finishes it again
    seen = []
    monkeypatch.setattr(optuna.Study, "optimize", lambda self, *a, **k: seen.append(_parent_status(tmp_path, "ends")))
    study = run_sweep(space, [str(QUICKSTART)], n_trials=1)
    assert seen == ["RUNNING"] and len(study.trials) == 2
    assert _parent_status(tmp_path, "ends") == "FINISHED"


def test_sweep_parent_run_is_failed_when_the_sweep_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _quick_objective(monkeypatch, fail_on=1)  # a TypeError is no failed trial: it ends the sweep
    with pytest.raises(TypeError, match="boom"):
        run_sweep(SweepSpace.load(_sweep_file(tmp_path, "raises")), [str(QUICKSTART)], n_trials=3)
    assert _parent_status(tmp_path, "raises") == "FAILED"


def test_sweep_parent_run_stays_running_while_another_worker_has_a_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _quick_objective(monkeypatch)
    space = SweepSpace.load(_sweep_file(tmp_path, "shared_parent"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    other = optuna.create_study(study_name="shared_parent", storage=storage, direction="maximize")
    running = other.ask()  # another worker's trial, still RUNNING
    running.set_user_attr("config", "model:\n  lr: 0.002\n")
    run_sweep(space, [str(QUICKSTART)], n_trials=1, storage=storage)
    assert _parent_status(tmp_path, "shared_parent") == "RUNNING"
    other.tell(running, 0.5)  # that worker's trial ends; its run_sweep would then finish the parent
    run_sweep(space, [str(QUICKSTART)], n_trials=1, storage=storage)
    assert _parent_status(tmp_path, "shared_parent") == "FINISHED"


def test_a_lower_is_better_metric_defaults_to_minimize(tmp_path):
    path = tmp_path / "ibs.yaml"
    path.write_text(yaml.safe_dump({"metric": "val/ibs", "space": {"x": {"type": "categorical", "choices": [1]}}}))
    assert SweepSpace.load(path).direction == "minimize"
    path.write_text(yaml.safe_dump({"metric": "val/c_index", "space": {"x": {"type": "categorical", "choices": [1]}}}))
    assert SweepSpace.load(path).direction == "maximize"


def test_the_sweeps_checkpoint_follows_its_direction_even_on_the_configs_own_monitor(tmp_path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from clinfuse.experiments.sweep import _monitor_sweep_metric

    trainer = Trainer(callbacks=[ModelCheckpoint(dirpath=tmp_path, monitor="val/task_loss", mode="max")], logger=False,
                      default_root_dir=tmp_path, enable_progress_bar=False)
    _monitor_sweep_metric(trainer, "val/task_loss", "minimize")
    assert (trainer.checkpoint_callback.monitor, trainer.checkpoint_callback.mode) == ("val/task_loss", "min")
    kept = trainer.checkpoint_callback
    _monitor_sweep_metric(trainer, "val/task_loss", "minimize")  # already right: left as it is
    assert trainer.checkpoint_callback is kept
    assert sum(isinstance(c, ModelCheckpoint) for c in trainer.callbacks) == 1


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_seeded_workers_draw_per_trial_points(tmp_path, sampler):
    """Trial n is drawn with seed + n: one worker is reproducible; workers that start together on
    one study (each sees no trial yet) and a restarted worker draw new points, not the first ones again."""
    path = _sweep_file(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["sampler"] = {"name": sampler, "seed": 3}
    path.write_text(yaml.safe_dump(doc))
    space = SweepSpace.load(path)

    def study(name: str) -> optuna.Study:
        return optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path / name}", direction="maximize",
                                   sampler=space.make_sampler(), load_if_exists=True)

    def draw(s: optuna.Study, value: float = 0.5) -> dict:
        trial = s.ask()
        _, values = space.suggest(trial)
        s.tell(trial, value)
        return values

    worker = study("a.db")
    solo = [draw(worker, v) for v in (0.1, 0.9, 0.4)]
    again = study("b.db")  # another storage, the same seed
    assert [draw(again, v) for v in (0.1, 0.9, 0.4)] == solo  # the file's seed reproduces a worker
    one, two = study("c.db"), study("c.db")  # two workers start before either has a trial
    first, second = one.ask(), two.ask()
    assert space.suggest(first)[1] != space.suggest(second)[1]
    restarted = study("b.db")  # three trials are there already: its next trial is the fourth
    assert draw(restarted) not in solo


def test_ctrl_c_during_a_trial_fails_the_trial_and_kills_the_parent_run(synthetic_cohort, tmp_path, monkeypatch):
    # Lightning answers Ctrl-C by marking the trainer interrupted and calling sys.exit(1)
    from lightning.pytorch import Trainer
    from lightning.pytorch.trainer.states import TrainerStatus

    def interrupted_fit(self, *args, **kwargs):
        self.state.status = TrainerStatus.INTERRUPTED
        raise SystemExit(1)

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(Trainer, "fit", interrupted_fit)
    space = SweepSpace.load(_sweep_file(tmp_path, "ctrlc", epochs=1))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(space, [str(QUICKSTART)], n_trials=2, extra=_fast_args(synthetic_cohort))
    assert _parent_status(tmp_path, "ctrlc") == "KILLED"
    study = optuna.load_study(study_name="ctrlc", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]  # told, not left RUNNING
