"""Array-valued raw inputs of the prognosis API: ECG signals and slide patch features.

One patient's ``ecg`` (a WFDB record path, or an in-memory signal as lists or base64) and ``wsi``
(slide files, or in-memory features as arrays or base64) -> the items the fitted ECG and WSI
readers return in eval mode (formats in :mod:`clinfuse.experiments.prognosis_inputs`). ECGs are
validated per patient and resampled per batch (:func:`finish_items`). Errors are ``ValueError``
naming the field; the caller adds the patient.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clinfuse.datasets.ecg_leads import PickedLeads, pick_leads, resample_picked
from clinfuse.datasets.reader import FLOAT32_MAX
from clinfuse.datasets.wfdb_read import read_wfdb
from clinfuse.datasets.wsi import check_bag, patches_read, read_slide_features
from clinfuse.experiments.wire import decode_array

Item = dict[str, np.ndarray]


def as_number(value: Any, field: str) -> float:
    """A finite number within float32's range (not a bool), or ValueError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"field '{field}': expected a number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x) or abs(x) > FLOAT32_MAX:
        raise ValueError(f"field '{field}': value must be finite and within float32's range (|x| <= 3.4e38), got {x}")
    return x


def ecg_item(state: dict, raw: Any, patient_id: str) -> Item:
    """A WFDB record path, or an in-memory ``{"signal", "fs", "leads"}`` -> ``signal``, ``lead_mask``.

    Both go through the ECG reader's own lead selection and resampling (:func:`pick_leads`,
    :func:`resample_picked`). The in-memory form (what a REST client sends) is ``signal``: ``(L, S)``
    nested lists in mV, ``fs``: its rate in Hz, ``leads``: its ``L`` lead names (any order, any
    subset). For many patients, :func:`ecg_leads` + :func:`finish_items` resample them together.
    """
    return _resolve_ecg(state, [ecg_leads(state, raw, patient_id)])[0]


def ecg_leads(state: dict, raw: Any, patient_id: str, notices: list[str] | None = None) -> PickedLeads:
    """Read and validate one patient's ECG and pick its leads; resampling is left to
    :func:`finish_items` (batched over patients). Raw formats and errors as :func:`ecg_item`;
    ``notices`` (see :func:`notify`) receives a note on a recording shorter or longer than the window."""
    leads, aliases = list(state["config"]["leads"]), state["config"].get("lead_aliases") or {}
    if isinstance(raw, Mapping):
        key = "signal_b64" if "signal_b64" in raw else "signal"
        missing = [k for k in (key, "fs", "leads") if k not in raw]
        if missing:
            raise ValueError(f"field 'ecg': an in-memory ECG needs keys signal (or signal_b64), fs, leads; missing {missing}")
        names = raw["leads"]
        if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) for x in names):
            raise ValueError("field 'ecg.leads': expected a list of lead names")
        try:
            signal = decode_array(raw, key, "ecg") if key == "signal_b64" else np.asarray(raw["signal"])
        except (TypeError, ValueError) as err:
            if key == "signal_b64":
                raise
            raise ValueError(f"field 'ecg.signal': not a numeric (L, S) array: {err}") from None
        if signal.dtype.kind not in "fiu":  # numbers only: numpy would also read "0.1" strings and bools
            raise ValueError(f"field 'ecg.signal': not a numeric (L, S) array (elements of type {signal.dtype})")
        if signal.ndim != 2 or signal.shape[0] != len(names):
            raise ValueError(f"field 'ecg.signal': expected shape (L, S) with L = {len(names)} leads, got {signal.shape}")
        # pick_leads refuses NaN and infinite samples (or beyond float32's range) in the leads it keeps
        fs_in = as_number(raw["fs"], "ecg.fs")
        picked = pick_leads(signal.T, names, ["mV"] * len(names), fs_in, leads, aliases, where="field 'ecg'")
        return _check_duration(state, picked, notices)
    if not isinstance(raw, (str, Path)):
        raise ValueError(f"field 'ecg': expected a WFDB record path or {{signal, fs, leads}}, got {type(raw).__name__}")
    path = Path(str(raw)).with_suffix("") if str(raw).endswith((".hea", ".dat")) else Path(str(raw))
    try:
        record = read_wfdb(path)
        data = record.p_signal
        if data is None or data.ndim != 2:
            raise ValueError(f"no physical signal read (shape {getattr(data, 'shape', None)})")
    except Exception as err:  # wfdb raises OSError/ValueError/IndexError on bad files
        raise ValueError(f"field 'ecg': {path}: cannot read WFDB record: {type(err).__name__}: {err}") from err
    units = record.units or [""] * len(record.sig_name)
    picked = pick_leads(data, record.sig_name, units, float(record.fs), leads, aliases, where=f"field 'ecg' ({path})")
    return _check_duration(state, picked, notices)


