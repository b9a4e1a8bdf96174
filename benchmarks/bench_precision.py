"""What ``Prognosis(precision="bf16-mixed")`` changes: the predictions, the C-index and the speed.

    python benchmarks/bench_precision.py --model PREDICTOR --root COHORT [--split test] [--reps 3]
    python benchmarks/bench_precision.py [--patients 2000 --epochs 12]   # trains the quickstart architecture first

Scores the cohort folder's split with the same predictor in ``32-true`` and ``bf16-mixed``
(``Prognosis.predict_cohort``, batches of 256, no contributions) and prints a table: Harrell
C-index of each, the largest and the 99th-percentile absolute risk difference (also in units of
the risks' sd), the Spearman correlation of the two risk rankings, the largest difference in
S(t) at the horizons, and patients/s of each (median of ``--reps`` runs, this process's torch
threads). The C-index of each precision comes with the same patients and labels, so their
difference is the precision's effect alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from clinfuse.experiments.cpu_allocator import keep_freed_memory
from clinfuse.experiments.inference_precision import native_bf16_cpu
from clinfuse.experiments.metrics import harrell_c_index
from clinfuse.experiments.prognosis import Prognosis

HORIZONS = (30.0, 90.0, 365.0)


def score(prog: Prognosis, root: Path, split: str, reps: int):
    """The predictions frame and the median seconds of ``reps`` timed runs (after one warm-up)."""
    split = None if split == "all" else split
    frame = prog.predict_cohort(root, split=split, horizons=HORIZONS, contributions=False, show_progress=False)
    seconds = []
    for _ in range(reps):
        t0 = time.perf_counter()
        prog.predict_cohort(root, split=split, horizons=HORIZONS, contributions=False, show_progress=False)
        seconds.append(time.perf_counter() - t0)
    return frame, float(np.median(seconds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="predictor folder or MLflow model URI (default: train one)")
    p.add_argument("--root", help="cohort folder (with --model)")
    p.add_argument("--split", default="test", help="a split of splits.csv, or 'all'")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--patients", type=int, default=2000, help="without --model: synthetic cohort size")
    p.add_argument("--epochs", type=int, default=12, help="without --model: training epochs")
    a = p.parse_args()
    if (a.model is None) != (a.root is None):
        p.error("give --model and --root together, or neither")
    keep_freed_memory()
    if a.model is None:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_prognosis import train_predictor

        work = Path(tempfile.mkdtemp(prefix="clinfuse-precision-"))
        trained, _, root = train_predictor(work, a.patients, a.epochs)
        model = trained.save(work / "predictor")
    else:
        model, root = a.model, Path(a.root)
    rows, frames = [], {}
    for precision in ("32-true", "bf16-mixed"):
        prog = Prognosis.load(model, precision=precision)
        frame, seconds = score(prog, root, a.split, a.reps)
        frames[precision] = frame.set_index("patient_id")
        c = harrell_c_index(frame["risk"].to_numpy(), frame["time"].to_numpy(), frame["event"].to_numpy())
        rows.append((precision, c, len(frame) / seconds))
    ref, low = frames["32-true"], frames["bf16-mixed"].loc[frames["32-true"].index]
    diff = (low["risk"] - ref["risk"]).abs().to_numpy()
    sd = ref["risk"].std()
    surv = [c for c in ref.columns if c.startswith("survival_at_")]
    s_diff = float((low[surv] - ref[surv]).abs().to_numpy().max()) if surv else float("nan")
    print(f"\n{len(ref)} patients of split {a.split!r}; torch threads {torch.get_num_threads()}; "
          f"native bfloat16 on this CPU: {native_bf16_cpu()}")
    print("\n| precision | Harrell C-index | patients/s (predict_cohort, batches of 256) |\n|---|---|---|")
    for precision, c, rate in rows:
        print(f"| {precision} | {c:.4f} | {rate:.0f} |")
    print(f"\nbf16-mixed vs 32-true: |risk difference| max {diff.max():.4g} ({diff.max() / sd:.3g} sd of the risks), "
          f"99th percentile {np.quantile(diff, 0.99):.4g}; Spearman of the risks {spearmanr(ref['risk'], low['risk']).statistic:.5f}; "
          f"|S(t) difference| at {list(HORIZONS)} max {s_diff:.4g}; C-index difference {rows[1][1] - rows[0][1]:+.4f}")


if __name__ == "__main__":
    main()
