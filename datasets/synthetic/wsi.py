"""Render the slide view ``v_wsi`` into CLAM-style bags of patch features (one h5 file per slide).

A slide has ``P ~ Uniform(wsi_patches)`` patches on a square grid (256-pixel steps). A fraction
``f = 0.05 + 0.6 * sigmoid(1.5 u0)`` (plus a little per-slide jitter) of them, a spatially
contiguous blob around a random centre, are *tumour* patches; their features are shifted by
``1.5 t0 + D u[1:]``, a fixed tumour direction plus directions set by the rest of the standardised
view. Every patch carries ``N(0, I)`` background noise. About a quarter of the patients have two
slides.

That is ``signal="amount"`` (the default): how much tumour a slide holds carries part of the
patient's state. ``signal="grade"`` is the multiple-instance-learning setting instead: the tumour
share is drawn uniformly from ``GRADE_FRACTION`` (2-20 %), whatever the patient, and the tumour
patches' features carry the whole view (``1.5 t0 + D' u``). Averaging every patch then mixes the
signal with a random tumour share; pooling that weighs the tumour patches (attention) does not.

``signal="focal"`` is the small-lesion setting (a micro-metastasis in a lymph node section): as
``"grade"``, but the tumour share is 0.5-3 % (``FOCAL_FRACTION``, at least one patch), tumour
patches stand out more (``FOCAL_TUMOR_SCALE t0`` instead of ``1.5 t0``: a few patches among
hundreds must be findable, as tumour cells are to a pathologist), and every
patch of a slide is shifted by the slide's own staining offset (``N(0, STAIN_SD^2 I)``, as scanners
and staining batches shift real patch features). The mean of all patches is then mostly the stain;
only a reader that finds the few tumour patches (and can tell them from the slide's background)
sees the view.
"""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy.special import expit

from clinfuse.datasets.parallel import run_chunks

CHUNK = 32
PATCH_PIXELS = 256
SECOND_SLIDE_RATE = 0.25
SIGNALS = ("amount", "grade", "focal")
GRADE_FRACTION = (0.02, 0.20)
FOCAL_FRACTION = (0.005, 0.03)
FOCAL_TUMOR_SCALE = 4.0
STAIN_SD = 0.5


def resolve_stain_sd(stain_sd: float | None, signal: str) -> float:
    """The staining offset's sd a slide set gets: ``stain_sd``, or by default ``STAIN_SD`` for
    ``"focal"`` and 0 for the other signals; ValueError unless it is a finite number >= 0."""
    if stain_sd is None:
        return STAIN_SD if signal == "focal" else 0.0
    if isinstance(stain_sd, bool) or not isinstance(stain_sd, (int, float, np.integer, np.floating)) or not (
        np.isfinite(stain_sd) and stain_sd >= 0
    ):
        raise ValueError(f"wsi_stain_sd must be a finite number >= 0 (or None for the signal's default), got {stain_sd!r}")
    return float(stain_sd)


def tumor_fraction(u: np.ndarray) -> np.ndarray:
    """Expected tumour-patch fraction per patient from the standardised WSI view ``u``."""
    return 0.05 + 0.6 * expit(1.5 * u[:, 0])