def notify(notices: list[str] | None, message: str) -> None:
    """A parser's note on a usable but doubtful input (``field 'x': text``): appended to ``notices``
    when the caller collects them (the prognosis API puts them in ``input_warnings``), else a
    ``UserWarning``."""
    if notices is None:
        warnings.warn(message, stacklevel=3)
    else:
        notices.append(message)


def _check_duration(state: dict, picked: PickedLeads, notices: list[str] | None) -> PickedLeads:
    """``picked``, with a note when its duration differs from the model's window by over 5%:
    shorter recordings are zero-padded to the window, longer ones cropped to their start, as the
    reader does in training."""
    seconds = picked.signal.shape[1] / picked.fs_in
    window = int(state["fitted"]["n_samples"]) / float(state["config"]["fs"])
    if seconds < 0.95 * window:
        notify(notices, f"field 'ecg': {seconds:.3g} s recorded, the model reads {window:g} s windows: the last "
                        f"{window - seconds:.3g} s are zero-padded")
    elif seconds > 1.05 * window:
        notify(notices, f"field 'ecg': {seconds:.3g} s recorded, the model reads the first {window:g} s only")
    return picked


def _resolve_ecg(state: dict, picked: Sequence[PickedLeads]) -> list[Item]:
    fs, n = float(state["config"]["fs"]), int(state["fitted"]["n_samples"])
    return [{"signal": s, "lead_mask": m} for s, m in resample_picked(picked, fs, n)]


def finish_items(states: Mapping[str, dict], items: Sequence[dict[str, Any]]) -> None:
    """Complete deferred items in place: every :class:`PickedLeads` (from :func:`raw_to_item`)
    becomes its ECG item, all resampled together."""
    where = [(k, m) for k, its in enumerate(items) for m, it in its.items() if isinstance(it, PickedLeads)]
    for m in {m for _, m in where}:
        mine = [k for k, mm in where if mm == m]
        for k, item in zip(mine, _resolve_ecg(states[m], [items[k][m] for k in mine])):
            items[k][m] = item


def wsi_item(state: dict, raw: Any) -> Item:
    """Slide(s) -> ``features`` (WSIReader eval mode: a content-seeded patch subset,
    :func:`~clinfuse.datasets.wsi.patches_read`). Raw forms in
    the module docstring; several slides are concatenated in the given order, as the reader does."""
    slides = raw if isinstance(raw, (list, tuple)) else [raw]
    if not slides:
        raise ValueError("field 'wsi': an empty list of slides")
    dim = int(state["fitted"]["feature_dim"])
    field = (lambda k: f"wsi[{k}]") if isinstance(raw, (list, tuple)) else (lambda k: "wsi")
    return {"features": patches_read([_slide(s, dim, field(k)) for k, s in enumerate(slides)],
                                     int(state["config"]["max_patches"]))}


def _slide(raw: Any, dim: int, field: str) -> np.ndarray:
    """One slide's ``(P, F)`` float32 features from a path or an in-memory form."""
    if isinstance(raw, (str, Path)):
        return read_slide_features(raw, dim, f"(field '{field}')")
    if not isinstance(raw, Mapping) or not ({"features", "features_b64"} & set(raw)):
        raise ValueError(
            f"field '{field}': expected a slide file path, {{features}} or {{features_b64, dtype, shape}}, "
            f"got {type(raw).__name__}"
        )
    if "features_b64" in raw:
        feats = decode_array(raw, "features_b64", field)
    else:
        try:
            feats = np.asarray(raw["features"], dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"field '{field}.features': not a numeric (P, F) array: {err}") from None
    return check_bag(np.asarray(feats, dtype=np.float32), dim, f"field '{field}.features'")
