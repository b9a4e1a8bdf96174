"""The random streams a resumed fit must continue: torch (CPU, and CUDA when present), numpy and
Python ``random``, saved in a checkpoint in types ``torch.load(weights_only=True)`` accepts.

Lightning restores weights, optimizer, schedulers and loop counters but not these; without them a
fit resumed after epoch ``k`` replays the modality-dropout masks and random slide patches of epoch 0
(``seed_everything`` resets the streams at every start).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    """The current states of torch's, numpy's and Python's global generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Set the global generators to a :func:`capture`'d state (CUDA only when both have it)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