def tumor_layout(
    u: np.ndarray, tumor_direction: np.ndarray, mixing: np.ndarray, signal: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Tumour share and tumour-patch feature shift of every slide.

    Args:
        u: Standardised WSI view of each slide's patient, shape ``(S, d)``.
        tumor_direction: Unit vector ``t0``, shape ``(F,)``.
        mixing: ``D``, shape ``(F, d - 1)`` for ``"amount"`` or ``(F, d)`` for ``"grade"``/``"focal"``.
        signal: ``"amount"``, ``"grade"`` or ``"focal"`` (module docstring).
        rng: Source of the shares.

    Returns:
        ``fraction`` ``(S,)`` and ``shift`` ``(S, F)``.
    """
    if signal in ("grade", "focal"):  # the share says nothing about the patient; the tumour's features say everything
        fraction = rng.uniform(*(GRADE_FRACTION if signal == "grade" else FOCAL_FRACTION), size=u.shape[0])
        scale = 1.5 if signal == "grade" else FOCAL_TUMOR_SCALE
        return fraction, scale * tumor_direction + u @ mixing.T
    fraction = np.clip(tumor_fraction(u) + 0.05 * rng.standard_normal(u.shape[0]), 0.0, 0.95)
    return fraction, 1.5 * tumor_direction + u[:, 1:] @ mixing.T


def slide_bag(
    n_patches: int, fraction: float, shift: np.ndarray, rng: np.random.Generator,
    stain: np.ndarray | None = None, min_tumor: int = 0,
):
    """Features and coordinates of one slide.

    Args:
        n_patches: Number of patches ``P``.
        fraction: Share of tumour patches.
        shift: Feature shift of tumour patches, shape ``(F,)``.
        rng: Source of randomness.
        stain: The slide's staining offset added to every patch, shape ``(F,)`` (None: none).
        min_tumor: At least this many tumour patches (at most ``P``).

    Returns:
        ``features`` float32 ``(P, F)`` and ``coords`` int32 ``(P, 2)``.
    """
    side = int(np.ceil(np.sqrt(n_patches)))
    cell = np.arange(n_patches)
    grid = np.stack([cell % side, cell // side], axis=1)  # (P, 2)
    centre = rng.uniform(0, side, size=2)
    n_tumor = min(n_patches, max(min_tumor, int(round(fraction * n_patches))))
    tumor = np.argsort(((grid - centre) ** 2).sum(1))[:n_tumor]
    features = rng.standard_normal((n_patches, shift.shape[0]), dtype=np.float32)
    features[tumor] += shift.astype(np.float32)
    if stain is not None:
        features += stain.astype(np.float32)
    origin = rng.integers(0, 40, size=2)
    coords = ((grid + origin) * PATCH_PIXELS).astype(np.int32)
    return features, coords


def _write_chunk(task: dict) -> None:
    """Synthesise and write one chunk of slides (runs in a worker)."""
    rng = np.random.default_rng(task["seed"])
    stains = task.get("stain")
    for k, (path, n_patches, fraction, shift) in enumerate(zip(task["paths"], task["n_patches"], task["fraction"], task["shift"])):
        stain = None if stains is None else stains[k]
        features, coords = slide_bag(int(n_patches), float(fraction), shift, rng, stain, task.get("min_tumor", 0))
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=features, track_times=False)
            f.create_dataset("coords", data=coords, track_times=False)


def write_wsi(
    wsi_dir: Path,
    u: np.ndarray,
    patient_ids,
    present: np.ndarray,
    rng: np.random.Generator,
    seed: np.random.SeedSequence,
    feature_dim: int,
    patches: tuple[int, int],
    show_progress: bool,
    signal: str = "amount",
    stain_sd: float | None = None,
) -> pd.DataFrame:
    """Write the slides of every present patient into ``wsi_dir``.

    Args:
        wsi_dir: Target folder (created if needed).
        u: Standardised WSI view for ALL patients, shape ``(n, d)``.
        patient_ids: ``n`` patient ids.
        present: Bool ``(n,)``, True where the patient has slides.
        rng: Source of the per-slide parameters (the generator's "wsi" stream).
        seed: Seed sequence for the patch noise (one child per chunk).
        feature_dim: Feature dimension ``F``.
        patches: Inclusive range ``(low, high)`` of the number of patches per slide.
        show_progress: Whether to show a progress bar.
        signal: ``"amount"``, ``"grade"`` or ``"focal"``: where the view shows in a slide (module docstring).
        stain_sd: sd of the per-slide staining offset added to every patch (None: ``STAIN_SD`` for
            ``"focal"``, none for the others; 0: none).

    Returns:
        The ``slides.csv`` table: ``patient_id, slide_id, path`` (path relative to ``wsi_dir``).
    """
    if signal not in SIGNALS:
        raise ValueError(f"wsi signal must be one of {SIGNALS}, got {signal!r}")
    stain_sd = resolve_stain_sd(stain_sd, signal)
    wsi_dir = Path(wsi_dir)
    wsi_dir.mkdir(parents=True, exist_ok=True)
    d = u.shape[1]
    tumor_direction = rng.standard_normal(feature_dim)
    tumor_direction /= np.linalg.norm(tumor_direction)
    mixing = rng.standard_normal((feature_dim, d - 1)) / np.sqrt(feature_dim)

    rows = np.flatnonzero(np.asarray(present, dtype=bool))
    n_slides = 1 + (rng.uniform(size=rows.size) < SECOND_SLIDE_RATE)
    slide_rows = np.repeat(rows, n_slides)
    slide_index = np.arange(slide_rows.size) - np.repeat(np.cumsum(n_slides) - n_slides, n_slides)
    ids = np.asarray(patient_ids, dtype=object)[slide_rows]
    slide_ids = [f"{pid}_wsi{j}" for pid, j in zip(ids, slide_index)]
    n_patches = rng.integers(patches[0], patches[1] + 1, size=slide_rows.size)
    if signal in ("grade", "focal"):  # drawn here, so the slides and their patch counts are those of "amount"
        mixing = np.concatenate([rng.standard_normal((feature_dim, 1)) / np.sqrt(feature_dim), mixing], axis=1)
    fraction, shift = tumor_layout(u[slide_rows], tumor_direction, mixing, signal, rng)
    # drawn last, so without a stain every slide is what it was before stains existed
    stain = stain_sd * rng.standard_normal((slide_rows.size, feature_dim)) if stain_sd > 0 else None

    starts = range(0, slide_rows.size, CHUNK)
    children = seed.spawn(len(starts))
    tasks = [
        {
            "paths": [str(wsi_dir / f"{s}.h5") for s in slide_ids[i : i + CHUNK]],
            "n_patches": n_patches[i : i + CHUNK],
            "fraction": fraction[i : i + CHUNK],
            "shift": shift[i : i + CHUNK],
            "stain": None if stain is None else stain[i : i + CHUNK],
            "min_tumor": 1 if signal == "focal" else 0,
            "seed": children[c],
        }
        for c, i in enumerate(starts)
    ]
    run_chunks(_write_chunk, tasks, [len(t["paths"]) for t in tasks], "wsi", show_progress)
    return pd.DataFrame({"patient_id": ids, "slide_id": slide_ids, "path": [f"{s}.h5" for s in slide_ids]})
