"""``mlflow ui`` on the store ``clinfuse fit`` writes shows the run, its metrics and artifacts."""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from clinfuse.experiments.cli import cli_main

REPO = Path(__file__).resolve().parents[2]


def test_mlflow_ui_lists_the_fit_run(synthetic_cohort, tmp_path, monkeypatch, serve):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cli_main(["fit", "--config", str(REPO / "experiments" / "quickstart.yaml"), "--data.root", str(synthetic_cohort),
              "--data.synth_if_missing=false", "--data.batch_size=32", "--data.max_patches=32",
              "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])
    exe = Path(sys.executable).parent / "mlflow"
    base = serve(lambda port: [str(exe), "ui", "--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1",
                               "--port", str(port)], "/health")
    api = f"{base}/api/2.0/mlflow"
    assert requests.get(f"{base}/", timeout=10).status_code == 200  # the web page
    exp = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "clinfuse"}, timeout=10).json()
    runs = requests.post(f"{api}/runs/search", json={"experiment_ids": [exp["experiment"]["experiment_id"]]},
                         timeout=10).json()["runs"]
    assert len(runs) == 1
    run = runs[0]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert 0.0 <= metrics["test/c_index"] <= 1.0 and "val/c_index" in metrics
    history = requests.get(f"{api}/metrics/get-history", timeout=10,
                           params={"run_id": run["info"]["run_id"], "metric_key": "val/c_index"}).json()
    assert len(history["metrics"]) == 2  # one point per epoch, as the ui plots them
    files = requests.get(f"{api}/artifacts/list", params={"run_id": run["info"]["run_id"]}, timeout=10).json()
    assert {"config.yaml", "figures"} <= {f["path"] for f in files["files"]}
