"""MEDS scale benchmark: a large MEDS event table -> cohort folder -> per-patient time-series arrays.

Target (issue #3): a 10 M-event MEDS table turns into per-patient irregular arrays at >= 2 M
events/s on 2 cores, with peak memory <= 2x the parquet size.

Stages, each in a fresh subprocess so its memory is its own:

1. ``generate``: ``write_meds_fixture`` (vectorised) writes the MEDS dataset;
2. ``convert``: ``convert_meds`` (one batched pyarrow read of the shards, join on the labels, time
   filter, spill by sample bucket, then sorted passes of bounded memory; ``datasets/meds_events.py``);
3. ``reader``: read the labels' ids and the train split, then ``TimeseriesReader`` (building its
   on-disk event store: the cohort's ``.clinfuse_cache`` is deleted first) + ``fit`` on the train
   split + ``get`` of every patient;
4. ``reader-reuse``: the same with the event store of stage 3 reused (a second run on the cohort).

Memory, two columns:

- ``cold MB``: peak RSS (``ru_maxrss``) minus the RSS after imports: everything the stage's
  process adds, including the one-time cost of the libraries' first use (code pages of polars and
  pyarrow readers, thread pools; about 40-100 MB whatever the data size);
- ``data MB``: the stage first runs once on a tiny dataset (100 subjects) in the same process, then
  the peak is reset (Linux ``/proc/self/clear_refs`` ``5``) and re-read from ``VmHWM`` around the real run,
  minus the RSS just before it: the memory the data size costs. This is the figure the target is
  about (the ratio column uses it).

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


def _hwm_mb() -> float:
    """Peak resident set size since the last reset (MiB), from /proc."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _run(name: str, src: Path, out: Path) -> tuple[int, float, dict]:
    """One stage on ``src`` / ``out``; returns events, parquet MB and stage details."""
    import polars as pl

    from clinfuse.datasets.meds import convert_meds
    from clinfuse.datasets.timeseries import TimeseriesReader

    shards = sorted((src / "data").rglob("*.parquet"))
    if name == "convert":
        convert_meds(src, out, labels=src / "labels" / "tte.parquet", overwrite=True)
        n = pl.scan_parquet(shards).select(pl.len()).collect().item()
        return n, _size_mb(shards), {}
    if name == "reader":
        shutil.rmtree(out / ".clinfuse_cache", ignore_errors=True)
    cohort_ids = pl.read_parquet(out / "labels.parquet")["patient_id"].to_list()
    splits = pl.read_csv(out / "splits.csv")
    train = splits.filter(pl.col("split") == "train")["patient_id"].to_list()
    t_ids = time.perf_counter()
    reader = TimeseriesReader(out, cohort_ids, max_events=10**9)
    t_read = time.perf_counter()
    reader.fit(train)
    t_fit = time.perf_counter()
    n = 0
    for pid in cohort_ids:
        item = reader.get(pid)
        n += 0 if item is None else len(item["times"])
    return n, _size_mb([out / "timeseries.parquet"]), {
        "read_s": t_read - t_ids, "fit_s": t_fit - t_read, "get_s": time.perf_counter() - t_fit,
        "patients": len(cohort_ids)}


def _stage(name: str, work: Path, events: int, per_subject: int) -> dict:
    """Run one stage in this process; return its measurements."""
    import polars as pl

    from clinfuse.datasets.meds import convert_meds
    from clinfuse.datasets.meds_fixture import write_meds_fixture

    src, out = work / "src", work / "cohort"
    base = _rss_mb()
    if name == "generate":
        t = time.perf_counter()
        n_subjects = max(1, events // (per_subject + FIXED_ROWS))
        write_meds_fixture(src, n_subjects, seed=0, n_events_per_subject=per_subject, n_train_shards=4)
        wall = time.perf_counter() - t
        n = pl.scan_parquet(sorted((src / "data").rglob("*.parquet"))).select(pl.len()).collect().item()
        size, extra, data = _size_mb((src / "data").rglob("*.parquet")), {}, float("nan")
    else:
        tiny = work / f"warmup-{os.getpid()}"  # the same stage on 100 subjects: libraries warmed up
        write_meds_fixture(tiny / "src", 100, seed=1, n_events_per_subject=per_subject, n_train_shards=4)
        convert_meds(tiny / "src", tiny / "cohort", labels=tiny / "src" / "labels" / "tte.parquet")
        if name != "convert":
            _run("reader", tiny / "src", tiny / "cohort")
            _run("reader-reuse", tiny / "src", tiny / "cohort")
        shutil.rmtree(tiny)
        before = _rss_mb()
        _reset_peak()
        t = time.perf_counter()
        n, size, extra = _run(name, src, out)
        wall = time.perf_counter() - t
        data = _hwm_mb() - before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stage": name, "events": n, "seconds": wall, "events_per_s": n / wall, "parquet_mb": size,
            "peak_rss_mb": peak, "added_mb": peak - base, "data_mb": data, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="rows of the MEDS event table")
    ap.add_argument("--per-subject", type=int, default=92, help="timed lab rows per subject")
    ap.add_argument("--threads", type=int, default=2, help="POLARS_MAX_THREADS / torch threads")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/clinfuse_bench_meds"))
    ap.add_argument("--stage", choices=["generate", "convert", "reader", "reader-reuse"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(_stage(args.stage, args.workdir, args.events, args.per_subject)))
        return
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    env = {**os.environ, "POLARS_MAX_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    for stage in ("generate", "convert", "reader", "reader-reuse"):
        cmd = [sys.executable, __file__, "--stage", stage, "--events", str(args.events),
               "--per-subject", str(args.per_subject), "--workdir", str(args.workdir)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"stage {stage} failed:\n{done.stderr}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"MEDS benchmark: {args.events:,} requested events, {args.threads} threads, load {os.getloadavg()[0]:.1f}")
    print(f"{'stage':<13} {'events':>11} {'seconds':>8} {'events/s':>11} {'parquet MB':>10} "
          f"{'cold MB':>8} {'data MB':>8} {'data/parquet':>12}")
    for r in rows:
        print(f"{r['stage']:<13} {r['events']:>11,} {r['seconds']:>8.2f} {r['events_per_s']:>11,.0f} "
              f"{r['parquet_mb']:>10.1f} {r['added_mb']:>8.0f} {r['data_mb']:>8.0f} "
              f"{r['data_mb'] / r['parquet_mb']:>12.2f}")
    for r in rows[2:]:
        print(f"{r['stage']} split: read {r['read_s']:.2f} s, fit {r['fit_s']:.2f} s, get (all {r['patients']:,} "
              f"patients) {r['get_s']:.2f} s")


if __name__ == "__main__":
    main()
