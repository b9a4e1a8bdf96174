"""The contract every modality reader follows, and the input checks the readers share.

A reader owns one modality of a cohort folder (see ``docs/formats.md``). Its life cycle:

1. ``Reader(root, known_ids, **config)`` reads and validates the files (in memory, or only the
   paths for lazy modalities);
2. ``fit(train_ids)`` learns the preprocessing on the training patients only, or
   ``Reader.from_state(root, state)`` restores preprocessing saved with ``state_dict()``;
3. ``get(patient_id)`` returns one patient's unpadded encoder input (``None`` = absent) and
   ``collate(items)`` pads a list of them into the batch tensors of ``docs/formats.md`` section 2.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch


class ModalityReader(ABC):
    """Base class of the per-modality readers.

    Subclasses set ``name`` and ``filename`` (relative to the cohort root; its existence means the
    modality is available), fill ``self._index`` (patient id -> position in their store) in
    ``__init__`` or ``_apply``, and implement ``config``, ``_fit``, ``_apply``, ``_spec``,
    ``_get`` and ``collate``.

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet``; rows of any other patient raise
            ``ValueError``. ``None`` skips that check.
    """

    name: ClassVar[str] = ""
    filename: ClassVar[str] = ""

    def __init__(self, root: str | Path, known_ids: Iterable[str] | None = None) -> None:
        self.root = Path(root)
        self.known_ids = None if known_ids is None else {str(p) for p in known_ids}
        self._index: dict[str, int] = {}
        self._state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ availability
    @property
    def path(self) -> Path:
        """The file whose presence makes this modality available."""
        return self.root / self.filename

    @classmethod
    def available(cls, root: str | Path) -> bool:
        """Whether the cohort folder ``root`` holds this modality."""
        return (Path(root) / cls.filename).exists()

    @property
    def patient_ids(self) -> list[str]:
        """Ids of the patients who have this modality."""
        return list(self._index)

    def has(self, patient_id: str) -> bool:
        """Whether ``patient_id`` has this modality."""
        return patient_id in self._index

    # ------------------------------------------------------------------ preprocessing
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments (JSON-able) that shaped this reader."""

    @abstractmethod
    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        """Learn preprocessing from ``train_ids`` (all present); return it as a JSON-able dict."""

    @abstractmethod
    def _apply(self) -> None:
        """Build the preprocessed per-patient store from ``self._state``."""

    @abstractmethod
    def _spec(self) -> dict[str, Any]:
        """The modality spec of ``docs/formats.md`` section 3."""

    @abstractmethod
    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        """One present patient's unpadded encoder input."""

    @abstractmethod
    def collate(self, items: Sequence[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        """Pad ``get`` outputs (``None`` = absent) into batch tensors with ``present (B,)``."""

    @property
    def fitted(self) -> bool:
        """Whether preprocessing has been fitted or restored."""
        return self._state is not None

    def fit(self, train_ids: Iterable[str]) -> "ModalityReader":
        """Learn preprocessing on the training patients that have this modality.

        Raises:
            ValueError: when no training patient has this modality.
        """
        train = [p for p in train_ids if self.has(p)]
        if not train:
            raise ValueError(f"{self.path}: no training patient has modality '{self.name}'; cannot fit")
        self._state = self._fit(train)
        self._apply()
        return self

    def state_dict(self) -> dict[str, Any]:
        """The fitted preprocessing and config as a plain JSON-able dict."""
        self._require_fitted()
        return {"modality": self.name, "config": self.config(), "fitted": copy.deepcopy(self._state)}

    @classmethod
    def from_state(
        cls, root: str | Path, state: dict[str, Any], known_ids: Iterable[str] | None = None
    ) -> "ModalityReader":
        """Read ``root`` and apply preprocessing saved by ``state_dict()`` (no refit)."""
        if state.get("modality") != cls.name:
            raise ValueError(f"state is for modality {state.get('modality')!r}, not {cls.name!r}")
        reader = cls(root, known_ids, **state["config"])
        reader._state = copy.deepcopy(state["fitted"])
        reader._apply()
        return reader

    def spec(self) -> dict[str, Any]:
        """The JSON-able spec an encoder is built from (``docs/formats.md`` section 3)."""
        self._require_fitted()
        return self._spec()

    def get(self, patient_id: str, training: bool = False) -> dict[str, np.ndarray] | None:
        """One patient's unpadded encoder input, or ``None`` when the modality is absent.

        Args:
            patient_id: the patient.
            training: sample randomly where the reader samples (WSI patches); otherwise use a
                deterministic, per-patient subset.
        """
        self._require_fitted()
        if patient_id not in self._index:
            return None
        return self._get(patient_id, training)

    def _require_fitted(self) -> None:
        if self._state is None:
            raise ValueError(f"{self.name} reader of {self.path}: call fit(train_ids) or from_state() first")


# ---------------------------------------------------------------------- shared input checks
def read_cohort_info(path: Path) -> dict[str, Any]:
    """A cohort's ``cohort.json`` as a dict (``{}`` when the file does not exist).

    Raises:
        ValueError: naming the file, when it is not valid JSON or not a JSON object.
    """
    path = Path(path)
    return read_json_object(path) if path.exists() else {}


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        ValueError: naming the file, when it is not valid JSON or not a JSON object.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_table(path: Path, required: Sequence[str], str_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a ``.csv`` or ``.parquet`` table, check its columns, make ``patient_id`` a string.

    Raises:
        ValueError: unreadable file, a missing required column, or a null patient id.
    """
    try:
        if path.suffix == ".csv":
            dtypes = {c: str for c in ("patient_id", *str_columns)}
            df = pd.read_csv(path, dtype=dtypes)
        else:
            df = pd.read_parquet(path)
    except Exception as err:  # pandas/pyarrow raise many types; name the file
        raise ValueError(f"{path}: cannot read table: {err}") from err
    require_columns(df.columns, required, path)
    if "patient_id" in df.columns:
        if df["patient_id"].isna().any():
            rows = np.flatnonzero(df["patient_id"].isna().to_numpy())[:5].tolist()
            raise ValueError(f"{path}: column 'patient_id' is null in rows {rows}")
        check_not_float_ids(df["patient_id"], path)
        df["patient_id"] = df["patient_id"].astype(str)
    return df


#: what to do about float patient ids (``691960.0``), which would become the text ``"691960.0"``
FLOAT_IDS_HINT = "write patient_id as integers or text (float ids come from merges that introduced NaN)"


def check_not_float_ids(ids: pd.Series, path: Path) -> None:
    """Raise ``ValueError`` naming the file and an example value when ``ids`` holds floats.

    A float id (``691960.0``, what a pandas merge that introduced NaN leaves) would become the
    string ``"691960.0"`` and match no other file's ``"691960"``.
    """
    floats = pd.api.types.is_float_dtype(ids.dtype) or (
        ids.dtype == object and pd.api.types.infer_dtype(ids, skipna=True) in ("floating", "mixed-integer-float", "decimal")
    )
    if floats:
        example = next((v for v in ids if isinstance(v, (float, np.floating))), ids.iloc[0])
        raise ValueError(f"{path}: column 'patient_id' holds floats (e.g. {example!r}); {FLOAT_IDS_HINT}")


def case_collisions(values: Iterable[str]) -> list[list[str]]:
    """Groups of distinct ``values`` equal after ``str.strip().casefold()`` (``'F'``, ``'f '``),
    each sorted, in sorted order; ``[]`` when there is none."""
    groups: dict[str, set[str]] = {}
    for v in values:
        groups.setdefault(v.strip().casefold(), set()).add(v)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def require_columns(columns: Iterable[str], required: Sequence[str], path: Path) -> None:
    """Raise ``ValueError`` naming the file and every required column it lacks."""
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; found {sorted(have)}")


def read_patient_table(path: Path, known: set[str] | None) -> pd.DataFrame:
    """A one-row-per-patient table: ``patient_id`` required, unique, and known to the labels."""
    df = read_table(path, ["patient_id"])
    ids = df["patient_id"].tolist()
    check_unique_ids(ids, path)
    check_known_ids(ids, known, path)
    return df


def check_unique_ids(ids: Sequence[str], path: Path) -> None:
    """Raise ``ValueError`` naming the duplicated patient ids of a one-row-per-patient file."""
    s = pd.Series(list(ids))
    dup = s[s.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"{path}: duplicate patient_id(s) {dup[:10]} (one row per patient expected)")


def check_known_ids(ids: Iterable[str], known: set[str] | None, path: Path) -> None:
    """Raise ``ValueError`` naming patient ids that are not in ``labels.parquet``."""
    if known is None:
        return
    unknown = sorted(set(ids) - known)
    if unknown:
        raise ValueError(unknown_ids_message(path, unknown, known))


def unknown_ids_message(path: Path, unknown: Sequence[str], known: Iterable[str]) -> str:
    """The error text for patient ids of ``path`` that ``labels.parquet`` lacks, with a few of the
    labels' ids beside them, so that a formatting mismatch (``'00123'`` vs ``'123'``) shows."""
    sample = sorted(known)[:5] if isinstance(known, (set, frozenset)) else list(known)[:5]
    return (f"{path}: patient_id(s) {list(unknown)[:10]} are not in labels.parquet "
            f"(its ids look like {sample})")


#: values beyond this magnitude become inf in the float32 tensors the models read
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite(
    values: np.ndarray, ids: Sequence[str] | np.ndarray, path: Path, column: str, nan_hint: str = ""
) -> None:
    """Raise ``ValueError`` naming file, column and patients where ``values`` is NaN or inf, or
    beyond float32's range (``|x| > 3.4e38``: inf once in a model's tensors).

    ``nan_hint`` (what to do instead, e.g. "drop rows without a time") is appended when a value
    is NaN.

    Shapes:
        values: ``(R,)`` or ``(R, C)``; ids: ``(R,)`` the patient of each row.
    """
    x = np.asarray(values, dtype=np.float64)
    for bad, what in ((~np.isfinite(x), "NaN/inf values"), (huge_values(x), "values beyond float32's range (|x| > 3.4e38)")):
        if bad.ndim > 1:
            bad = bad.any(axis=tuple(range(1, bad.ndim)))
        if bad.any():
            who = pd.unique(np.asarray(ids)[bad])[:10].tolist()
            hint = f"; {nan_hint}" if nan_hint and np.isnan(x).any() else ""
            raise ValueError(f"{path}: column '{column}' has {what} for patient(s) {who}{hint}")


def huge_values(values: np.ndarray) -> np.ndarray:
    """Mask of finite values beyond float32's range (NaN/inf are not flagged here)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)


#: what to write instead of a datetime / timedelta time (``docs/formats.md`` section 1)
TIMES_HINT = {
    "hours": "times must be numbers: hours from the patient's index time (labels: days), "
             "e.g. (charttime - admittime).dt.total_seconds() / 3600",
    "days": "label times must be numbers: days (times in the other files: hours), "
            "e.g. (deathtime - admittime).dt.total_seconds() / 86400",
}


def is_temporal(values: pd.Series) -> bool:
    """Whether a column holds datetimes, dates, timedeltas or periods (as a dtype or as objects)."""
    if values.dtype.kind in "mM" or isinstance(values.dtype, pd.PeriodDtype):
        return True
    if values.dtype != object:
        return False
    kind = pd.api.types.infer_dtype(values, skipna=True)
    return kind in ("datetime64", "datetime", "date", "timedelta64", "timedelta", "period", "time")


def temporal_error(where: str, column: str, dtype: Any, unit: str = "hours") -> ValueError:
    """The error for a datetime/timedelta column where numbers are expected; ``where`` names the
    file (or the patient and field), ``unit`` the hint's time unit (``hours`` or ``days``)."""
    return ValueError(f"{where}: column '{column}' is {dtype}, not numbers; {TIMES_HINT[unit]}")


def to_float(values: pd.Series, path: Path, column: str, ids: Sequence[str], unit: str = "hours") -> np.ndarray:
    """Convert a column to float64, raising ``ValueError`` naming unparsable entries' patients.

    Datetime and timedelta columns are refused (``pd.to_numeric`` would read them as nanoseconds),
    with a hint in ``unit`` (``hours`` or ``days``) on how to write times.
    """
    if is_temporal(values):
        dtype = values.dtype if values.dtype != object else pd.api.types.infer_dtype(values, skipna=True) + " objects"
        raise temporal_error(str(path), column, dtype, unit)
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna().to_numpy() & values.notna().to_numpy()
    if bad.any():
        who = pd.unique(np.asarray(ids)[bad])[:10].tolist()
        raise ValueError(f"{path}: column '{column}' has non-numeric values for patient(s) {who}")
    return num.to_numpy(dtype=np.float64)
