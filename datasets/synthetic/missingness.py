"""Which modalities each synthetic patient has: MCAR, MAR and MNAR presence draws.

For every modality the probability that a patient LACKS it is

* ``mcar``: ``rate`` for everyone;
* ``mar``: ``sigmoid(a + 1.5 x)`` where ``x`` is a standardised *observed* tabular value (age);
* ``mnar``: ``sigmoid(a + 1.5 x)`` where ``x`` is the standardised true survival log-risk ``eta``,

with ``a`` found by bisection so that the mean probability over the cohort equals ``rate``.
The MAR driver is read for every patient, including those whose tabular modality ends up absent
(age is treated as registration data that is always known to the hospital).
"""

import numpy as np
from scipy.special import expit

from clinfuse.datasets.synthetic.latent import MODALITIES

MECHANISMS = ("mcar", "mar", "mnar")
SLOPE = 1.5

DEFAULT_MISSINGNESS = {
    "tabular": {"mechanism": "mcar", "rate": 0.05},
    "timeseries": {"mechanism": "mar", "rate": 0.2},
    "ecg": {"mechanism": "mcar", "rate": 0.3},
    "notes": {"mechanism": "mnar", "rate": 0.3},
    "wsi": {"mechanism": "mcar", "rate": 0.5},
    "genomics": {"mechanism": "mar", "rate": 0.4},
}


def resolve_missingness(missingness: dict | None) -> dict:
    """Merge user settings into ``DEFAULT_MISSINGNESS`` and validate them.

    Args:
        missingness: Modality -> ``{"mechanism": ..., "rate": ...}``; either key may be left out
            (the default for that modality is kept). ``None`` keeps every default.

    Returns:
        A complete, validated dict over all modalities (a new object).

    Raises:
        ValueError: For an unknown modality or mechanism, a rate outside ``[0, 1)`` or an unknown key.
    """
    resolved = {m: dict(spec) for m, spec in DEFAULT_MISSINGNESS.items()}
    if missingness is not None and not isinstance(missingness, dict):
        raise ValueError(f"missingness must be a dict modality -> {{'mechanism', 'rate'}}, e.g. "
                         f"{{'wsi': {{'rate': 0.3}}}}; got {type(missingness).__name__} {missingness!r:.80}")
    for modality, spec in (missingness or {}).items():
        if modality not in resolved:
            raise ValueError(f"missingness: unknown modality {modality!r}; expected one of {MODALITIES}")
        if not isinstance(spec, dict):
            raise ValueError(f"missingness[{modality!r}] must be a dict with 'mechanism' and 'rate', got {spec!r}")
        unknown = set(spec) - {"mechanism", "rate"}
        if unknown:
            raise ValueError(f"missingness[{modality!r}]: unknown keys {sorted(unknown)}")
        resolved[modality].update(spec)
    for modality, spec in resolved.items():
        if spec["mechanism"] not in MECHANISMS:
            raise ValueError(
                f"missingness[{modality!r}]: unknown mechanism {spec['mechanism']!r}; expected one of {MECHANISMS}"
            )
        rate = spec["rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"missingness[{modality!r}]: rate must be a number in [0, 1), got {rate!r}")
        spec["rate"] = float(rate)
    return resolved


def _standardize(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def solve_intercept(x: np.ndarray, rate: float, slope: float = SLOPE) -> float:
    """Intercept ``a`` with ``mean(sigmoid(a + slope * x)) == rate`` (bisection; ``rate`` in (0, 1))."""
    lo, hi = -60.0, 60.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if expit(mid + slope * x).mean() < rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def missing_probability(mechanism: str, rate: float, mar_driver: np.ndarray, mnar_driver: np.ndarray) -> np.ndarray:
    """Per-patient probability of lacking a modality.

    Args:
        mechanism: ``"mcar"``, ``"mar"`` or ``"mnar"``.
        rate: Target mean missingness rate in ``[0, 1)``.
        mar_driver: Observed tabular value per patient, shape ``(n,)`` (standardised here).
        mnar_driver: True log-risk per patient, shape ``(n,)`` (standardised here).

    Returns:
        Probabilities, shape ``(n,)``, averaging to ``rate``.
    """
    n = mar_driver.shape[0]
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown missingness mechanism {mechanism!r}; expected one of {MECHANISMS}")
    if rate == 0.0:
        return np.zeros(n)
    if mechanism == "mcar":
        return np.full(n, rate)
    x = _standardize(np.asarray(mar_driver if mechanism == "mar" else mnar_driver, dtype=float))
    return expit(solve_intercept(x, rate) + SLOPE * x)


def draw_presence(
    missingness: dict | None,
    mar_driver: np.ndarray,
    mnar_driver: np.ndarray,
    rng: np.random.Generator,
) -> dict:
    """Draw the present/absent flag of every modality for every patient.

    A patient may end up with no modality at all; that is kept on purpose.

    Args:
        missingness: As for ``resolve_missingness`` (``None`` = the defaults).
        mar_driver: Observed tabular value per patient (age), shape ``(n,)``.
        mnar_driver: True survival log-risk per patient, shape ``(n,)``.
        rng: Source of randomness (the generator's "presence" stream).

    Returns:
        Modality -> bool array of shape ``(n,)``, True where the patient HAS the modality.
    """
    resolved = resolve_missingness(missingness)
    mar_driver = np.asarray(mar_driver, dtype=float)
    mnar_driver = np.asarray(mnar_driver, dtype=float)
    if mar_driver.shape != mnar_driver.shape or mar_driver.ndim != 1:
        raise ValueError(
            f"mar_driver and mnar_driver must be 1-d and of equal length, "
            f"got {mar_driver.shape} and {mnar_driver.shape}"
        )
    u = rng.uniform(size=(len(MODALITIES), mar_driver.shape[0]))
    presence = {}
    for i, modality in enumerate(MODALITIES):
        spec = resolved[modality]
        p_missing = missing_probability(spec["mechanism"], spec["rate"], mar_driver, mnar_driver)
        presence[modality] = u[i] >= p_missing
    return presence
