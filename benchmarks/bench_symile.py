"""Time ``clinfuse.fusion.symile_loss`` against the ``symile`` package (0.1.0) on the same inputs.

Run from the repository root (needs ``pip install symile``)::

    python benchmarks/bench_symile.py              # N in 64 256 1024, M in 3 4, D = 128
    python benchmarks/bench_symile.py --n 64 256   # other batch sizes

Each row: negative sampling, modalities M, batch N; forward-only and forward+backward milliseconds
(median over repeats) of ours and of the package, the ratio package / ours (> 1: ours is faster),
and the absolute difference of the two losses (same seed, so ``"n"`` draws the same permutations).
A cell reads ``-`` where that implementation would need more than ``--max-gb`` of memory or more
than ``--max-gmac`` multiply-adds per call (the ``n_squared`` loss is O(N ** M)).
"""

from __future__ import annotations

import argparse
import time

import torch

from clinfuse.fusion.symile_loss import symile_loss

D = 128


def run_once(fn, reps: list[torch.Tensor], backward: bool) -> tuple[float, float]:
    """Seconds of one ``fn(reps)`` (plus its backward), and the loss value."""
    for r in reps:
        r.grad = None
    torch.manual_seed(1)  # the same "n" permutations for both implementations
    sync(reps[0])
    start = time.perf_counter()
    if backward:
        loss = fn(reps)
        loss.backward()
    else:
        with torch.no_grad():
            loss = fn(reps)
    sync(reps[0])
    return time.perf_counter() - start, float(loss.detach())


def sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def compare(fns: dict, reps: list[torch.Tensor], backward: bool, budget_s: float) -> tuple[dict, dict]:
    """Best-of-repeats milliseconds per implementation, alternating them (fair under load)."""
    warm = sum(run_once(fn, reps, backward)[0] for fn in fns.values())  # warm-up
    min_rounds = 3 if warm < budget_s else 1  # one timed round for calls of several seconds
    best = {k: float("inf") for k in fns}
    values, spent, rounds = {}, 0.0, 0
    while rounds < min_rounds or (spent < budget_s and rounds < 20):
        for k, fn in fns.items():
            t, values[k] = run_once(fn, reps, backward)
            best[k], spent = min(best[k], t), spent + t
        rounds += 1
    return {k: v * 1e3 for k, v in best.items()}, values


def package_cost(mode: str, m: int, n: int) -> tuple[float, float]:
    """(GB, GMAC) of one forward+backward of the package's loss, roughly."""
    if mode == "n":
        return m * 3 * n * n * 4 / 1e9, m * n * n * D / 1e9
    cand = n ** (m - 1)
    return m * (3 * n * cand + 2 * cand * D) * 4 / 1e9, m * n * cand * D / 1e9


def ours_cost(mode: str, m: int, n: int) -> tuple[float, float]:
    if mode == "n":
        return m * 3 * n * n * 4 / 1e9, m * n * n * D / 1e9
    return min(n**m + n ** (m - 1) * D, 2**26) * 2 * 4 / 1e9, n**m * D / 1e9  # blocks recomputed above 2**26


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--m", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--max-gb", type=float, default=6.0)
    ap.add_argument("--max-gmac", type=float, default=150.0)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of repeats per cell (at least 3 rounds)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable timings on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import symile

    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, "
          f"symile {symile.__version__}, D={D}, float32, best of repeats")
    cols = ("fwd ours", "fwd pkg", "ratio", "f+b ours", "f+b pkg", "ratio")
    head = f"{'mode':>9} {'M':>2} {'N':>5} | " + _row(cols) + f" | {'|diff|':>8}"
    print(head)
    print("-" * len(head))
    for mode in ("n", "n_squared"):
        pkg = symile.Symile(mode)
        for m in args.m:
            for n in args.n:
                g = torch.Generator().manual_seed(0)
                reps = [torch.randn(n, D, generator=g).to(args.device) for _ in range(m)]
                reps = [torch.nn.functional.normalize(r, dim=-1).requires_grad_() for r in reps]
                log_scale = torch.tensor(2.6593, device=args.device)
                ours_fn = lambda r: symile_loss(r, log_scale, mode)  # noqa: E731
                pkg_fn = lambda r: pkg(r, log_scale.exp())  # noqa: E731
                fns = {}
                for name, fn, cost in (("ours", ours_fn, ours_cost), ("pkg", pkg_fn, package_cost)):
                    gb, gmac = cost(mode, m, n)
                    if gb <= args.max_gb and gmac <= args.max_gmac:
                        fns[name] = fn
                cells, values = [], {}
                for backward in (False, True):
                    t, values = compare(fns, reps, backward, args.budget) if fns else ({}, {})
                    ratio = t["pkg"] / t["ours"] if len(t) == 2 else None
                    cells += [_ms(t.get("ours")), _ms(t.get("pkg")), "-" if ratio is None else f"{ratio:.2f}"]
                diff = abs(values["ours"] - values["pkg"]) if len(values) == 2 else None
                diff_cell = "-" if diff is None else f"{diff:.1e}"
                print(f"{mode:>9} {m:>2} {n:>5} | " + _row(cells) + f" | {diff_cell:>8}", flush=True)


def _row(cells) -> str:
    """Two groups of (ours, package, ratio) cells, aligned."""
    a, b, c, d, e, f = cells
    return f"{a:>9} {b:>9} {c:>6} | {d:>9} {e:>9} {f:>6}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
