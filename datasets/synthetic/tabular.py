"""Render the tabular view ``v_tab`` into admission variables on clinical scales.

Each numeric column is an affine function of one dominant view component (plus a little of the
others) and rendering noise, mapped onto a plausible clinical scale (log-normal for creatinine and
white cells). Each categorical column draws its level from a softmax whose logits depend on the
view. About 10 % of numeric and 5 % of categorical cells are then blanked at random.

That is ``signal="linear"`` (the default). ``signal="interaction"`` makes three pairs of numeric
columns (``INTERACTION_PAIRS``) carry their part of the view only jointly: per patient and pair a
random sign ``e`` is drawn, the first column's standardised value ``s_a`` becomes ``e |s_a|`` and
the second's ``s_b`` becomes ``e s_b``. Each column alone then says nothing about the sign of what
it carried; ``sign(first) x second`` gives ``s_b`` back exactly (a modifier that flips what a lab
means, as a drug or a comorbidity can). The marginals, age, the other columns and the categorical
columns are as with ``"linear"``; the sign of each pair's first column is lost, so the oracle
given the view is an upper bound a reader of the table cannot quite reach.
"""

import numpy as np
import pandas as pd

# name: (centre, spread, low, high, log-scale)
NUMERIC = {
    "age": (64.0, 14.0, 18.0, 100.0, False),
    "bmi": (27.5, 5.0, 14.0, 60.0, False),
    "heart_rate_admit": (88.0, 16.0, 35.0, 190.0, False),
    "creatinine": (1.0, 0.45, 0.2, 15.0, True),
    "sodium": (138.5, 4.0, 115.0, 165.0, False),
    "hemoglobin": (12.3, 2.0, 4.0, 20.0, False),
    "wbc": (8.5, 0.4, 0.5, 80.0, True),
    "albumin": (3.6, 0.6, 1.0, 5.5, False),
}
CATEGORICAL = {
    "sex": (("F", "M"), (0.0, 0.0)),
    "smoking": (("never", "former", "current"), (0.6, 0.0, -0.4)),
    "admission_type": (("elective", "urgent", "emergency", "transfer"), (0.0, 0.3, 0.9, -1.0)),
}
SIGNALS = ("linear", "interaction")
INTERACTION_PAIRS = (("bmi", "heart_rate_admit"), ("creatinine", "sodium"), ("hemoglobin", "wbc"))
NUMERIC_MISSING_RATE = 0.10
CATEGORICAL_MISSING_RATE = 0.05
SIGNAL_SHARE = 0.8  # variance share of the view in each standardised numeric column


def draw_tabular(u: np.ndarray, rng: np.random.Generator, signal: str = "linear") -> pd.DataFrame:
    """Complete tabular values (no blank cells) for every patient.

    Args:
        u: Standardised tabular view ``v_tab / sd``, shape ``(n, d)``.
        rng: Source of randomness (the generator's "tabular" stream).
        signal: ``"linear"`` or ``"interaction"`` (module docstring); the sign flips are drawn
            after every ``"linear"`` draw, so the other columns are the same either way.

    Returns:
        DataFrame with one float column per ``NUMERIC`` entry and one string column per
        ``CATEGORICAL`` entry, ``n`` rows, no patient ids.
    """
    if signal not in SIGNALS:
        raise ValueError(f"tabular signal must be one of {SIGNALS}, got {signal!r}")
    n, d = u.shape
    out, scores = {}, {}
    for j, name in enumerate(NUMERIC):
        w = 0.4 * rng.standard_normal(d)
        w[j % d] = 1.0
        scores[name] = np.sqrt(SIGNAL_SHARE) * (u @ w) / np.linalg.norm(w) + np.sqrt(1 - SIGNAL_SHARE) * rng.standard_normal(n)
        out[name] = _render(name, scores[name])
    for name, (levels, base) in CATEGORICAL.items():
        weights = 0.9 * rng.standard_normal((d, len(levels))) / np.sqrt(d)
        logits = np.asarray(base) + u @ weights  # (n, L)
        gumbel = -np.log(-np.log(rng.uniform(size=logits.shape)))
        out[name] = np.asarray(levels, dtype=object)[np.argmax(logits + gumbel, axis=1)]
    if signal == "interaction":
        flips = rng.choice([-1.0, 1.0], size=(n, len(INTERACTION_PAIRS)))  # (n, pairs)
        for k, (first, second) in enumerate(INTERACTION_PAIRS):
            out[first] = _render(first, flips[:, k] * np.abs(scores[first]))
            out[second] = _render(second, flips[:, k] * scores[second])
    return pd.DataFrame(out)


def _render(name: str, s: np.ndarray) -> np.ndarray:
    """A standardised score ``s`` on column ``name``'s clinical scale, clipped and rounded."""
    centre, spread, low, high, log_scale = NUMERIC[name]
    value = centre * np.exp(spread * s) if log_scale else centre + spread * s
    return np.round(np.clip(value, low, high), 0 if name == "age" else 2)


def mask_tabular(values: pd.DataFrame, patient_ids, present: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Keep the patients who have the modality and blank random cells.

    Args:
        values: The table from ``draw_tabular`` (one row per patient, all patients).
        patient_ids: ``n`` patient ids.
        present: Bool ``(n,)``, True where the patient has tabular data.
        rng: Source of randomness.

    Returns:
        DataFrame ``patient_id`` + numeric (float, NaN = missing) + categorical (object str, None =
        missing) columns, rows of present patients only.
    """
    n = len(values)
    blank_num = rng.uniform(size=(n, len(NUMERIC))) < NUMERIC_MISSING_RATE
    blank_cat = rng.uniform(size=(n, len(CATEGORICAL))) < CATEGORICAL_MISSING_RATE
    table = {"patient_id": np.asarray(patient_ids, dtype=object)}
    for j, name in enumerate(NUMERIC):
        table[name] = np.where(blank_num[:, j], np.nan, values[name].to_numpy(dtype=float))
    for j, name in enumerate(CATEGORICAL):
        table[name] = np.where(blank_cat[:, j], None, values[name].to_numpy(dtype=object))
    return pd.DataFrame(table)[np.asarray(present, dtype=bool)].reset_index(drop=True)
