"""Time one forward + backward of HeteroGraphFusion (TransformerFusion alongside, for scale).

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_hetero_graph.py          # torch's default thread count
    /work/venv/bin/python benchmarks/bench_hetero_graph.py 1        # one thread

The batch: 64 patients, 6 modalities with (1, 160, 16, 4, 1, 1) token slots, D = 64, about 90% of
slots real and 80% of patients having each modality; training mode. Prints median and best of 10.
"""

import sys
import time

import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.hetero_graph import HeteroGraphFusion
from clinfuse.fusion.transformer import TransformerFusion

B, D, SLOTS = 64, 64, (1, 160, 16, 4, 1, 1)


def batch(names: list[str]) -> dict[str, ModalityTokens]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for m, n in zip(names, SLOTS):
        row = torch.rand(B, generator=g) < 0.8
        mask = (torch.rand(B, n, generator=g) < 0.9) & row[:, None]
        out[m] = ModalityTokens.from_tokens(torch.randn(B, n, D, generator=g), mask)
    return out


def main() -> None:
    if len(sys.argv) > 1:
        torch.set_num_threads(int(sys.argv[1]))
    names = [f"m{i}" for i in range(len(SLOTS))]
    inputs = batch(names)
    print(f"threads: {torch.get_num_threads()}, B={B}, D={D}, slots={SLOTS}")
    print(f"{'head':>20} {'median_s':>9} {'best_s':>9}")
    for cls in (HeteroGraphFusion, TransformerFusion):
        torch.manual_seed(0)
        head = cls(D, names).train()
        times = []
        for _ in range(12):
            t0 = time.perf_counter()
            out = head(inputs)
            loss = out.pooled.square().mean() + (out.aux_loss if out.aux_loss is not None else 0.0)
            loss.backward()
            times.append(time.perf_counter() - t0)
        times = sorted(times[2:])  # two warm-up runs
        print(f"{cls.__name__:>20} {times[len(times) // 2]:9.3f} {times[0]:9.3f}")


if __name__ == "__main__":
    main()
