"""Fixtures of the experiments tests: a local HTTP server started as a subprocess, and a small trained predictor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[..., str]]:
    """``serve(command, ready_path, env=None, cwd=tmp_path) -> base URL``: start ``command(port)`` on a
    free port (in its own process group, this interpreter's scripts first on PATH), wait until
    ``base URL + ready_path`` answers 200 (120 s at most; fails with the server's log if it exits),
    and stop it when the test ends."""
    import requests

    procs: list[tuple[subprocess.Popen, object]] = []

    def start(command: Callable[[int], Sequence[str]], ready_path: str, env: dict | None = None,
              cwd: Path | None = None) -> str:
        port = _free_port()
        base, cmd = f"http://127.0.0.1:{port}", list(command(port))
        ready_url = base + ready_path
        scripts = Path(sys.executable).parent
        env = {**os.environ, **(env or {}), "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
        log_path = tmp_path / f"server-{len(procs)}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(cmd, cwd=cwd or tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append((proc, log))
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if requests.get(ready_url, timeout=2).status_code == 200:
                    return base
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"{cmd[0]} did not answer {ready_url} within 120 s"
            time.sleep(1)

    yield start
    for proc, log in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _train_predictor(root, work, modalities, epochs: int = 1, data: dict | None = None, **model_kwargs):
    """A small model trained on ``root`` (seed 0, CPU, no logger) and its predictor.

    Returns ``(datamodule, Prognosis)``; ``data`` goes to ``ClinicalDataModule``, the rest to
    ``ClinFuseModule`` (``d_model`` 32, ``n_classes`` and ``n_causes`` from the data, unless given).
    """
    import lightning

    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.experiments.module import ClinFuseModule
    from clinfuse.experiments.prognosis import Prognosis

    dm = ClinicalDataModule(str(root), modalities=list(modalities), **(data or {}))
    lightning.seed_everything(0, verbose=False)
    # d_model 32 by default; classes and causes from the data, as the CLI links them
    model = ClinFuseModule(spec=dm.spec, **{"d_model": 32, "n_classes": dm.n_classes, "n_causes": dm.n_causes, **model_kwargs})
    trainer = lightning.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                                enable_model_summary=False, default_root_dir=work)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(work / "model.ckpt")
    return dm, Prognosis.from_training(work / "model.ckpt", dm)


@pytest.fixture(scope="session")
def train_predictor():
    """``train_predictor(root, work, modalities, epochs=1, data=None, **model_kwargs)`` ->
    ``(datamodule, Prognosis)``: a small model trained for one test (see ``_train_predictor``)."""
    return _train_predictor


@pytest.fixture(scope="session")
def trained_prognosis(synthetic_cohort, tmp_path_factory):
    from clinfuse.experiments.cohort_records import records_from_cohort

    dm, prog = _train_predictor(synthetic_cohort, tmp_path_factory.mktemp("checks"), ["tabular", "timeseries", "genomics"])
    readers = dm.cohort.readers
    pid = next(p for p in dm.cohort.splits["test"]
               if readers["tabular"].get(p) is not None and readers["timeseries"].get(p) is not None)
    rec = records_from_cohort(synthetic_cohort, [pid])[0]
    record = {k: v for k, v in rec.items() if k in ("patient_id", "tabular", "timeseries", "genomics")}
    record["tabular"] = {k: v for k, v in record["tabular"].items() if v is not None}
    return prog, record
