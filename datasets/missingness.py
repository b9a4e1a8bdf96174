"""Missingness simulation on batches: remove modalities from patients at evaluation time.

Used to evaluate robustness (e.g. MNAR missingness at test time that the model never saw in
training). A removed modality is marked absent (``present = False``); its padded inputs stay as
they are, and encoders ignore them, so nothing is zero-filled.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from clinfuse.datasets.synthetic.missingness import MECHANISMS, missing_probability


def draw_drops(
    mechanism: str,
    rate: float,
    n: int,
    rng: np.random.Generator,
    mar_driver: np.ndarray | None = None,
    mnar_driver: np.ndarray | None = None,
) -> np.ndarray:
    """Which of ``n`` patients lose a modality (True = remove), with the generator's mechanisms.

    Args:
        mechanism: ``mcar``, ``mar`` (driven by an observed value) or ``mnar`` (driven by the
            outcome or latent state, e.g. the true log-risk).
        rate: mean probability of removal.
        n: number of patients.
        rng: numpy generator.
        mar_driver: ``(n,)`` observed driver, needed for ``mar``.
        mnar_driver: ``(n,)`` unobserved driver, needed for ``mnar``.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown missingness mechanism {mechanism!r}; expected one of {MECHANISMS}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"missingness rate must be in [0, 1), got {rate}")
    for name, driver in (("mar_driver", mar_driver), ("mnar_driver", mnar_driver)):
        if driver is not None and np.shape(driver) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {np.shape(driver)}")
    if mechanism == "mar" and mar_driver is None:
        raise ValueError("mechanism 'mar' needs mar_driver (an observed value per patient)")
    if mechanism == "mnar" and mnar_driver is None:
        raise ValueError("mechanism 'mnar' needs mnar_driver (e.g. the true risk per patient)")
    zeros = np.zeros(n)
    p = missing_probability(
        mechanism,
        rate,
        zeros if mar_driver is None else np.asarray(mar_driver, float),
        zeros if mnar_driver is None else np.asarray(mnar_driver, float),
    )
    return rng.uniform(size=n) < p


def remove_modalities(
    inputs: Mapping[str, Mapping[str, torch.Tensor]], drops: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of a batch's ``inputs`` where ``drops[m]`` (``(B,)`` bool) patients lack modality m.

    Modalities not named in ``drops`` are unchanged; patients who already lacked a modality stay
    without it.
    """
    unknown = sorted(set(drops) - set(inputs))
    if unknown:
        raise ValueError(f"cannot remove modalities {unknown}: the batch holds {sorted(inputs)}")
    out = {m: dict(x) for m, x in inputs.items()}
    for m, drop in drops.items():
        present = out[m]["present"]
        drop = torch.as_tensor(drop, dtype=torch.bool, device=present.device)
        if drop.shape != present.shape:
            raise ValueError(f"drops[{m!r}] has shape {tuple(drop.shape)}, the batch has {tuple(present.shape)}")
        out[m]["present"] = present & ~drop
    return out
