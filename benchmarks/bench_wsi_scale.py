"""Scale check: one training epoch over 10,000 patients with 1,000-patch WSI bags, bags read lazily.

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_wsi_scale.py                       # the issue's scale
    /work/venv/bin/python benchmarks/bench_wsi_scale.py --patients 500        # a quick look

It writes a plain cohort folder (``docs/formats.md``): ``labels.parquet`` (time, event),
``splits.csv`` (all but 2% train), ``wsi/slides.csv`` and one CLAM-style ``wsi/<id>.h5`` per
patient (``features`` (P, F), ``coords`` (P, 2)). Default F = 192 in float16: 10,000 x 1,000 x 192 x
2 bytes = 3.84 GB on disk (F = 384 float32 would be 15.4 GB). Features are slices of one random
pool, so writing costs disk I/O, not random number generation.

Then ``Trainer.fit`` runs one epoch (no validation) of a WSI-only ``ClinFuseModule`` (ABMIL
encoder, d_model 32, masked-mean fusion, Cox loss) with ``max_patches`` = the bag size, so every
patch of every bag is read once. It prints a table: write time, epoch time, patients/s, the
process's peak RSS (``ru_maxrss``, workers included) next to the total bytes of all bags. The
generated data are deleted at the end unless ``--keep``. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd


def write_cohort(root: Path, n_patients: int, n_patches: int, dim: int, dtype: str, seed: int) -> int:
    """Write the cohort folder; returns the total bytes of the feature arrays."""
    rng = np.random.default_rng(seed)
    (root / "wsi").mkdir(parents=True)
    ids = [f"w{i:05d}" for i in range(n_patients)]
    pool = rng.normal(size=(4 * n_patches, dim)).astype(dtype)  # (4P, F): each bag is a window of it
    offsets = rng.integers(0, 3 * n_patches, size=n_patients)
    coords = np.stack(np.meshgrid(np.arange(n_patches), [0]), -1).reshape(-1, 2).astype(np.int32) * 256
    for pid, off in zip(ids, offsets):
        with h5py.File(root / "wsi" / f"{pid}.h5", "w") as fh:
            fh.create_dataset("features", data=pool[off: off + n_patches])
            fh.create_dataset("coords", data=coords)
    split = np.where(rng.random(n_patients) < 0.98, "train", "test")
    split[:2] = ("val", "test")
    pd.DataFrame({"patient_id": ids, "time": rng.uniform(30, 3000, n_patients),
                  "event": rng.integers(0, 2, n_patients)}).to_parquet(root / "labels.parquet", index=False)
    pd.DataFrame({"patient_id": ids, "split": split}).to_csv(root / "splits.csv", index=False)
    pd.DataFrame({"patient_id": ids, "slide_id": ids, "path": [f"{p}.h5" for p in ids]}).to_csv(
        root / "wsi" / "slides.csv", index=False)
    return n_patients * n_patches * dim * np.dtype(dtype).itemsize


def peak_rss_bytes() -> int:
    """Peak resident memory of this process plus that of its largest finished child (KiB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) * 1024


def train_one_epoch(root: Path, args: argparse.Namespace) -> tuple[int, float, int, int]:
    """(train patients, epoch seconds, peak RSS before, peak RSS after) of one fit epoch."""
    import lightning.pytorch as pl

    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.encoders.abmil import ABMILEncoder
    from clinfuse.experiments.module import ClinFuseModule
    from clinfuse.fusion.registry import FUSION_HEADS

    pl.seed_everything(0, verbose=False)
    dm = ClinicalDataModule(root=str(root), modalities=["wsi"], batch_size=args.batch_size,
                            num_workers=args.num_workers, max_patches=args.patches)
    model = ClinFuseModule(spec=dm.spec, d_model=32, encoders={"wsi": ABMILEncoder},
                           fusion=FUSION_HEADS["masked_mean"], task="survival")
    n_train = len(dm.cohort.splits["train"])
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    before = peak_rss_bytes()
    start = time.perf_counter()
    trainer.fit(model, dm)
    return n_train, time.perf_counter() - start, before, peak_rss_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--patches", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--dir", default=None, help="parent folder of the generated data (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated cohort")
    args = parser.parse_args()

    total = args.patients * args.patches * args.dim * np.dtype(args.dtype).itemsize
    parent = Path(args.dir or tempfile.gettempdir())
    free = shutil.disk_usage(parent).free
    if free < 1.5 * total:
        need = 1.5 * total / 1e9
        raise SystemExit(f"{parent}: {free / 1e9:.1f} GB free, need ~{need:.1f} GB; lower --dim/--patients")
    root = Path(tempfile.mkdtemp(prefix="clinfuse_wsi_scale_", dir=parent)) / "cohort"
    try:
        start = time.perf_counter()
        write_cohort(root, args.patients, args.patches, args.dim, args.dtype, seed=0)
        write_s = time.perf_counter() - start
        disk = sum(p.stat().st_size for p in (root / "wsi").iterdir())
        n_train, epoch_s, rss_before, rss_peak = train_one_epoch(root, args)
    finally:
        if not args.keep:
            shutil.rmtree(root.parent, ignore_errors=True)
    rows = [
        ("patients x patches x F (dtype)", f"{args.patients} x {args.patches} x {args.dim} ({args.dtype})"),
        ("bag bytes (features) / on disk", f"{total / 1e9:.2f} GB / {disk / 1e9:.2f} GB"),
        ("write time", f"{write_s:.1f} s"),
        ("train patients, batch size, workers", f"{n_train}, {args.batch_size}, {args.num_workers}"),
        ("epoch time", f"{epoch_s:.1f} s"),
        ("patients / s", f"{n_train / epoch_s:.0f}"),
        ("peak RSS before fit / after epoch", f"{rss_before / 1e9:.2f} GB / {rss_peak / 1e9:.2f} GB"),
        ("peak RSS / bag bytes", f"{rss_peak / total:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'quantity':<{width}} | value\n{'-' * width}-+-{'-' * 30}")
    for key, value in rows:
        print(f"{key:<{width}} | {value}")


if __name__ == "__main__":
    main()
