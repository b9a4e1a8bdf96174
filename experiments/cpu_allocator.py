"""Keep freed memory in the process so that large CPU tensors are reused instead of re-faulted.

glibc's ``malloc`` serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and returns it to the system on ``free``. A prediction batch allocates tensors of that
size many times (a 256-patient batch's slide patches through the first layer: 62,936 x 128
floats, 32 MB), so every batch page-faults its working memory in again. In
``benchmarks/bench_prognosis.py`` (2 cores) the model part of an in-memory batch of 256 took
183-214 ms with glibc's defaults and 121-132 ms with this setting; with the leave-one-modality-out
contributions, 540-808 ms and 369-449 ms. PyTorch's CPU tuning guide suggests preloading
jemalloc or tcmalloc for this; raising glibc's thresholds with ``mallopt`` does the same without a
preload or an extra package.

The setting is process-wide and the memory a process has touched stays with it (its resident size
stays at its peak), so it suits a process that only serves predictions: ``mlflow models serve``
(:class:`clinfuse.experiments.prognosis_mlflow.PrognosisPyfunc` applies it when it loads) and the
``clinfuse score`` / ``evaluate`` / ``compare`` commands. Call :func:`keep_freed_memory` yourself
in your own serving process; training gained nothing measurable from it (two epochs of the
quickstart model on 600 patients: 5.0-5.1 s without, 4.5-5.0 s with).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_applied = False


def keep_freed_memory(mmap_threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed blocks of up to ``mmap_threshold`` bytes (default 1 GiB) for reuse.

    Returns True when the setting is in effect (Linux with glibc; calling again is harmless),
    False where there is no glibc ``mallopt`` (macOS, Windows, musl): nothing is changed there.
    """
    global _applied
    if isinstance(mmap_threshold, bool) or not isinstance(mmap_threshold, int) or not 0 < mmap_threshold < 2**31:
        # mallopt takes a C int: a larger value would wrap around
        raise ValueError(f"mmap_threshold must be a number of bytes in [1, 2**31), got {mmap_threshold!r}")
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt (musl)
        return False
    # the same trim threshold: freed memory at the heap's top is not handed back either
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, mmap_threshold) == 1
    _applied = ok
    return ok
