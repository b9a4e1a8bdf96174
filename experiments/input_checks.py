"""Inputs far outside the training distribution: one warning per field, for the prediction output.

A value many training standard deviations away from the training mean is most often a unit error
(creatinine sent in umol/L to a model trained in mg/dL lands ~270 sd out) or a typo; the model
would extrapolate without a sign. Predictions are still made; the warnings travel with them
(``input_warnings``), naming the field, the value and how far out it is. Checked on what the
fitted readers produce, against the statistics the model was trained with:

- tabular numerics, time-series values, gene expression: beyond ``max_sd`` training sd;
- tabular categories: a level no training patient had (a new coding, ``female`` for ``F``);
- ECG: the median lead amplitude more than ``AMPLITUDE_FACTOR`` times above or below the training
  records' (microvolts sent as millivolts);
- time series: events later than ``TIME_FACTOR`` training horizons (minutes sent as hours);
- notes (word vocabulary): more than ``MAX_UNKNOWN_WORDS`` of the words unknown to the model;
- WSI: a bag whose mean features lie more than ``WSI_MAX_SD`` training sd (median over
  dimensions) from the training patches' (another patch feature extractor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: a standardised value beyond this many training sd gets a warning
DEFAULT_MAX_SD = 10.0
#: at most this many warnings per modality (the rest are counted)
MAX_LISTED = 5


def _unseen_levels(s: dict, item: dict[str, Any]) -> list[str]:
    """Categorical values no training patient had (code 1, "unseen"): a new coding or a typo
    (``female`` for ``F``) that the model can only treat as unknown."""
    codes = np.asarray(item.get("categorical", []), int)
    return [f"tabular.{s['categorical_features'][j]}: a level not seen in training (treated as unseen; "
            f"training levels: {s['levels'][s['categorical_features'][j]][:10]})"
            for j in np.flatnonzero(codes == 1)]


def out_of_range(modality: str, state: dict, item: dict[str, Any] | None, max_sd: float = DEFAULT_MAX_SD) -> list[str]:
    """Warnings for one patient's item of ``modality`` (empty when all values are in range).

    Args:
        modality: the modality name.
        state: the modality's saved reader state (``{"modality", "config", "fitted"}``).
        item: what the fitted reader (or :func:`~clinfuse.experiments.prognosis_inputs.raw_to_item`)
            returns for the patient; None = absent.
        max_sd: the threshold in training standard deviations.
    """
    if item is None:
        return []
    s = state["fitted"]
    if modality == "ecg":
        return _ecg_amplitude(s, item)
    if modality == "notes":
        return _notes_vocabulary(state, item)
    if modality == "wsi":
        return _wsi_features(s, item)
    out = _timeseries_times(s, item) if modality == "timeseries" else []
    # field names are built for the flagged values only (this runs for every patient served)
    if modality == "tabular":
        out += _unseen_levels(s, item)
        z, where = np.asarray(item["numeric"], float), np.asarray(item["numeric_observed"], bool)
        columns = None

        def field(j: int) -> str:
            return f"tabular.{s['numeric_features'][j]}"
    elif modality == "timeseries":
        z, where, columns = np.asarray(item["values"], float), None, np.asarray(item["variables"], int)

        def field(j: int) -> str:
            return f"timeseries.{s['variables'][j]}"
    elif modality == "genomics":
        z, where, columns = np.asarray(item["expression"], float), None, None

        def field(j: int) -> str:
            return f"genomics.{s['genes'][j]}_rnaseq"
    else:
        return []
    far = np.abs(z) > max_sd
    bad = np.flatnonzero(far if where is None else where & far)
    if not len(bad):
        return out
    bad = bad[np.argsort(-np.abs(z[bad]), kind="stable")]  # the most extreme first
    mean, std = np.asarray(s["mean"], float), np.asarray(s["std"], float)
    for k in bad[:MAX_LISTED]:
        j = k if columns is None else columns[k]
        value = z[k] * std[j] + mean[j]
        out.append(f"{field(j)}: {value:.4g} is {z[k]:+.0f} training sd from the training mean {mean[j]:.4g} (unit?)")
    if len(bad) > MAX_LISTED:
        out.append(f"{modality}: {len(bad) - MAX_LISTED} more value(s) beyond {max_sd:g} training sd")
    return out


def _median(x: np.ndarray) -> float:
    """``np.median`` of a finite 1-D array (the same value), without its generic-reduction
    overhead, which dominated for the 12 leads of one ECG (this runs for every patient served)."""
    n = len(x)
    part = np.partition(x, [(n - 1) // 2, n // 2])
    return float((part[(n - 1) // 2] + part[n // 2]) / 2)


def _lead_sd(leads: np.ndarray) -> np.ndarray:
    """Each row's (population) standard deviation, as ``leads.std(axis=1)`` but in the signal's
    own precision with one fused multiply-add pass for the squares (``np.std`` with float64
    accumulation took twice as long). float32 rounding (~1e-7 relative) is far below what the
    ``AMPLITUDE_FACTOR`` check resolves.

    Shapes:
        leads: ``(L, S)`` -> ``(L,)``
    """
    centred = leads - leads.mean(axis=1, keepdims=True)  # (L, S)
    return np.sqrt(np.einsum("ij,ij->i", centred, centred) / leads.shape[1])


def _ecg_amplitude(fitted: dict, item: dict[str, Any]) -> list[str]:
    """The median lead sd against the training records' (``amplitude_mv`` of the fitted state;
    predictors saved before it existed are not checked): microvolts sent as millivolts are 1000x."""
    reference = fitted.get("amplitude_mv")
    if not reference:
        return []
    signal, mask = np.asarray(item["signal"]), np.asarray(item["lead_mask"], bool)
    if not mask.any():
        return []
    leads = signal if mask.all() else signal[mask]  # (L_present, S)
    amplitude = _median(_lead_sd(leads))
    ratio = amplitude / reference
    if 1 / AMPLITUDE_FACTOR <= ratio <= AMPLITUDE_FACTOR:
        return []
    return [f"ecg.signal: median lead amplitude (sd) {amplitude:.4g} mV is {ratio:.3g}x the training records' "
            f"{reference:.4g} mV (unit? the signal must be in mV)"]


def _timeseries_times(fitted: dict, item: dict[str, Any]) -> list[str]:
    """Event times past ``TIME_FACTOR`` x the training horizon (minutes sent as hours are 60x)."""
    horizon = fitted.get("horizon_hours")
    times = np.asarray(item["times"], float)
    if not horizon or not len(times) or times.max() <= TIME_FACTOR * horizon:
        return []
    late = int((times > TIME_FACTOR * horizon).sum())
    return [f"timeseries.time: {late} event(s) up to {times.max():.4g} h, past {TIME_FACTOR:g}x the training "
            f"horizon of {horizon:g} h (unit? times must be hours from admission)"]


def _notes_vocabulary(state: dict, item: dict[str, Any]) -> list[str]:
    """Word-vocabulary notes whose words are mostly unknown to the model (another language or
    format): more than ``MAX_UNKNOWN_WORDS`` of the note words map to the unknown id."""
    if state["config"].get("tokenizer", "words") != "words" or "token_ids" not in item:
        return []
    from clinfuse.datasets.notes import UNK

    ids, mask = np.asarray(item["token_ids"]), np.asarray(item["token_mask"], bool)
    n = int(mask.sum())
    unknown = int((ids[mask] == UNK).sum())
    if not n or unknown / n <= MAX_UNKNOWN_WORDS:
        return []
    return [f"notes: {unknown} of {n} words ({unknown / n:.0%}) are not in the model's vocabulary "
            f"(another language or note format?)"]


def _wsi_features(fitted: dict, item: dict[str, Any]) -> list[str]:
    """The bag's mean feature vector against the training patches' per-dimension mean and sd
    (``feature_mean``/``feature_std`` of the fitted state; older predictors are not checked): the
    median over dimensions of ``|bag mean - training mean| / training sd``. Features from another
    patch encoder of the same width land far away on most dimensions at once."""
    mean, std = fitted.get("feature_mean"), fitted.get("feature_std")
    if mean is None or std is None:
        return []
    bag = np.asarray(item["features"])
    distance = _median(np.abs(bag.mean(0, dtype=np.float64) - np.asarray(mean)) / np.asarray(std))
    if distance <= WSI_MAX_SD:
        return []
    return [f"wsi.features: the bag's mean features lie a median {distance:.3g} training sd from the training "
            f"patches' (another patch feature extractor or normalisation?)"]


#: a WSI bag whose mean features lie further than this (median over dimensions, in training sd)
WSI_MAX_SD = 3.0
#: an ECG whose median lead amplitude is this many times above or below the training records'
AMPLITUDE_FACTOR = 20.0
#: time-series events later than this many training horizons
TIME_FACTOR = 2.0
#: share of unknown note words
MAX_UNKNOWN_WORDS = 0.5
