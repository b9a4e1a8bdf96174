"""Time the quickstart (synthetic cohort, survival, all six modalities) and compare with the oracle.

    python benchmarks/bench_quickstart.py [--patients 2000] [--seed 0] [--workdir /tmp/clinfuse-bench]

Prints a table: generation time, fit+test time, test C-index, oracle C-indices, ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

from clinfuse.datasets.synthetic import generate_cohort
from clinfuse.experiments.cli import cli_main

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="/tmp/clinfuse-bench")
    p.add_argument("--extra", action="append", default=[],
                   help="one more `clinfuse fit` argument (repeatable), e.g. --extra=--trainer.max_epochs=5; any "
                        "option this script does not know is passed on too (--trainer.max_epochs=5)")
    a, passed_on = p.parse_known_args()
    a.extra += passed_on
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chdir(work)

    t0 = time.perf_counter()
    root = generate_cohort(work / "synthetic", n_patients=a.patients, seed=a.seed, show_progress=False)
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    cli = cli_main(["fit", "--config", str(QUICKSTART), "--data.root", str(root),
                    "--trainer.enable_progress_bar=false", *a.extra])
    t_fit = time.perf_counter() - t0
    m = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    from clinfuse.experiments.oracle import oracle_metrics

    o = oracle_metrics(cli.datamodule, "survival")
    c = m.get("test/c_index", float("nan"))
    rows = [
        ("patients", a.patients),
        ("torch threads", torch.get_num_threads()),
        ("generate cohort (s)", f"{t_gen:.1f}"),
        ("fit + test (s)", f"{t_fit:.1f}"),
        ("epochs run", cli.trainer.current_epoch),
        ("test C-index (model)", f"{c:.4f}"),
        ("test C-index (oracle, full data)", f"{o['c_index_full']:.4f}"),
        ("test C-index (oracle, observed modalities)", f"{o['c_index_observed']:.4f}"),
        ("model / oracle(full)", f"{c / o['c_index_full']:.3f}"),
        ("target", ">= 0.85 and < 300 s"),
    ]
    w = max(len(r[0]) for r in rows)
    print("\n| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k:<{w}} | {v} |")


if __name__ == "__main__":
    main()
