"""Train every fusion head on the synthetic cohort with the same encoders and budget; compare.

    python benchmarks/bench_heads.py [--patients 1000] [--epochs 6] [--heads transformer cascaded ...]

Table 1, per head and task (survival C-index, binary AUROC) on the test split: with all
modalities, and with MNAR missingness at test time (each non-tabular modality removed with a
probability that grows with the patient's true risk, mean rate --mnar-rate), next to the oracle
(full information); train patients/s; inference latency for one batch of 64; peak RSS of the
training process (fit included).
Table 2, per head: forward+backward time and peak RSS on random tokens as the number of
modalities grows 2 -> 6 (64 tokens each) and the tokens per modality grow 16 -> 1024 (3 modalities).
Each measurement runs in a fresh process so peak RSS belongs to it alone.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

TASK_METRIC = {"survival": "c_index", "binary": "auroc"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_and_evaluate(head: str, task: str, root: str, epochs: int, mnar_rate: float, seed: int) -> dict:
    """Fit one head on one task; evaluate with all modalities and with test-time MNAR removal."""
    import lightning.pytorch as pl
    import torch

    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.datasets.missingness import draw_drops, remove_modalities
    from clinfuse.experiments.metrics import classification_metrics, harrell_c_index
    from clinfuse.experiments.module import ClinFuseModule
    from clinfuse.fusion.registry import FUSION_HEADS

    pl.seed_everything(seed, verbose=False)
    dm = ClinicalDataModule(root=root, batch_size=64, max_patches=256)
    model = ClinFuseModule(spec=dm.spec, d_model=64, fusion=FUSION_HEADS[head], task=task, modality_dropout=0.3)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    dm.prepare_data()
    dm.setup("fit")  # load + fit preprocessing outside the timed part
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - t0
    n_train = len(dm.cohort.splits["train"])

    model.eval()
    oracle = dm.oracle.set_index("patient_id")
    labels = dm.cohort.labels.set_index("patient_id")
    rng = np.random.default_rng(seed)
    outs = {"all": [], "mnar": []}
    ids: list[str] = []
    latency = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            pid = list(batch["patient_id"])
            ids += pid
            if len(pid) == 64:
                t0 = time.perf_counter()
                model(batch["inputs"])
                latency.append(time.perf_counter() - t0)
            outs["all"].append(model(batch["inputs"])[0])
            risk = oracle.loc[pid, "risk_full"].to_numpy()
            drops = {m: torch.as_tensor(draw_drops("mnar", mnar_rate, len(pid), rng, mnar_driver=risk))
                     for m in batch["inputs"] if m != "tabular"}
            outs["mnar"].append(model(remove_modalities(batch["inputs"], drops))[0])
    y = labels.loc[ids]
    row = {"head": head, "task": task, "fit_s": fit_s, "train_pps": n_train * epochs / fit_s,
           "latency64_ms": 1000 * float(np.median(latency)) if latency else float("nan"),
           "peak_rss_mb": _peak_rss_mb()}
    for name, chunks in outs.items():
        out = torch.cat(chunks)
        if task == "survival":
            row[name] = harrell_c_index(out.numpy(), y["time"].to_numpy(), y["event"].to_numpy())
        else:
            row[name] = classification_metrics(out, torch.as_tensor(y["binary"].to_numpy()), "binary")["auroc"]
    o = oracle.loc[ids]
    if task == "survival":
        row["oracle"] = harrell_c_index(o["risk_full"].to_numpy(), y["time"].to_numpy(), y["event"].to_numpy())
    else:
        p = np.clip(o["prob_full"].to_numpy(), 1e-7, 1 - 1e-7)
        row["oracle"] = classification_metrics(torch.as_tensor(np.log(p / (1 - p))),
                                               torch.as_tensor(y["binary"].to_numpy()), "binary")["auroc"]
    return row


def scaling(head: str, n_modalities: int, n_tokens: int, reps: int = 3) -> dict:
    """Forward + backward time of one head on random tokens (batch 64, D 64, 70% real tokens)."""
    import torch

    from clinfuse.encoders.base import ModalityTokens
    from clinfuse.fusion.registry import FUSION_HEADS

    torch.manual_seed(0)
    base = _peak_rss_mb()
    names = [f"m{i}" for i in range(n_modalities)]
    fusion = FUSION_HEADS[head](64, names).train()
    inputs = {}
    for m in names:
        mask = torch.rand(64, n_tokens) < 0.7
        mask[:, 0] = True
        inputs[m] = ModalityTokens.from_tokens(torch.randn(64, n_tokens, 64), mask)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        out = fusion(inputs)
        loss = out.pooled.square().mean() + (out.aux_loss if out.aux_loss is not None else 0.0)
        loss.backward()
        times.append(time.perf_counter() - t0)
    return {"head": head, "M": n_modalities, "N": n_tokens, "ms": 1000 * float(np.median(times[1:])),
            "peak_rss_mb": _peak_rss_mb() - base}


def _in_fresh_process(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    from clinfuse.fusion.registry import FUSION_HEADS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--mnar-rate", type=float, default=0.5)
    p.add_argument("--heads", nargs="*", default=sorted(FUSION_HEADS))
    p.add_argument("--tasks", nargs="*", default=["survival", "binary"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    a = p.parse_args()

    if not a.skip_training:
        from clinfuse.datasets.synthetic import generate_cohort

        root = Path(tempfile.mkdtemp(prefix="clinfuse-heads-")) / "cohort"
        full = {m: {"mechanism": "mcar", "rate": 0.0} for m in ("tabular", "timeseries", "ecg", "notes", "wsi", "genomics")}
        generate_cohort(root, n_patients=a.patients, seed=a.seed, missingness=full, wsi_patches=(200, 800),
                        show_progress=False)
        print(f"\n{a.patients} patients, all modalities present in training, {a.epochs} epochs, modality dropout 0.3")
        print("| head | task | metric | all modalities | MNAR at test | oracle (full) | train patients/s | latency b=64 (ms) | peak RSS (MB) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for head in a.heads:
            for task in a.tasks:
                r = _in_fresh_process(train_and_evaluate, head, task, str(root), a.epochs, a.mnar_rate, a.seed)
                print(f"| {head} | {task} | {TASK_METRIC[task]} | {r['all']:.4f} | {r['mnar']:.4f} | {r['oracle']:.4f} "
                      f"| {r['train_pps']:.0f} | {r['latency64_ms']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)

    if not a.skip_scaling:
        print("\nforward+backward, batch 64, D 64 (median ms / peak RSS growth over the idle process, MB)")
        grid = [(m, 64) for m in (2, 4, 6)] + [(3, n) for n in (16, 128, 1024)]
        print("| head | " + " | ".join(f"M={m} N={n}" for m, n in grid) + " |")
        print("|---|" + "---|" * len(grid))
        for head in a.heads:
            cells = [_in_fresh_process(scaling, head, m, n) for m, n in grid]
            print(f"| {head} | " + " | ".join(f"{c['ms']:.0f} ms / {c['peak_rss_mb']:.0f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
