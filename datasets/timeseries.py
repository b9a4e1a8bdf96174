"""Time-series modality: a long event table ``patient_id, time, variable, value`` (``timeseries.parquet``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.reader import ModalityReader, check_known_ids, require_columns

_COLUMNS = ("patient_id", "time", "variable", "value")
_BATCH_ROWS = 1 << 20  # rows per streamed record batch: bounds the transient memory of reading


class TimeseriesReader(ModalityReader):
    """Reads the event table into per-patient arrays sorted by time.

    The file is streamed in record batches with pyarrow (string columns read as dictionaries, so
    no per-row Python or Arrow string is built), validated, and held as flat arrays sorted by
    ``(patient_id, time)`` (ties keep file order) plus per-patient offsets; a file already in that
    order (what the converters write) is not re-sorted. ``fit`` learns the variable list (the
    variables seen in training, sorted; ids ``0..V-1``) and each variable's training mean and
    population std. Events of a variable never seen in training are dropped with a warning (an
    encoder has no embedding for them); a patient left with no event is then absent.

    Memory: 20 bytes per event once fitted (float64 raw value, float32 time and normalised value,
    int32 variable id); 24 bytes per event plus one batch while reading (8 more when the file needs
    sorting). ``benchmarks/bench_meds.py`` measured a peak of about 50-65 bytes per event over the
    RSS after imports, allocator slack included.

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
        pid, code, time, value, pid_names, var_names = _read_events(self.path)
        check_known_ids(pid_names, self.known_ids, self.path)
        # ids in sorted-string order (patients, then variables), as a sort by string would give
        pid = _to_sorted_ranks(pid, pid_names)
        code = _to_sorted_ranks(code, var_names)
        order = _sort_order(pid, time)
        if order is not None:  # the file is not in (patient, time) order
            pid, code, time, value = pid[order], code[order], time[order], value[order]
            del order
        counts = np.bincount(pid, minlength=len(pid_names))
        del pid
        self._raw_ids = sorted(pid_names)
        self._raw_variables = sorted(var_names)
        self._raw_starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        # per-patient latest time: all that fit() needs of float64 times (the horizon)
        self._max_time = np.maximum.reduceat(time, self._raw_starts[:-1]) if len(time) else np.zeros(0)
        self._time = time.astype(np.float32)
        del time
        self._value = value
        self._code = code
        self._index = {p: i for i, p in enumerate(self._raw_ids)}

    def config(self) -> dict[str, Any]:
        return {"max_events": self.max_events, "horizon_hours": self.horizon_hours}

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        patients = np.array([self._index[p] for p in train_ids], dtype=np.int64)
        in_train = np.zeros(len(self._raw_ids), dtype=bool)
        in_train[patients] = True
        rows = np.repeat(in_train, np.diff(self._raw_starts))
        n_raw = len(self._raw_variables)
        # two passes (mean, then squared deviations), chunked so temporaries stay small
        count, total, sq = np.zeros(n_raw), np.zeros(n_raw), np.zeros(n_raw)
        for sl in _chunks(len(rows)):
            codes, values = self._code[sl][rows[sl]], self._value[sl][rows[sl]]
            count += np.bincount(codes, minlength=n_raw)
            total += np.bincount(codes, values, minlength=n_raw)
        seen = np.flatnonzero(count > 0)
        mean_all = total / np.maximum(count, 1.0)
        for sl in _chunks(len(rows)):
            codes, values = self._code[sl][rows[sl]], self._value[sl][rows[sl]]
            sq += np.bincount(codes, (values - mean_all[codes]) ** 2, minlength=n_raw)
        mean = mean_all[seen]
        std = np.sqrt(sq[seen] / count[seen])
        std = np.where(std > 0, std, 1.0)
        horizon = self.horizon_hours
        if horizon is None:
            horizon = float(math.ceil(self._max_time[patients].max()))
        return {
            "variables": [self._raw_variables[c] for c in seen],
            "mean": mean.tolist(),
            "std": std.tolist(),
            "horizon_hours": float(horizon),
        }

    def _apply(self) -> None:
        s = self._state
        lookup = {v: i for i, v in enumerate(s["variables"])}
        raw_to_var = np.array([lookup.get(v, -1) for v in self._raw_variables], dtype=np.int32)
        identity = np.array_equal(raw_to_var, np.arange(len(raw_to_var)))
        var = self._code if identity else raw_to_var[self._code]  # no copy when every variable is known
        keep = var >= 0
        counts = np.diff(self._raw_starts)
        if keep.all():
            self._times, self._variables, value = self._time, var, self._value
        else:
            unseen = sorted({self._raw_variables[c] for c in np.unique(self._code[~keep])})
            warnings.warn(
                f"{self.path}: dropping {int((~keep).sum())} events of variables not seen in training: "
                f"{unseen[:10]}",
                stacklevel=2,
            )
            counts = np.add.reduceat(keep.astype(np.int64), self._raw_starts[:-1])
            self._times, self._variables, value = self._time[keep], var[keep], self._value[keep]
        mean, std = np.asarray(s["mean"]), np.asarray(s["std"])
        self._values = np.empty(len(value), dtype=np.float32)
        for sl in _chunks(len(value)):  # chunked: no full-length float64 temporaries
            v = self._variables[sl]
            self._values[sl] = (value[sl] - mean[v]) / std[v]
        starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self._bounds = {pid: (starts[i], starts[i + 1]) for i, pid in enumerate(self._raw_ids)}
        self._index = {pid: i for i, pid in enumerate(self._raw_ids) if counts[i] > 0}

    def _spec(self) -> dict[str, Any]:
        return {"variables": list(self._state["variables"]), "horizon_hours": self._state["horizon_hours"]}

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        start, end = self._bounds[patient_id]
        start = max(start, end - self.max_events)  # keep the most recent events
        return {
            "times": self._times[start:end],
            "variables": self._variables[start:end].astype(np.int64),
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


# ---------------------------------------------------------------------- streaming read
def _read_events(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Stream ``path`` batch by batch into flat arrays.

    Returns:
        patient codes (int32, into the patient names), variable codes (int32, into the variable
        names), times and values (float64) in file order, then the patient and variable names in
        order of first appearance.
    """
    try:
        pf = pq.ParquetFile(path, read_dictionary=["patient_id", "variable"])
        names = pf.schema_arrow.names
    except Exception as err:  # pyarrow raises several error types; name the file
        raise ValueError(f"{path}: cannot read parquet: {err}") from err
    require_columns(names, _COLUMNS, path)
    n = pf.metadata.num_rows
    pid, code = np.empty(n, np.int32), np.empty(n, np.int32)
    time, value = np.empty(n, np.float64), np.empty(n, np.float64)
    pid_names: dict[str, int] = {}
    var_names: dict[str, int] = {}
    at = 0
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=list(_COLUMNS)):
        k = batch.num_rows
        rows = slice(at, at + k)
        pid[rows], labels = _codes(batch.column("patient_id"), pid_names, path, "patient_id", None)
        code[rows], _ = _codes(batch.column("variable"), var_names, path, "variable", labels)
        time[rows] = _finite_float(batch.column("time"), labels, path, "time")
        value[rows] = _finite_float(batch.column("value"), labels, path, "value")
        at += k
    return pid, code, time, value, list(pid_names), list(var_names)


def _codes(col: pa.Array, names: dict[str, int], path: Path, column: str, pids: pa.Array | None) -> tuple[np.ndarray, pa.Array]:
    """Codes of a string column into the growing ``names`` (name -> code); also the row labels.

    A non-string column (e.g. integer ids) is read as its string form, like ``astype(str)``.
    """
    if not pa.types.is_dictionary(col.type):
        col = pc.cast(col, pa.string()) if not pa.types.is_string(col.type) else col
        col = pc.dictionary_encode(col)
    if col.null_count:
        bad = pc.is_null(col)
        who = pc.unique(pc.filter(pids if pids is not None else col, bad)).to_pylist()[:10]
        raise ValueError(f"{path}: column '{column}' is null (patient(s) {who})")
    local = [str(v) for v in col.dictionary.to_pylist()]
    remap = np.array([names.setdefault(v, len(names)) for v in local], dtype=np.int32)
    indices = col.indices.to_numpy(zero_copy_only=False)
    return remap[indices] if len(indices) else indices.astype(np.int32), (pids if pids is not None else col)


def _finite_float(col: pa.Array, pids: pa.Array, path: Path, column: str) -> np.ndarray:
    """``col`` as float64; ValueError naming the patients of non-numeric/null/NaN/inf rows."""
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raw = pl.from_arrow(col)  # strings of numbers are accepted, like a lenient cast
        num = raw.cast(pl.Float64, strict=False)
        bad = (num.is_null() & raw.is_not_null()).to_numpy()
        if bad.any():
            who = pd_unique(pids, bad)
            raise ValueError(f"{path}: column '{column}' has non-numeric values for patient(s) {who}")
        values = num.to_numpy()
    else:
        values = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{path}: column '{column}' has null/NaN/inf values for patient(s) {pd_unique(pids, bad)}")
    return values


def pd_unique(pids: pa.Array, rows: np.ndarray) -> list[str]:
    """The first ten distinct patient ids of the ``rows`` mask, in row order."""
    return pl.from_arrow(pc.filter(pids, pa.array(rows))).cast(pl.Utf8).unique(maintain_order=True).to_list()[:10]


def _to_sorted_ranks(codes: np.ndarray, names: list[str]) -> np.ndarray:
    """Replace codes into ``names`` by ranks in ``sorted(names)``, in place."""
    rank = np.empty(len(names), dtype=np.int32)
    rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names), dtype=np.int32)
    return np.take(rank, codes, out=codes) if len(codes) else codes


def _sort_order(pid: np.ndarray, time: np.ndarray) -> np.ndarray | None:
    """The stable ``(patient, time)`` order, or None when the rows are already in it."""
    if len(pid) < 2:
        return None
    in_order = True
    for sl in _chunks(len(pid) - 1):  # compare row i with row i + 1, chunk by chunk
        nxt = slice(sl.start + 1, sl.stop + 1)
        step = pid[nxt].astype(np.int64) - pid[sl]
        if (step < 0).any() or ((step == 0) & (time[nxt] < time[sl])).any():
            in_order = False
            break
    if in_order:
        return None
    # polars' multi-column sort is multi-threaded; maintain_order keeps ties in file order
    return pl.DataFrame({"p": pid, "t": time}).select(pl.arg_sort_by(["p", "t"], maintain_order=True)).to_series().to_numpy()


def _chunks(n: int) -> Iterator[slice]:
    """Consecutive slices of ``_BATCH_ROWS`` covering ``range(n)``."""
    return (slice(i, min(i + _BATCH_ROWS, n)) for i in range(0, n, _BATCH_ROWS))
