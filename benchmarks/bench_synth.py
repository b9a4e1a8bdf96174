"""Time the synthetic cohort generator and report the size of what it writes.

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_synth.py            # n = 500 and 2000
    /work/venv/bin/python benchmarks/bench_synth.py 200 5000   # other sizes

Prints one row per cohort size: patients, wall-clock seconds, CPU seconds (this process plus the
ECG/WSI worker processes; on a busy machine ``cpu_s / workers`` estimates the idle wall time), MB on
disk and files written.
"""

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from clinfuse.datasets.synthetic import generate_cohort
from clinfuse.datasets.parallel import n_workers


def disk_usage(root: Path) -> tuple[float, int]:
    """Total size in MB and number of files below ``root``."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6, len(files)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main(sizes: list[int]) -> None:
    print(f"cores available: {os.cpu_count()}, writer processes: {n_workers()}")
    print(f"{'patients':>9} {'seconds':>9} {'cpu_s':>9} {'MB':>9} {'files':>7}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu_start = time.perf_counter(), cpu_seconds()
            root = generate_cohort(Path(tmp) / "cohort", n_patients=n, seed=0, show_progress=False)
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
            mb, n_files = disk_usage(root)
        print(f"{n:>9d} {seconds:>9.1f} {cpu:>9.1f} {mb:>9.1f} {n_files:>7d}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [500, 2000])
