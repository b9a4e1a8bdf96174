"""Raw per-patient inputs -> the encoder items a fitted reader's ``get`` returns, from saved state only.

The prognosis API (:mod:`clinfuse.experiments.prognosis`) receives one patient's raw values per
modality, with no cohort folder. Each function here applies the FITTED preprocessing saved by
``ModalityReader.state_dict()`` (``{"modality", "config", "fitted"}``) exactly as the reader does in
eval mode, so a prediction from raw inputs equals the one from the data module's test loader.
Batches are padded by the readers' own ``collate`` (:func:`collate_items`).

Raw formats (one patient):

- ``tabular``: ``{column: value}``; a missing key or ``None`` = value missing. Numeric NaN/inf is an
  error (send ``None`` or leave the key out for a missing value); an unknown categorical level maps
  to index 1 ("unseen") with a warning, as in training.
- ``timeseries``: a list of ``{"time", "variable", "value"}``, a DataFrame with those columns, or a
  dict of three equal-length lists ``{"time": [...], "variable": [...], "value": [...]}`` (fastest);
  variables never seen in training are dropped with a warning. Times are float hours from the
  patient's index time: datetimes and timedeltas are refused in every form (as are NaN times and
  values: leave the event out).
- ``ecg``: a WFDB record path without extension (``.hea``/``.dat`` next to it), or an in-memory
  ``{"signal": (L, S) lists in mV, "fs": Hz, "leads": [names]}``, or the same with the signal as
  ``"signal_b64"`` + ``"dtype"`` + ``"shape"`` (:func:`clinfuse.experiments.wire.encode_ecg`;
  the compact form for REST).
- ``notes``: a list of ``{"time", "text"}`` or a DataFrame with those columns (times in hours, as
  for ``timeseries``).
- ``wsi``: one slide or a list of slides, each a CLAM ``.h5`` or torch ``.pt`` path (``features
  (P, F)``), an in-memory ``{"features": (P, F) array}``, or the same as ``"features_b64"`` +
  ``"dtype"`` + ``"shape"`` (:func:`clinfuse.experiments.wire.encode_wsi`).
- ``genomics``: ``{"<gene>_rnaseq": float, "<gene>_mut": 0/1}``, every training gene required.

Every function raises ``ValueError`` naming the offending field; the caller adds the patient. The
ECG and WSI parsers live in :mod:`clinfuse.experiments.raw_signals` (re-exported here).
"""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from clinfuse.datasets.cohort import READERS
from clinfuse.datasets.ecg_leads import PickedLeads
from clinfuse.datasets.note_tokenizers import encode_bpe, load_bpe
from clinfuse.datasets.notes import PAD, UNK, split_note, tokenize
from clinfuse.datasets.reader import FLOAT32_MAX, TIMES_HINT, ModalityReader, huge_values
from clinfuse.experiments.raw_signals import Item, ecg_item, ecg_leads, finish_items, notify, wsi_item
from clinfuse.experiments.raw_signals import as_number as _float

__all__ = ["ecg_item", "ecg_leads", "finish_items", "wsi_item", "raw_to_item", "collate_shell",
           "tabular_item", "timeseries_item", "notes_item", "genomics_item"]


_PLAIN_NUMBERS = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})
#: datetimes, dates, timedeltas (pandas' Timestamp/Timedelta included; np.timedelta64 is an integer
#: type to numpy, so it would pass as a number) and periods
_TEMPORAL = (datetime.date, datetime.time, datetime.timedelta, np.datetime64, np.timedelta64, pd.Period)


def _not_temporal(value: Any, field: str) -> Any:
    """``value``, or ValueError naming ``field`` and how to write a time when it is a datetime or
    a timedelta (which would otherwise be refused as "not a number", or read as nanoseconds)."""
    if isinstance(value, _TEMPORAL):
        raise ValueError(f"field '{field}': got {value!r}, not a number; {TIMES_HINT['hours']}")
    return value


