"""MEDS scale benchmark: a large MEDS event table -> cohort folder -> per-patient time-series arrays.

Target (issue #3): a 10 M-event MEDS table turns into per-patient irregular arrays at >= 2 M
events/s on 2 cores, with peak memory <= 2x the parquet size.

Stages, each in a fresh subprocess so its peak RSS is its own (``ru_maxrss``; the "added" column
subtracts the RSS measured after imports):

1. ``generate``: ``write_meds_fixture`` (vectorised) writes the MEDS dataset;
2. ``convert``: ``convert_meds`` (polars lazy scans + join on the labels, time filter);
3. ``reader``: ``TimeseriesReader`` read + ``fit`` on the train split + ``get`` of every patient.

Run::

    python benchmarks/bench_meds.py --events 10000000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

FIXED_ROWS = 8  # rows per subject besides the labs (static, birth, admission, diagnosis, notes, marker)


def _rss_mb() -> float:
    """Current resident set size (MiB), from /proc."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _size_mb(paths) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 2**20


def _stage(name: str, work: Path, events: int, per_subject: int) -> dict:
    """Run one stage in this process; return its measurements."""
    import polars as pl

    from clinfuse.datasets.meds import convert_meds
    from clinfuse.datasets.meds_fixture import write_meds_fixture
    from clinfuse.datasets.timeseries import TimeseriesReader

    src, out = work / "src", work / "cohort"
    base = _rss_mb()
    t = time.perf_counter()
    if name == "generate":
        n_subjects = max(1, events // (per_subject + FIXED_ROWS))
        write_meds_fixture(src, n_subjects, seed=0, n_events_per_subject=per_subject, n_train_shards=4)
        n = pl.scan_parquet(sorted((src / "data").rglob("*.parquet"))).select(pl.len()).collect().item()
        size = _size_mb((src / "data").rglob("*.parquet"))
    elif name == "convert":
        convert_meds(src, out, labels=src / "labels" / "tte.parquet", overwrite=True)
        n = pl.scan_parquet(sorted((src / "data").rglob("*.parquet"))).select(pl.len()).collect().item()
        size = _size_mb((src / "data").rglob("*.parquet"))
    else:
        cohort_ids = pl.read_parquet(out / "labels.parquet")["patient_id"].to_list()
        splits = pl.read_csv(out / "splits.csv")
        train = splits.filter(pl.col("split") == "train")["patient_id"].to_list()
        reader = TimeseriesReader(out, cohort_ids, max_events=10**9)
        t_read = time.perf_counter() - t
        reader.fit(train)
        t_fit = time.perf_counter() - t - t_read
        n = 0
        for pid in cohort_ids:
            item = reader.get(pid)
            n += 0 if item is None else len(item["times"])
        size = _size_mb([out / "timeseries.parquet"])
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"stage": name, "events": n, "seconds": wall, "events_per_s": n / wall, "parquet_mb": size,
           "peak_rss_mb": peak, "added_mb": peak - base}
    if name == "reader":
        res.update(read_s=t_read, fit_s=t_fit, get_s=wall - t_read - t_fit, patients=len(cohort_ids))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="rows of the MEDS event table")
    ap.add_argument("--per-subject", type=int, default=92, help="timed lab rows per subject")
    ap.add_argument("--threads", type=int, default=2, help="POLARS_MAX_THREADS / torch threads")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/clinfuse_bench_meds"))
    ap.add_argument("--stage", choices=["generate", "convert", "reader"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(_stage(args.stage, args.workdir, args.events, args.per_subject)))
        return
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    env = {**os.environ, "POLARS_MAX_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    for stage in ("generate", "convert", "reader"):
        cmd = [sys.executable, __file__, "--stage", stage, "--events", str(args.events),
               "--per-subject", str(args.per_subject), "--workdir", str(args.workdir)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"stage {stage} failed:\n{done.stderr}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"MEDS benchmark: {args.events:,} requested events, {args.threads} threads, load {os.getloadavg()[0]:.1f}")
    print(f"{'stage':<9} {'events':>11} {'seconds':>8} {'events/s':>11} {'parquet MB':>10} "
          f"{'peak RSS MB':>11} {'added MB':>9} {'added/parquet':>13}")
    for r in rows:
        print(f"{r['stage']:<9} {r['events']:>11,} {r['seconds']:>8.2f} {r['events_per_s']:>11,.0f} "
              f"{r['parquet_mb']:>10.1f} {r['peak_rss_mb']:>11.0f} {r['added_mb']:>9.0f} "
              f"{r['added_mb'] / r['parquet_mb']:>13.2f}")
    r = rows[-1]
    print(f"reader split: read {r['read_s']:.2f} s, fit {r['fit_s']:.2f} s, get (all {r['patients']:,} patients) "
          f"{r['get_s']:.2f} s")


if __name__ == "__main__":
    main()
