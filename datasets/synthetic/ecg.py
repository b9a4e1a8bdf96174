"""Render the ECG view ``v_ecg`` into 12-lead WFDB records.

Every beat is a sum of Gaussians (P, Q, R, S, an ST hump and T) placed relative to the R peak; a
sample gets the contributions of the beats just before and just after it. Per-lead amplitudes
project each wave's frontal-plane vector onto the limb leads and use a fixed precordial table for
V1-V6; noise is drawn for the 8 independent leads only, so Einthoven's relations (III = II - I,
aVR = -(I + II) / 2, ...) hold exactly in the written signals.

The standardised view ``u`` drives the physiology:

* ``u[0]`` -> heart rate ``72 + 14 u0`` bpm (clipped to 40-150),
* ``u[1]`` -> QRS width factor ``1 + 0.25 u1``,
* ``u[2]`` -> ST offset ``0.1 u2`` mV,
* ``u[3]`` -> T amplitude factor ``1 + 0.35 u3``.

Rendering noise: 3 % beat-to-beat RR variability, electrical-axis and precordial-gain jitter,
baseline wander (0.15-0.4 Hz) and white noise.

That is ``signal="rate"`` (the default). With ``signal="rhythm"`` the heart rate is drawn at random
(``72 + 14 N(0, 1)`` bpm, unrelated to the patient) and ``u[0]`` sets how irregular the rhythm is
instead: beat-to-beat RR variability ``2 + 20 sigmoid(1.5 u0)`` % (from a steady sinus rhythm to
atrial-fibrillation-like irregularity). Reading it needs the intervals between several beats, not
the shape or the rate of any one.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

from clinfuse.datasets.parallel import run_chunks

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CHUNK = 32
ADC_GAIN = 1000.0  # digital units per mV (1 uV resolution, +-32 mV range with fmt 16)
HORIZON_HOURS = 48.0
SIGNALS = ("rate", "rhythm")

WAVES = ("P", "Q", "R", "S", "ST", "T")
LIMB_ANGLES = np.deg2rad([0.0, 60.0, 120.0, -150.0, -30.0, 90.0])
LIMB_FACTOR = np.array([1.0, 1.0, 1.0, np.sqrt(3) / 2, np.sqrt(3) / 2, np.sqrt(3) / 2])
# frontal-plane magnitude (mV) and axis (degrees) per wave; ST is per mV of ST offset
FRONTAL = {
    "P": (0.15, 55.0), "Q": (-0.08, 60.0), "R": (1.3, 60.0), "S": (-0.3, 60.0), "ST": (1.0, 60.0), "T": (0.35, 45.0),
}  # fmt: skip
PRECORDIAL = {
    "P": (0.05, 0.08, 0.10, 0.10, 0.10, 0.08),
    "Q": (0.0, 0.0, 0.0, -0.04, -0.08, -0.10),
    "R": (0.25, 0.50, 0.80, 1.30, 1.50, 1.20),
    "S": (-1.00, -1.30, -0.90, -0.50, -0.30, -0.15),
    "ST": (0.60, 0.90, 1.00, 1.00, 0.80, 0.60),
    "T": (-0.15, 0.35, 0.50, 0.55, 0.45, 0.35),
}

# (8, 12): independent leads (I, II, V1..V6) -> the 12 standard leads
INDEPENDENT_TO_LEADS = np.zeros((8, 12))
INDEPENDENT_TO_LEADS[0, [0, 2, 3, 4, 5]] = (1.0, -1.0, -0.5, 1.0, -0.5)  # lead I
INDEPENDENT_TO_LEADS[1, [1, 2, 3, 4, 5]] = (1.0, 1.0, -0.5, -0.5, 1.0)  # lead II
INDEPENDENT_TO_LEADS[2:, 6:] = np.eye(6)


def ecg_drivers(u: np.ndarray, signal: str = "rate", rng: np.random.Generator | None = None) -> dict:
    """Physiological parameters per patient from the standardised ECG view ``u`` ``(n, >=4)``
    (``"rhythm"``: the rate from ``rng``, ``u[0]`` sets ``rr_variability``; module docstring)."""
    rhythm = signal == "rhythm"
    rate_driver = rng.standard_normal(u.shape[0]) if rhythm else u[:, 0]
    return {
        "heart_rate": np.clip(72.0 + 14.0 * rate_driver, 40.0, 150.0),
        "rr_variability": 0.02 + 0.20 / (1.0 + np.exp(-1.5 * u[:, 0])) if rhythm else np.full(u.shape[0], 0.03),
        "qrs_factor": np.clip(1.0 + 0.25 * u[:, 1], 0.6, 1.8),
        "st_offset": 0.1 * u[:, 2],
        "t_factor": np.clip(1.0 + 0.35 * u[:, 3], 0.1, 2.5),
    }


def _lead_amplitudes(drivers: dict, rng: np.random.Generator) -> np.ndarray:
    """Per-patient amplitude of every wave in every lead, shape ``(n, 12, 6)``."""
    n = drivers["heart_rate"].shape[0]
    mag = np.array([FRONTAL[w][0] for w in WAVES])
    axis = np.deg2rad([FRONTAL[w][1] for w in WAVES])[None, :] + np.deg2rad(10.0) * rng.standard_normal((n, 1))
    limb = LIMB_FACTOR[None, :, None] * mag * np.cos(axis[:, None, :] - LIMB_ANGLES[None, :, None])  # (n, 6, W)
    gain = np.exp(0.1 * rng.standard_normal((n, 6, 1)))
    chest = gain * np.array([PRECORDIAL[w] for w in WAVES]).T[None]  # (n, 6, W)
    amp = np.concatenate([limb, chest], axis=1)  # (n, 12, W)
    scale = np.ones((n, len(WAVES)))
    scale[:, WAVES.index("ST")] = drivers["st_offset"]
    scale[:, WAVES.index("T")] = drivers["t_factor"]
    return amp * scale[:, None, :]


def synthesize_ecg(u: np.ndarray, fs: int, seconds: float, rng: np.random.Generator, signal: str = "rate") -> np.ndarray:
    """12-lead signals in mV for a chunk of patients.

    Args:
        u: Standardised ECG view, shape ``(n, d)`` with ``d >= 4``.
        fs: Sampling rate in Hz.
        seconds: Record length in seconds.
        rng: Source of rendering noise.
        signal: ``"rate"`` or ``"rhythm"`` (module docstring).

    Returns:
        Signals of shape ``(n, S, 12)`` with ``S = round(fs * seconds)``, leads in ``LEADS`` order.
    """
    n = u.shape[0]
    drivers = ecg_drivers(u, signal, np.random.default_rng(rng.integers(2**63)) if signal == "rhythm" else None)
    n_samples = int(round(fs * seconds))
    t = np.arange(n_samples) / fs
    rr_mean = 60.0 / drivers["heart_rate"]  # (n,)
    n_beats = int(np.ceil(seconds / 0.3)) + 4
    rr = rr_mean[:, None] * np.maximum(1.0 + drivers["rr_variability"][:, None] * rng.standard_normal((n, n_beats)), 0.5)
    first = -rng.uniform(size=(n, 1)) * rr[:, :1]
    beats = first + np.concatenate([np.zeros((n, 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)  # (n, B)

    # Index of the last beat at or before each sample: one searchsorted over rows offset apart.
    span = seconds + 100.0 * n_beats
    offset = span * np.arange(n)[:, None]
    prev = np.searchsorted((beats + offset).ravel(), (t[None, :] + offset).ravel(), side="right")
    prev = prev.reshape(n, n_samples) - 1 - n_beats * np.arange(n)[:, None]
    r_prev = np.take_along_axis(beats, prev, axis=1)  # (n, S)
    r_next = np.take_along_axis(beats, prev + 1, axis=1)

    q = drivers["qrs_factor"][:, None]
    rt = np.sqrt(rr_mean)[:, None]
    centre = {"P": -0.16 + 0 * q, "Q": -0.022 * q, "R": 0 * q, "S": 0.024 * q, "ST": 0.13 * rt, "T": 0.27 * rt}
    width = {"P": 0.022 + 0 * q, "Q": 0.007 * q, "R": 0.009 * q, "S": 0.008 * q, "ST": 0.05 * rt, "T": 0.045 * rt}
    comp = np.empty((n, len(WAVES), n_samples))
    for w, wave in enumerate(WAVES):
        c, s = centre[wave], width[wave]
        comp[:, w] = _bump((t - r_prev - c) / s) + _bump((t - r_next - c) / s)
    signal = np.einsum("nws,nlw->nsl", comp, _lead_amplitudes(drivers, rng))  # (n, S, 12)

    # Wander and noise live in the 8 independent leads (I, II, V1-V6); the other limb leads are
    # derived from I and II, so Einthoven's relations hold for the noisy signal too.
    freq = rng.uniform(0.15, 0.4, size=(n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 8))
    wander = 0.08 * np.sin(2 * np.pi * freq * t[None, :, None] + phase)  # (n, S, 8)
    noise = wander + 0.015 * rng.standard_normal((n, n_samples, 8))
    return signal + noise @ INDEPENDENT_TO_LEADS


def _bump(x: np.ndarray) -> np.ndarray:
    """Unit Gaussian bump ``exp(-x^2 / 2)``, cut at 10 sd (avoids slow subnormal floats)."""
    return np.exp(-0.5 * np.minimum(x * x, 100.0))


def _write_chunk(task: dict) -> None:
    """Synthesise one chunk of records and write them with ``wfdb.wrsamp`` (runs in a worker)."""
    rng = np.random.default_rng(task["seed"])
    signals = synthesize_ecg(task["u"], task["fs"], task["seconds"], rng, task.get("signal", "rate"))
    for name, signal in zip(task["records"], signals):
        wfdb.wrsamp(
            name,
            fs=task["fs"],
            units=["mV"] * len(LEADS),
            sig_name=list(LEADS),
            p_signal=signal,
            fmt=["16"] * len(LEADS),
            adc_gain=[ADC_GAIN] * len(LEADS),
            baseline=[0] * len(LEADS),
            write_dir=task["write_dir"],
        )


def write_ecg(
    ecg_dir: Path,
    u: np.ndarray,
    patient_ids,
    present: np.ndarray,
    seed: np.random.SeedSequence,
    fs: int,
    seconds: float,
    show_progress: bool,
    signal: str = "rate",
) -> pd.DataFrame:
    """Write one WFDB record per present patient into ``ecg_dir``.

    Args:
        ecg_dir: Target folder (created if needed).
        u: Standardised ECG view for ALL patients, shape ``(n, d)``.
        patient_ids: ``n`` patient ids.
        present: Bool ``(n,)``, True where the patient has an ECG.
        seed: The generator's "ecg" seed sequence (one child per chunk).
        fs: Sampling rate in Hz.
        seconds: Record length in seconds.
        show_progress: Whether to show a progress bar.
        signal: ``"rate"`` or ``"rhythm"`` (module docstring).

    Returns:
        The ``records.csv`` table: ``patient_id, record, time`` (hours in ``[0, 48]``).
    """
    ecg_dir = Path(ecg_dir)
    ecg_dir.mkdir(parents=True, exist_ok=True)
    rows = np.flatnonzero(np.asarray(present, dtype=bool))
    ids = np.asarray(patient_ids, dtype=object)[rows]
    records = [f"{pid}_ecg0" for pid in ids]
    chunk_starts = range(0, rows.size, CHUNK)
    children = seed.spawn(len(chunk_starts) + 1)
    times = np.round(np.random.default_rng(children[-1]).uniform(0.0, HORIZON_HOURS, size=rows.size), 3)
    tasks = [
        {
            "records": records[s : s + CHUNK],
            "u": u[rows[s : s + CHUNK]],
            "seed": children[i],
            "fs": fs,
            "seconds": seconds,
            "write_dir": str(ecg_dir),
            "signal": signal,
        }
        for i, s in enumerate(chunk_starts)
    ]
    run_chunks(_write_chunk, tasks, [len(t["records"]) for t in tasks], "ecg", show_progress)
    return pd.DataFrame({"patient_id": ids, "record": records, "time": times})