def _floats(values: Sequence[Any], prefix: str, columns: Sequence[str]) -> np.ndarray:
    """Many numbers -> float64 array with :func:`_float`'s checks and errors (the first bad field,
    ``prefix.column``, is named); plain numbers take one vectorised check instead of one call each,
    and the field names are only built when a value needs the per-value checks."""
    if all(type(v) in _PLAIN_NUMBERS for v in values):  # type(True) is bool: never plain
        x = np.array(values, dtype=np.float64)
        # max |x| is NaN when any value is, so this holds exactly when every value is finite and
        # within float32's range (one pass instead of isfinite + huge_values)
        if not len(x) or np.abs(x).max() <= FLOAT32_MAX:
            return x
    return np.array([_float(_not_temporal(v, f), f) for v, f in zip(values, (f"{prefix}.{c}" for c in columns))],
                    dtype=np.float64)


def _rows(raw: Any, columns: Sequence[str], field: str) -> list[dict[str, Any]]:
    """A list of dicts (or a DataFrame) with ``columns`` -> list of dicts; ValueError otherwise."""
    if isinstance(raw, pd.DataFrame):
        raw = raw.to_dict("records")
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"field '{field}': expected a list of {{{', '.join(columns)}}} records, got {type(raw).__name__}")
    rows = []
    for i, row in enumerate(raw):
        if not isinstance(row, Mapping):
            raise ValueError(f"field '{field}[{i}]': expected a dict, got {type(row).__name__}")
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"field '{field}[{i}]': missing key(s) {missing}")
        rows.append(row)
    if not rows:
        raise ValueError(f"field '{field}': empty list (omit the modality instead)")
    return rows


