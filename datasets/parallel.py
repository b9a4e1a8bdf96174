"""Run slow per-file work in chunks, in worker processes when that pays off: the synthetic
cohort's ECG and WSI writers, and the ECG reader's first-time cache build.

Results do not depend on the number of workers or on the order in which chunks finish (the
synthetic writers give every chunk its own ``numpy.random.SeedSequence``; the ECG cache writes
each record to its own rows). The number of workers is the number of usable CPU cores (at most
``MAX_WORKERS``) where processes start by ``fork`` (Linux), and 1 elsewhere: with ``spawn``
(Windows, macOS) every worker re-imports the calling script, which then needs the
``if __name__ == "__main__":`` guard, and a data module reading its ECG cache should not ask
that of its user. Set the environment variable ``CLINFUSE_WORKERS`` to choose (``1`` runs
everything in the calling process; the older name ``CLINFUSE_SYNTH_WORKERS`` is still read).
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence

from tqdm.auto import tqdm

MAX_WORKERS = 8
MIN_ITEMS_FOR_POOL = 48  # below this, starting processes costs more than it saves
WORKERS_ENV = "CLINFUSE_WORKERS"
_OLD_WORKERS_ENV = "CLINFUSE_SYNTH_WORKERS"


def n_workers() -> int:
    """Number of worker processes to use (see the module docstring)."""
    name = WORKERS_ENV if os.environ.get(WORKERS_ENV) else _OLD_WORKERS_ENV
    env = os.environ.get(name)
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{name} must be a positive integer, got {env!r}")
        return int(env)
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    if method != "fork":
        return 1  # spawn / forkserver: workers only when asked for (module docstring)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def run_chunks(fn: Callable, tasks: Sequence, sizes: Sequence[int], desc: str, show_progress: bool) -> list:
    """Call ``fn(task)`` for every task, with a progress bar counting ``sizes``.

    Args:
        fn: A module-level function (it may be sent to another process).
        tasks: One picklable argument per chunk.
        sizes: Items (files) per chunk, for the progress bar.
        desc: Progress bar label.
        show_progress: Whether to show the bar.

    Returns:
        The results of ``fn``, in task order.
    """
    workers = min(n_workers(), len(tasks))
    results = [None] * len(tasks)
    with tqdm(total=int(sum(sizes)), desc=desc, unit="file", disable=not show_progress) as bar:
        # a daemonic process (a multiprocessing.Pool or DataLoader worker) may not start children
        if workers <= 1 or sum(sizes) < MIN_ITEMS_FOR_POOL or multiprocessing.current_process().daemon:
            for i, task in enumerate(tasks):
                results[i] = fn(task)
                bar.update(sizes[i])
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                bar.update(sizes[i])
    return results
