"""Lightning DDP works unchanged: `clinfuse fit` on 2 CPU processes (gloo) logs metrics of ALL patients.

Under DDP each rank sees only its shard of a split (Lightning installs a ``DistributedSampler``).
The epoch metrics are computed from predictions collected in ``CatMetric``s, whose ``compute()``
gathers every rank's shard; the epoch losses are synchronised by Lightning (``sync_dist``). The
test rebuilds, in one process, exactly the batches each rank saw and checks the logged values
against the whole split, and that a rank-local value would have been told apart.

Padding: with ``drop_last=False`` the ``DistributedSampler`` pads a split whose size is not a
multiple of the world size by repeating its first indices (``[0, 1, ..., n-1, 0]`` for odd ``n``
and 2 ranks, rank ``r`` taking every 2nd index from ``r``). The fixture's test (23) and val (25)
splits are odd, so under DDP their first patient is evaluated twice. The split sizes are fixed by
the cohort, so rather than hide this the reference reproduces it: it is built from
``torch.utils.data.DistributedSampler`` itself, i.e. all patients plus the one duplicate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from sksurv.metrics import concordance_index_censored
from torch.utils.data import DistributedSampler

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.datasets.dataset import ClinicalDataset, Collator
from clinfuse.experiments.module import ClinFuseModule

REPO = Path(__file__).resolve().parents[2]
WORLD, BATCH = 2, 8
MODALITIES = "[tabular, genomics]"


def _rank_batches(n: int, rank: int) -> list[list[int]]:
    """The index batches rank ``rank`` evaluates on a split of ``n`` patients (unshuffled)."""
    idx = list(DistributedSampler(range(n), num_replicas=WORLD, rank=rank, shuffle=False))
    return [idx[i : i + BATCH] for i in range(0, len(idx), BATCH)]


@torch.no_grad()
def _reference(model: ClinFuseModule, dm: ClinicalDataModule, split: str) -> dict[str, object]:
    """Per rank: risks, times, events and the batch-size-weighted epoch loss, from the rank's batches."""
    data = ClinicalDataset(dm.cohort, split, training=False)
    collate = Collator(dm.cohort.readers)
    ranks = []
    for rank in range(WORLD):
        risk, time, event, loss_sum, count = [], [], [], 0.0, 0
        for idx in _rank_batches(len(data), rank):
            batch = collate([data[i] for i in idx])
            out, _ = model(batch["inputs"])
            labels = batch["labels"]
            loss_sum += float(model.loss(out, labels)) * len(idx)
            count += len(idx)
            risk.append(model.risk(out).numpy())
            time.append(labels["time"].numpy())
            event.append(labels["event"].numpy())
        ranks.append({"risk": np.concatenate(risk), "time": np.concatenate(time), "event": np.concatenate(event),
                      "loss_sum": loss_sum, "count": count})
    return {"ranks": ranks, "n": len(data)}


def _c_index(parts: list[dict]) -> float:
    """Harrell's C (scikit-survival) over the concatenation of ``parts``."""
    risk, time, event = (np.concatenate([p[k] for p in parts]) for k in ("risk", "time", "event"))
    return float(concordance_index_censored(event.astype(bool), time, risk)[0])


@pytest.mark.slow  # 110-220 s on a loaded 2-core machine: two processes start, train, test and plot
def test_ddp_fit_on_two_cpu_processes_syncs_metrics_over_all_patients(synthetic_cohort, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MASTER_PORT", "LOCAL_RANK")}
    clinfuse = Path(sys.executable).parent / "clinfuse"  # the console script, as a user runs it
    args = [
        str(clinfuse), "fit", "--config", str(REPO / "experiments" / "quickstart.yaml"),
        "--data.root", str(synthetic_cohort), "--data.synth_if_missing=false", f"--data.modalities={MODALITIES}",
        f"--data.batch_size={BATCH}", "--model.d_model=16", "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
        "--trainer.strategy=ddp", "--trainer.accelerator=cpu", f"--trainer.devices={WORLD}",
    ]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "distributed_backend=gloo" in log and f"Starting with {WORLD} processes" in log, log[-4000:]

    # rank 0 alone logs: one MLflow run carrying the metrics contract
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("clinfuse").experiment_id])
    logged = run.data.metrics
    contract = {"train/loss", "train/c_index", "val/loss", "val/c_index", "val/uno_c_index", "val/td_auc",
                "test/loss", "test/c_index", "test/uno_c_index", "test/td_auc", "test/logrank_p"}
    assert contract <= set(logged), sorted(contract - set(logged))
    for name in ("val/c_index", "val/uno_c_index", "test/c_index", "test/uno_c_index", "test/td_auc"):
        assert 0.0 <= logged[name] <= 1.0, (name, logged[name])

    # one process, the same checkpoint (1 epoch: the only and best one), the batches each rank saw
    (ckpt,) = (tmp_path / "checkpoints").rglob("*.ckpt")
    model = ClinFuseModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "genomics"], batch_size=BATCH)
    for split in ("val", "test"):
        ref = _reference(model, dm, split)
        ranks = ref["ranks"]
        assert sum(r["count"] for r in ranks) == ref["n"] + (-ref["n"]) % WORLD  # every patient (+ padding)
        full = _c_index(ranks)
        assert logged[f"{split}/c_index"] == pytest.approx(full, abs=1e-6)
        # the check has power: a rank-local C-index differs from the gathered one
        for shard in ranks:
            assert abs(_c_index([shard]) - full) > 1e-6
        # the epoch loss is the batch-size-weighted mean over both ranks, not rank 0's alone
        loss_all = sum(r["loss_sum"] for r in ranks) / sum(r["count"] for r in ranks)
        assert logged[f"{split}/loss"] == pytest.approx(loss_all, rel=1e-5)
        assert abs(ranks[0]["loss_sum"] / ranks[0]["count"] - loss_all) > 1e-4 * abs(loss_all)
