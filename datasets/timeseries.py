"""Time-series modality: a long event table ``patient_id, time, variable, value`` (``timeseries.parquet``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.reader import ModalityReader, check_known_ids, require_columns

_COLUMNS = ("patient_id", "time", "variable", "value")


class TimeseriesReader(ModalityReader):
    """Reads the event table into per-patient arrays sorted by time.

    The file is scanned with polars, validated, sorted by ``(patient_id, time)`` (ties keep file
    order) and held as three flat arrays plus per-patient offsets. ``fit`` learns the variable list
    (the variables seen in training, sorted; ids ``0..V-1``) and each variable's training mean and
    population std. Events of a variable never seen in training are dropped with a warning (an
    encoder has no embedding for them); a patient left with no event is then absent.

    Note:
        Each patient keeps at most ``max_events`` events, the MOST RECENT ones: the input of a
        long stay is truncated at its start.

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet`` (``None`` skips the check).
        max_events: the cap on events per patient (most recent kept).
        horizon_hours: the prediction time in hours from the index time reported in the spec;
            ``None`` = the largest training event time rounded up to a whole hour.

    Raises:
        ValueError: a missing column, unknown patients, null/non-numeric/NaN/inf time or value,
            naming the file, column and patients.
    """

    name = "timeseries"
    filename = "timeseries.parquet"

    def __init__(
        self,
        root: str | Path,
        known_ids: Iterable[str] | None = None,
        max_events: int = 512,
        horizon_hours: float | None = None,
    ) -> None:
        super().__init__(root, known_ids)
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.max_events = int(max_events)
        self.horizon_hours = horizon_hours
        try:
            lazy = pl.scan_parquet(self.path)
            schema = lazy.collect_schema()
        except Exception as err:  # polars raises several error types; name the file
            raise ValueError(f"{self.path}: cannot read parquet: {err}") from err
        require_columns(schema.names(), _COLUMNS, self.path)
        df = lazy.select(
            pl.col("patient_id").cast(pl.Utf8),
            pl.col("time"),
            pl.col("variable").cast(pl.Utf8),
            pl.col("value"),
        ).collect()
        for col in ("patient_id", "variable"):
            if df[col].null_count():
                who = df.filter(pl.col(col).is_null())["patient_id"].unique().to_list()[:10]
                raise ValueError(f"{self.path}: column '{col}' is null (patient(s) {who})")
        df = df.with_columns(self._finite_float(df, "time"), self._finite_float(df, "value"))
        ids = df["patient_id"].unique(maintain_order=True).to_list()
        check_known_ids(ids, self.known_ids, self.path)

        df = df.sort(["patient_id", "time"], maintain_order=True)
        self._raw_variables = df["variable"].unique().sort().to_list()
        codes = df["variable"].cast(pl.Enum(self._raw_variables)).to_physical()
        self._time = df["time"].to_numpy().astype(np.float64)
        self._value = df["value"].to_numpy().astype(np.float64)
        self._code = codes.to_numpy().astype(np.int64)
        counts = df.group_by("patient_id", maintain_order=True).len()
        self._raw_ids = counts["patient_id"].to_list()
        self._raw_starts = np.concatenate([[0], np.cumsum(counts["len"].to_numpy(), dtype=np.int64)])
        self._index = {pid: i for i, pid in enumerate(self._raw_ids)}
        self._patient_of_event = np.repeat(np.arange(len(self._raw_ids)), np.diff(self._raw_starts))

    def _finite_float(self, df: pl.DataFrame, col: str) -> pl.Series:
        """``df[col]`` as Float64; ValueError naming the patients of non-numeric/null/NaN/inf rows."""
        raw = df[col]
        num = raw.cast(pl.Float64, strict=False)
        unparsable = num.is_null() & raw.is_not_null()
        if unparsable.any():
            who = df.filter(unparsable)["patient_id"].unique(maintain_order=True).to_list()[:10]
            raise ValueError(f"{self.path}: column '{col}' has non-numeric values for patient(s) {who}")
        bad = num.is_null() | ~num.fill_null(0.0).is_finite()
        if bad.any():
            who = df.filter(bad)["patient_id"].unique(maintain_order=True).to_list()[:10]
            raise ValueError(f"{self.path}: column '{col}' has null/NaN/inf values for patient(s) {who}")
        return num

    def config(self) -> dict[str, Any]:
        return {"max_events": self.max_events, "horizon_hours": self.horizon_hours}

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        rows = np.isin(self._patient_of_event, [self._index[p] for p in train_ids])
        codes, values = self._code[rows], self._value[rows]
        n_raw = len(self._raw_variables)
        count = np.bincount(codes, minlength=n_raw).astype(np.float64)
        seen = np.flatnonzero(count > 0)
        mean = np.bincount(codes, values, minlength=n_raw)[seen] / count[seen]
        sq = np.bincount(codes, (values - mean[np.searchsorted(seen, codes)]) ** 2, minlength=n_raw)
        std = np.sqrt(sq[seen] / count[seen])
        std = np.where(std > 0, std, 1.0)
        horizon = self.horizon_hours
        if horizon is None:
            horizon = float(math.ceil(self._time[rows].max()))
        return {
            "variables": [self._raw_variables[c] for c in seen],
            "mean": mean.tolist(),
            "std": std.tolist(),
            "horizon_hours": float(horizon),
        }

    def _apply(self) -> None:
        s = self._state
        lookup = {v: i for i, v in enumerate(s["variables"])}
        raw_to_var = np.array([lookup.get(v, -1) for v in self._raw_variables], dtype=np.int64)
        var = raw_to_var[self._code] if len(self._code) else self._code
        keep = var >= 0
        if not keep.all():
            unseen = sorted({self._raw_variables[c] for c in np.unique(self._code[~keep])})
            warnings.warn(
                f"{self.path}: dropping {int((~keep).sum())} events of variables not seen in training: "
                f"{unseen[:10]}",
                stacklevel=2,
            )
        mean, std = np.asarray(s["mean"]), np.asarray(s["std"])
        var = var[keep]
        self._times = self._time[keep].astype(np.float32)
        self._variables = var
        self._values = ((self._value[keep] - mean[var]) / std[var]).astype(np.float32)
        counts = np.bincount(self._patient_of_event[keep], minlength=len(self._raw_ids))
        starts = np.concatenate([[0], np.cumsum(counts)])
        self._bounds = {pid: (int(starts[i]), int(starts[i + 1])) for i, pid in enumerate(self._raw_ids)}
        self._index = {pid: i for i, pid in enumerate(self._raw_ids) if counts[i] > 0}

    def _spec(self) -> dict[str, Any]:
        return {"variables": list(self._state["variables"]), "horizon_hours": self._state["horizon_hours"]}

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        start, end = self._bounds[patient_id]
        start = max(start, end - self.max_events)  # keep the most recent events
        return {
            "times": self._times[start:end],
            "variables": self._variables[start:end],
            "values": self._values[start:end],
        }

    def collate(self, items: Sequence[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        """Pad event sequences to the longest in the batch.

        Shapes:
            times ``(B, T)`` float, variables ``(B, T)`` long, values ``(B, T)`` float,
            mask ``(B, T)`` bool, present ``(B,)`` bool.
        """
        lengths = [None if it is None else np.ones(len(it["times"]), dtype=bool) for it in items]
        return {
            "times": pad_stack(pick(items, "times"), (None,), np.float32, "timeseries.times"),
            "variables": pad_stack(pick(items, "variables"), (None,), np.int64, "timeseries.variables"),
            "values": pad_stack(pick(items, "values"), (None,), np.float32, "timeseries.values"),
            "mask": pad_stack(lengths, (None,), np.bool_, "timeseries.mask"),
            "present": present_mask(items),
        }
