"""Aggregate throughput of ``Prognosis.predict`` with several single-threaded worker processes.

    python benchmarks/bench_prognosis_workers.py [--patients 600] [--batches 12] [--workers 1 2]

How a server would use the cores: ``mlflow models serve -m <uri> --workers W`` runs W processes,
each answering its own requests. This trains the quickstart architecture briefly (as
``bench_prognosis.py`` does), saves the predictor, and then for each W starts W fresh processes
(``spawn``: no torch state inherited through ``fork``), each loading the saved predictor with
``torch.set_num_threads(threads)`` (default: cores // W) and predicting batches of 256 in-memory
records (the REST form: ECG and slides as arrays, the time series as columns; no contributions) in
a loop. All workers start together (a barrier after their warm-up call); the aggregate is
``W x batches x 256 / the slowest worker's wall time``. One process with all the cores is the
``bench_prognosis.py`` figure.

Prints a table: workers, torch threads each, aggregate patients/s, median seconds per batch of 256
in a worker.

Measured (2026-12-02, 2 cores, otherwise idle; three runs): 1 worker x 2 threads 1,132 / 1,095 /
1,117 patients/s (0.22 s per batch); 2 workers x 1 thread 1,612 / 1,608 / 1,624 (0.30 s per batch).
With the fusion capped at 32 tokens per modality (``TransformerFusion(max_tokens_per_modality=32)``,
set on the loaded model; one run): 1,266 and 1,999; at 64: 1,308 and 1,835. The cap is not the
quickstart's: it keeps only a patient's 32 latest time-series events (of ~100 here), which a real
cohort's trends may need (test C-index of the quickstart over five seeds: 0.7027 +- 0.0086 with it,
0.6987 +- 0.0271 without; per seed, with minus without: -0.020 to +0.047; each fit with `clinfuse fit --config experiments/quickstart.yaml --seed_everything S`, one torch thread).

2026-12-03 (after the leaner ECG / time-series / fusion inference paths; ``--precision 32-true
bf16-mixed``, two runs): float32 1 worker x 2 threads 1,303 / 1,292, 2 workers x 1 thread 1,875 /
1,797 patients/s; bf16-mixed 1,295 / 1,271 and 1,995 / 1,927 (0.246-0.255 s per batch).

2026-12-03, eighteenth session (the notes bag as one ``embedding_bag``, the WSI mean summed in
cached blocks, the CLS-only last fusion layer without key/value projections, leaner parsing;
``--precision 32-true bf16-mixed``, 17 runs over the session): 2 workers x 1 thread 1,838-2,038
patients/s in float32, 1,975-2,191 in bf16-mixed (2,000 or more in 16 of 17; 0.23-0.25 s per
batch); alternating with the session's starting commit, bf16-mixed 2,036 / 2,191 against 1,841 /
1,948 (docs/benchmarks/prognosis.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clinfuse.experiments.inference_precision import PRECISIONS

BATCH = 256


def _worker(prognosis_dir: str, records_file: str, threads: int, batches: int, precision: str, barrier, results) -> None:
    import torch

    from clinfuse.experiments.cpu_allocator import keep_freed_memory
    from clinfuse.experiments.prognosis import Prognosis

    torch.set_num_threads(threads)
    keep_freed_memory()
    prog = Prognosis.load(prognosis_dir, precision=precision)
    with open(records_file, "rb") as f:
        records = pickle.load(f)
    batch = records[:BATCH]
    prog.predict(batch, contributions=False)  # warm-up
    barrier.wait()
    start, per_batch = time.perf_counter(), []
    for _ in range(batches):
        t0 = time.perf_counter()
        out = prog.predict(batch, contributions=False)
        per_batch.append(time.perf_counter() - t0)
    results.put((time.perf_counter() - start, float(np.median(per_batch)), len(out)))


def run(prognosis_dir: str, records_file: str, workers: int, threads: int, batches: int,
        precision: str = "32-true") -> tuple[float, float]:
    """Aggregate patients/s and the median seconds per batch over ``workers`` processes."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(prognosis_dir, records_file, threads, batches, precision, barrier, results))
             for _ in range(workers)]
    for p in procs:
        p.start()
    got = [results.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a worker exited with code {p.exitcode}")
    if any(n != BATCH for _, _, n in got):
        raise RuntimeError(f"a worker returned {[n for _, _, n in got]} predictions for {BATCH} patients")
    wall = max(w for w, _, _ in got)
    return workers * batches * BATCH / wall, float(np.median([m for _, m, _ in got]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=600)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batches", type=int, default=12, help="batches of 256 each worker predicts (after one warm-up)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores // workers)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["32-true"],
                   help="Prognosis.precision(s) to time (bf16-mixed: bfloat16 matrix products)")
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_prognosis import in_memory, train_predictor

    from clinfuse.experiments.cohort_records import records_from_cohort

    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="clinfuse-workers-"))
    prog, dm, root = train_predictor(work, a.patients, a.epochs)
    prog.save(work / "prognosis")
    ids = list(dm.cohort.splits["test"]) + list(dm.cohort.splits["val"]) + list(dm.cohort.splits["train"])
    if len(ids) < BATCH:
        raise SystemExit(f"--patients {a.patients} gives {len(ids)} records; a batch needs {BATCH}")
    records = [in_memory(r) for r in records_from_cohort(root, ids[:BATCH])]
    with open(work / "records.pkl", "wb") as f:
        pickle.dump(records, f)
    rows = []
    for precision in a.precision:
        for w in a.workers:
            threads = a.threads or max(1, cores // w)
            rate, per_batch = run(str(work / "prognosis"), str(work / "records.pkl"), w, threads, a.batches, precision)
            rows.append((precision, w, threads, rate, per_batch))
            print(f"{precision}: {w} worker(s) x {threads} thread(s): {rate:.0f} patients/s", flush=True)
    print(f"\nquickstart architecture, {a.patients} patients, {cores} cores; in-memory batches of {BATCH}, "
          f"no contributions, {a.batches} batches per worker")
    print("\n| precision | workers | torch threads each | aggregate patients/s | s per batch of 256 (median) |\n|---|---|---|---|---|")
    for precision, w, threads, rate, per_batch in rows:
        print(f"| {precision} | {w} | {threads} | {rate:.0f} | {per_batch:.3f} |")


if __name__ == "__main__":
    main()