def tabular_item(state: dict, raw: Any) -> Item:
    """``{column: value}`` -> ``numeric``, ``numeric_observed``, ``categorical`` (TabularReader)."""
    s = state["fitted"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"field 'tabular': expected a dict column -> value, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(s["numeric_features"]) - set(s["categorical_features"]) - {"patient_id"})
    if unknown:
        raise ValueError(f"field 'tabular': unknown column(s) {unknown}")
    x = np.full(len(s["numeric_features"]), np.nan)
    given = [(j, col) for j, col in enumerate(s["numeric_features"]) if raw.get(col) is not None]  # NaN: an error
    nan = next((col for _, col in given if _is_missing(raw[col])), None)
    if nan is not None:  # NaN is what a pandas row holds for a missing value; None says it unambiguously
        raise ValueError(f"field 'tabular.{nan}': value must be finite, got {raw[nan]!r}; "
                         "send None or leave the key out for a missing value")
    if given:  # bools as 0/1: the reader reads a bool column as numeric
        values = [float(raw[col]) if isinstance(raw[col], (bool, np.bool_)) else raw[col] for _, col in given]
        x[[j for j, _ in given]] = _floats(values, "tabular", [col for _, col in given])
    observed = ~np.isnan(x)
    z = (x - np.asarray(s["mean"])) / np.asarray(s["std"])
    codes = np.zeros(len(s["categorical_features"]), dtype=np.int64)
    for j, col in enumerate(s["categorical_features"]):
        value = raw.get(col)
        if _is_missing(value):
            continue
        levels = s["levels"][col]
        if str(value) in levels:
            codes[j] = levels.index(str(value)) + 2
        else:  # reported in input_warnings (experiments/input_checks.py), with the training levels
            codes[j] = 1
    return {"numeric": np.where(observed, z, 0.0).astype(np.float32), "numeric_observed": observed, "categorical": codes}


_NOT_NUMBERS = frozenset({bool, np.bool_, str, np.str_, bytes})


def _is_missing(value: Any) -> bool:
    """None, or a float/pandas missing scalar (NaN of any float type, ``pd.NA``, ``NaT``)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _columns(raw: Any, columns: Sequence[str], field: str) -> dict[str, np.ndarray]:
    """Time-series events as records (list of dicts), a DataFrame or a dict of equal-length lists ->
    one array per column (``variable`` as objects, the others numeric)."""
    if isinstance(raw, Mapping) and all(c in raw for c in columns):
        for c in (c for c in columns if c != "variable" and isinstance(raw[c], (list, tuple))):
            if _NOT_NUMBERS & set(map(type, raw[c])):  # numpy would read True as 1 and "1.5" as 1.5
                bad = next(i for i, v in enumerate(raw[c]) if type(v) in _NOT_NUMBERS)
                raise ValueError(f"field '{field}.{c}[{bad}]': expected a number, got {raw[c][bad]!r}")
        try:
            cols = {c: np.asarray(raw[c], dtype=object if c == "variable" else None) for c in columns}
        except ValueError as err:  # ragged nested lists
            raise ValueError(f"field '{field}': columns {list(columns)} must be 1-D lists of numbers/names: {err}") from None
        lengths = {c: cols[c].shape for c in columns}
        if any(a.ndim != 1 for a in cols.values()) or len({a.shape[0] for a in cols.values()}) != 1:
            raise ValueError(f"field '{field}': columns {list(columns)} must be 1-D lists of one length, got {lengths}")
        if not len(cols[columns[0]]):
            raise ValueError(f"field '{field}': empty (omit the modality instead)")
        return cols
    if isinstance(raw, pd.DataFrame):
        missing = [c for c in columns if c not in raw.columns]
        if missing:
            raise ValueError(f"field '{field}': missing column(s) {missing}")
        if raw.empty:
            raise ValueError(f"field '{field}': empty (omit the modality instead)")
        return {c: raw[c].to_numpy() for c in columns}
    rows = _rows(raw, columns, field)
    return {c: np.array([r[c] for r in rows], dtype=object) for c in columns}


def _finite_floats(values: np.ndarray, field: str) -> np.ndarray:
    """A numeric 1-D array as float64; ValueError naming the first bad index (non-number, NaN, inf)
    or, for datetimes and timedeltas (in any of the input forms), how to write times."""
    if values.dtype.kind in "mM":  # a DataFrame column or a list of np.datetime64: would be nanoseconds
        raise ValueError(f"field '{field}': {values.dtype} values, not numbers; {TIMES_HINT['hours']}")
    if values.dtype == object:
        for i, v in enumerate(values.tolist()):
            _not_temporal(v, f"{field}[{i}]")
    try:
        if values.dtype.kind in "bUS":  # numpy converts True and "1.5" silently; the list form refuses them
            raise TypeError
        if values.dtype == object and any(isinstance(v, (bool, str, np.bool_)) or v is None for v in values):
            raise TypeError
        x = values.astype(np.float64)
    except (TypeError, ValueError):
        bad = next(i for i, v in enumerate(values.tolist()) if isinstance(v, (bool, str, np.bool_)) or not _is_number(v))
        raise ValueError(f"field '{field}[{bad}]': expected a number, got {values[bad]!r}") from None
    bad = np.flatnonzero(~np.isfinite(x) | huge_values(x))
    if len(bad):
        hint = f"; {_NAN_HINTS[field]}" if field in _NAN_HINTS and np.isnan(x[bad[0]]) else ""
        raise ValueError(f"field '{field}[{bad[0]}]': value must be finite and within float32's range, got {x[bad[0]]}{hint}")
    return x


_NAN_HINTS = {"timeseries.value": "drop events without a value: a measurement not taken is simply absent",
              "timeseries.time": "drop events without a time"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def timeseries_item(state: dict, raw: Any, notices: list[str] | None = None) -> Item | None:
    """Events -> ``times``, ``variables``, ``values`` (TimeseriesReader); None if none is kept.

    ``raw``: a list of ``{"time", "variable", "value"}``, a DataFrame with those columns, or a dict
    of three equal-length lists (the fastest form: validated with numpy; variables mapped by one
    dict lookup per event).
    """
    s, max_events = state["fitted"], int(state["config"]["max_events"])
    cols = _columns(raw, ("time", "variable", "value"), "timeseries")
    times = _finite_floats(cols["time"], "timeseries.time")
    values = _finite_floats(cols["value"], "timeseries.value")
    lookup = _variable_index(tuple(s["variables"]))
    # str(v): the reader's variable names are strings; a dict is ~10x faster than pd.Index here
    var = np.fromiter((lookup.get(str(v), -1) for v in cols["variable"]), dtype=np.int64, count=len(cols["variable"]))
    if (var < 0).any():
        unseen = sorted({str(v) for v in cols["variable"][var < 0]})
        notify(notices, f"field 'timeseries': dropping events of variables unseen in training: {unseen[:10]}")
    order = np.argsort(times, kind="stable")
    order = order[var[order] >= 0][-max_events:]  # keep the most recent events
    if not len(order):
        return None
    v = var[order]
    z = (values[order] - np.asarray(s["mean"])[v]) / np.asarray(s["std"])[v]
    return {"times": times[order].astype(np.float32), "variables": v.astype(np.int64), "values": z.astype(np.float32)}


@functools.lru_cache(maxsize=8)
def _variable_index(variables: tuple[str, ...]) -> dict[str, int]:
    return {v: i for i, v in enumerate(variables)}


def notes_item(state: dict, raw: Any, notices: list[str] | None = None) -> Item | None:
    """Notes -> the NotesReader's item: ``token_ids``/``token_mask`` (word or BPE vocabulary) or,
    for a frozen pretrained model, ``embeddings``; plus ``note_times``. None if all are empty.

    A pretrained-notes predictor embeds with the model directory recorded at training time (it must
    exist where the predictor runs, and is checked to be the same model).
    """
    cfg, fitted = state["config"], state["fitted"]
    rows = _rows(raw, ("time", "text"), "notes")
    split = cfg.get("long_notes", "truncate") == "split"
    notes, wordless = [], 0
    for i, r in enumerate(rows):
        if not isinstance(r["text"], str):
            raise ValueError(f"field 'notes[{i}].text': expected a string, got {type(r['text']).__name__}")
        t = _float(_not_temporal(r["time"], f"notes[{i}].time"), f"notes[{i}].time")
        for text in split_note(r["text"], int(cfg["max_words"])) if split else [r["text"]]:
            words = tokenize(text)
            if words:  # the reader drops notes without any word too
                notes.append((t, text, words))
            else:
                wordless += 1
    if wordless:
        notify(notices, f"field 'notes': {wordless} note(s) without any word ignored"
                        + ("; the patient's notes count as absent" if not notes else ""))
    if not notes:
        return None
    notes = sorted(notes, key=lambda n: n[0])[-int(cfg["max_notes"]) :]  # stable: ties keep input order
    texts = [text for _, text, _ in notes]
    times = np.array([t for t, _, _ in notes], dtype=np.float64).astype(np.float32)
    if cfg.get("pretrained"):
        embedder = _note_embedder(str(cfg["pretrained"]))
        if embedder.identity != fitted.get("model"):
            raise ValueError(f"field 'notes': the model at {cfg['pretrained']} is not the one the predictor was trained with")
        return {"embeddings": embedder.embed(texts).astype(np.float32), "note_times": times}
    max_words = int(cfg["max_words"])
    if cfg.get("tokenizer") == "bpe":
        rows_ids = encode_bpe(_bpe(fitted["tokenizer_json"]), texts, max_words)
    else:
        lookup = _vocab_lookup(fitted["vocab"])
        rows_ids = [[lookup.get(w, UNK) for w in words[:max_words]] for _, _, words in notes]
    ids = np.zeros((len(rows_ids), max(len(r) for r in rows_ids)), dtype=np.int64)
    for k, row in enumerate(rows_ids):
        ids[k, : len(row)] = row
    return {"token_ids": ids, "token_mask": ids != PAD, "note_times": times}


_VOCABS: dict[int, tuple[list, dict[str, int]]] = {}


def _vocab_lookup(vocab: list[str]) -> dict[str, int]:
    """word -> id (vocabulary position + 2, as the reader numbers them), built once per vocabulary
    list (a real vocabulary has tens of thousands of words; rebuilding it per patient dominated)."""
    entry = _VOCABS.get(id(vocab))
    if entry is None or entry[0] is not vocab:  # the entry holds the list, so its id stays unique
        if len(_VOCABS) >= 8:
            _VOCABS.clear()
        entry = _VOCABS[id(vocab)] = (vocab, {w: i + 2 for i, w in enumerate(vocab)})
    return entry[1]


@functools.lru_cache(maxsize=4)
def _bpe(tokenizer_json: str):
    return load_bpe(tokenizer_json)


@functools.lru_cache(maxsize=2)
def _note_embedder(model_dir: str):
    from clinfuse.datasets.note_embeddings import PretrainedNoteEmbedder

    return PretrainedNoteEmbedder(model_dir, cache_dir=None, show_progress=False)


@functools.lru_cache(maxsize=8)
def _genomics_columns(genes: tuple[str, ...], mutations: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]:
    """The expression columns, the mutation columns and every accepted key of a genomics record
    (cached: built once per model instead of once per patient)."""
    expr_cols, mut_cols = tuple(f"{g}_rnaseq" for g in genes), tuple(f"{g}_mut" for g in mutations)
    return expr_cols, mut_cols, frozenset([*expr_cols, *mut_cols, "patient_id"])


def genomics_item(state: dict, raw: Any) -> Item:
    """``{<gene>_rnaseq, <gene>_mut}`` -> ``expression``, ``mutations`` (GenomicsReader)."""
    s = state["fitted"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"field 'genomics': expected a dict, got {type(raw).__name__}")
    expr_cols, mut_cols, known = _genomics_columns(tuple(s["genes"]), tuple(s["mutations"]))
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"field 'genomics': unknown column(s) {unknown[:10]}")
    missing = [c for c in expr_cols + mut_cols if raw.get(c) is None]
    if missing:
        raise ValueError(f"field 'genomics': missing column(s) {missing[:10]} (no missing-value mask)")
    x = _floats([raw[c] for c in expr_cols], "genomics", expr_cols)
    mut = _floats([raw[c] for c in mut_cols], "genomics", mut_cols).astype(np.float32)
    bad = [c for c, m in zip(mut_cols, mut) if m not in (0.0, 1.0)]
    if bad:
        raise ValueError(f"field 'genomics.{bad[0]}': mutations must be 0/1")
    z = ((x - np.asarray(s["mean"])) / np.asarray(s["std"])).astype(np.float32)
    return {"expression": z, "mutations": mut}


def raw_to_item(
    modality: str, state: dict, raw: Any, patient_id: str, notices: list[str] | None = None
) -> Item | PickedLeads | None:
    """Dispatch one modality's raw value to its transform (None = nothing usable: absent).

    The ECG comes back validated but not yet resampled (a :class:`PickedLeads`): call
    :func:`finish_items` on the batch's items once all patients are parsed. Notes on usable but
    doubtful inputs (unseen time-series variables, an ECG padded or cropped to the window) go to
    ``notices`` when given, else are ``UserWarning``s.
    """
    if modality == "tabular":
        return tabular_item(state, raw)
    if modality == "timeseries":
        return timeseries_item(state, raw, notices)
    if modality == "ecg":
        return ecg_leads(state, raw, patient_id, notices)
    if modality == "notes":
        return notes_item(state, raw, notices)
    if modality == "wsi":
        return wsi_item(state, raw)
    if modality == "genomics":
        return genomics_item(state, raw)
    raise ValueError(f"unknown modality {modality!r}")


def collate_shell(state: dict, spec: dict | None = None) -> ModalityReader:
    """A reader object holding only what its ``collate`` reads (no cohort folder needed);
    ``spec`` is the model's spec of this modality (the notes embedding width)."""
    cls = READERS[state["modality"]]
    shell = cls.__new__(cls)
    shell._state = state["fitted"]
    if cls.name == "ecg":
        shell.leads, shell.n_samples = list(state["config"]["leads"]), int(state["fitted"]["n_samples"])
    if cls.name == "notes":
        shell.pretrained = state["config"].get("pretrained")
        shell._embedding_dim = int((spec or {}).get("embedding_dim", 0))
    if cls.name == "genomics":
        shell.genes, shell.mutations = list(state["fitted"]["genes"]), list(state["fitted"]["mutations"])
    return shell
