"""Time-series modality: a long event table ``patient_id, time, variable, value`` (``timeseries.parquet``)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from clinfuse.datasets.event_store import EventStore, open_store, remove_when_collected
from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.patient_index import PatientIndex
from clinfuse.datasets.reader import ModalityReader, case_collisions, unknown_ids_message

_BATCH_ROWS = 1 << 14  # rows per streamed record batch: bounds the transient memory of reading
#: one fitted event on disk: time (hours), variable id, normalised value
_EVENT = np.dtype([("time", "<f4"), ("variable", "<i4"), ("value", "<f4")])


class TimeseriesReader(ModalityReader):
    """Reads the event table into an on-disk per-patient store; ``get`` reads one patient's events.

    The file is streamed once in record batches with pyarrow (string columns read as
    dictionaries, so no per-row Python string is built), validated, and written to an event store
    under ``<cohort>/.clinfuse_cache/`` (``clinfuse.datasets.event_store``): grouped by patient,
    sorted by time within a patient (ties keep file order). A file already grouped by patient and
    time-sorted within each (what the converters write) is not re-sorted. ``fit`` learns the
    variable list (the variables seen in training, sorted; ids ``0..V-1``) and each variable's
    training mean and population std, streaming over the store; the normalised events are written
    once per fitted state (12 bytes per event) and ``get`` reads one patient's with ``os.pread``.
    Events of a variable never seen in training are dropped with a warning (an encoder has no
    embedding for them); a patient left with no event is then absent. Both files are reused while
    the parquet file is unchanged (path, size and mtime).

    Every row is one measurement: exact duplicate rows (same patient, time, variable and value, e.g.
    from a join) are kept and each is counted, and variable names differing only in case or
    surrounding whitespace (``creatinine``, ``Creatinine``) are different variables; ``fit`` warns
    about both (the duplicate check hashes the rows that share a patient and time, chunk by chunk).

    Memory: per patient (ids, offsets, latest time) plus one record batch, not per event;
    ``benchmarks/bench_meds.py`` measures it. A file that is not grouped by patient is sorted once
    while building the store, holding about 20 bytes per event for that step.

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
    Warns:
        UserWarning: at ``fit``, exact duplicate rows (their number and first patients), and
            variable names that collide after ``str.strip().casefold()`` (the groups).
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
        super().__init__(root, None)  # known ids are checked here without keeping a set of them
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.max_events = int(max_events)
        self.horizon_hours = horizon_hours
        self._store: EventStore = open_store(self.path, _BATCH_ROWS)
        self._all = PatientIndex(self._store.patients)  # patient -> store position; compact for big cohorts
        if known_ids is not None:
            known = known_ids if isinstance(known_ids, (list, tuple, set)) else list(known_ids)
            unknown = self._all.unknown(known)
            if unknown:  # the message of reader.check_known_ids, with a few of the labels' ids
                raise ValueError(unknown_ids_message(self.path, unknown, known))
        self._index = self._all
        self._starts: np.ndarray | None = None  # fitted event offsets per store position
        self._events: Path | None = None
        self._fd: tuple[int, int] | None = None  # (process id, descriptor): reopened after fork/pickle

    def config(self) -> dict[str, Any]:
        return {"max_events": self.max_events, "horizon_hours": self.horizon_hours}

    def fit(self, train_ids: Iterable[str]) -> "TimeseriesReader":
        """As ``ModalityReader.fit``; a refit starts again from every patient of the file (one
        whose events were all dropped by the previous fit may have training variables now)."""
        self._index = self._all
        return super().fit(train_ids)

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        store = self._store
        in_train = np.zeros(len(store.patients), dtype=bool)
        in_train[[self._index[p] for p in train_ids]] = True
        n_raw = len(store.variables)
        # two passes over the store (mean, then squared deviations); float64 sums
        count, total, sq = np.zeros(n_raw), np.zeros(n_raw), np.zeros(n_raw)
        duplicates = _DuplicateRows(len(store.patients))  # over the whole file, in the same pass
        for patient, time, codes, values in store.chunks("patient", "time", "code", "value"):
            duplicates.update(patient, time, codes, values)
            rows = in_train[patient]
            count += np.bincount(codes[rows], minlength=n_raw)
            total += np.bincount(codes[rows], values[rows], minlength=n_raw)
        self._warn_duplicates(duplicates.finish())
        self._warn_case_collisions()
        mean_all = total / np.maximum(count, 1.0)
        for patient, codes, values in store.chunks("patient", "code", "value"):
            rows = in_train[patient]
            sq += np.bincount(codes[rows], (values[rows] - mean_all[codes[rows]]) ** 2, minlength=n_raw)
        seen = sorted(np.flatnonzero(count > 0), key=lambda c: store.variables[c])
        std = np.sqrt(sq[seen] / count[seen])
        horizon = self.horizon_hours
        if horizon is None:
            horizon = float(math.ceil(store.last_time[in_train].max()))
        return {
            "variables": [store.variables[c] for c in seen],
            "mean": mean_all[seen].tolist(),
            "std": np.where(std > 0, std, 1.0).tolist(),
            "horizon_hours": float(horizon),
        }

    def _warn_duplicates(self, duplicates: "_DuplicateRows") -> None:
        """One warning for the exact duplicate rows of the file, if any (they are kept)."""
        if not duplicates.count:
            return
        marked = np.flatnonzero(duplicates.patients)
        first = [self._store.patients[i].decode() for i in marked[:5]]
        warnings.warn(
            f"{self.path}: {duplicates.count} row(s) repeat an earlier row exactly (same patient_id, time, "
            f"variable and value), in {len(marked)} patient(s), e.g. {first}; they are counted as separate "
            f"measurements (in the training mean/std, and each uses one of the patient's max_events slots). "
            f"If they are artefacts (e.g. of a join), drop them before writing the file: "
            f'df.drop_duplicates(["patient_id", "time", "variable", "value"])',
            stacklevel=5,
        )

    def _warn_case_collisions(self) -> None:
        """One warning for the variable names of the file that differ only in case or whitespace."""
        groups = case_collisions(self._store.variables)
        if groups:
            warnings.warn(
                f"{self.path}: column 'variable' has names that differ only in case or surrounding whitespace: "
                f"{groups[:10]}; they are treated as different variables (matching is exact, at prediction "
                f"too). Normalise them to one spelling before writing the file.",
                stacklevel=5,
            )

    def _apply(self) -> None:
        s, store = self._state, self._store
        key = hashlib.sha256(json.dumps([s["variables"], s["mean"], s["std"]]).encode()).hexdigest()[:16]
        self._events = store.folder / f"fitted_{key}.bin"
        starts_file = store.folder / f"fitted_{key}.npy"
        if not (self._events.exists() and starts_file.exists()):
            try:
                self._write_fitted(starts_file)
            except OSError as err:  # a read-only cache built by someone else: write ours elsewhere
                import tempfile

                warnings.warn(f"{store.folder}: cannot write the fitted events ({err}); using a temporary folder",
                              stacklevel=3)
                folder = Path(tempfile.mkdtemp(prefix="clinfuse-events-"))
                remove_when_collected(self, folder)
                self._events, starts_file = folder / self._events.name, folder / starts_file.name
                self._write_fitted(starts_file)
        self._starts = np.load(starts_file)
        counts = np.diff(self._starts)
        self._index = self._all if counts.all() else self._all.where(counts > 0)
        self._fd = None

    def _write_fitted(self, starts_file: Path) -> None:
        """Stream the store into normalised fitted events (``_EVENT`` records) and their offsets."""
        s, store = self._state, self._store
        lookup = {v: i for i, v in enumerate(s["variables"])}
        raw_to_var = np.array([lookup.get(v, -1) for v in store.variables], dtype=np.int32)
        mean = np.append(np.asarray(s["mean"], dtype=np.float64), 0.0)  # index -1: unseen (dropped)
        std = np.append(np.asarray(s["std"], dtype=np.float64), 1.0)
        counts = np.zeros(len(store.patients), dtype=np.int64)
        dropped = np.zeros(len(store.variables), dtype=np.int64)
        tmp = self._events.with_name(f"{self._events.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                for patient, time, codes, values in store.chunks("patient", "time", "code", "value"):
                    var = raw_to_var[codes]
                    keep = var >= 0
                    dropped += np.bincount(codes[~keep], minlength=len(dropped))
                    counts += np.bincount(patient[keep], minlength=len(counts))
                    rec = np.empty(int(keep.sum()), dtype=_EVENT)
                    rec["time"], rec["variable"] = time[keep], var[keep]
                    rec["value"] = (values[keep] - mean[var[keep]]) / std[var[keep]]
                    rec.tofile(fh)
            np.save(tmp.with_suffix(".npy"), np.concatenate([[0], np.cumsum(counts)]))
            os.replace(tmp.with_suffix(".npy"), starts_file)
            os.replace(tmp, self._events)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".npy").unlink(missing_ok=True)
        if dropped.any():
            unseen = sorted(store.variables[c] for c in np.flatnonzero(dropped))
            warnings.warn(
                f"{self.path}: dropping {int(dropped.sum())} events of variables not seen in training: {unseen[:10]}",
                stacklevel=4,
            )

    def _spec(self) -> dict[str, Any]:
        return {"variables": list(self._state["variables"]), "horizon_hours": self._state["horizon_hours"]}

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        i = self._index[patient_id]
        start, end = int(self._starts[i]), int(self._starts[i + 1])
        start = max(start, end - self.max_events)  # keep the most recent events
        buf = _pread(self._descriptor(), (end - start) * _EVENT.itemsize, start * _EVENT.itemsize)
        rec = np.frombuffer(buf, dtype=_EVENT)
        return {
            "times": rec["time"].copy(),
            "variables": rec["variable"].astype(np.int64),
            "values": rec["value"].copy(),
        }

    def _descriptor(self) -> int:
        """This process's read-only descriptor of the fitted events (a forked worker opens its own)."""
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self._events, os.O_RDONLY | getattr(os, "O_BINARY", 0)))
        return self._fd[1]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the descriptor (DataLoader workers open their own)."""
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        try:
            if fd is not None and fd[0] == os.getpid():
                os.close(fd[1])
        except Exception:  # noqa: BLE001 - at interpreter exit os may already be gone
            pass

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


class _DuplicateRows:
    """Counts, chunk by chunk in store order, the rows that repeat an earlier row exactly.

    Rows of one patient with the same time are adjacent in the store (variables at that time in
    any order), so each run of equal ``(patient, time)`` is checked on its own; the run at the end
    of a chunk is held back and checked with the start of the next one, so a duplicate pair across
    a chunk boundary is counted too. Memory: one chunk plus one such run.

    Attributes:
        count: the rows equal to an earlier row (``df.duplicated().sum()`` of pandas).
        patients: ``(P,)`` bool, the store positions of the patients with such rows.
    """

    def __init__(self, n_patients: int) -> None:
        self.count = 0
        self.patients = np.zeros(n_patients, dtype=bool)
        self._tail: list[tuple[np.ndarray, ...]] = []  # the last (patient, time) run so far, in parts

    def update(self, patient: np.ndarray, time: np.ndarray, code: np.ndarray, value: np.ndarray) -> None:
        """Add the next chunk of the store (its columns ``patient, time, code, value``)."""
        cols = (patient, time, code, value)
        if not len(patient):
            return
        start = 0
        if self._tail:  # rows continuing the held-back run join it
            if patient[0] == self._tail[0][0][0] and time[0] == self._tail[0][1][0]:
                same = (patient == patient[0]) & (time == time[0])
                start = len(patient) if same.all() else int(np.argmin(same))
                self._tail.append(tuple(a[:start] for a in cols))
                if start == len(patient):
                    return
            self.finish()
        end = start + int(np.argmax((patient[start:] == patient[-1]) & (time[start:] == time[-1])))
        self._add(tuple(a[start:end] for a in cols))
        self._tail = [tuple(a[end:] for a in cols)]

    def finish(self) -> "_DuplicateRows":
        """Check the held-back run; returns self."""
        if self._tail:
            self._add(tuple(np.concatenate(parts) for parts in zip(*self._tail)))
            self._tail = []
        return self

    def _add(self, cols: tuple[np.ndarray, ...]) -> None:
        rows = _repeated_rows(*cols)
        self.count += len(rows)
        self.patients[cols[0][rows]] = True


def _repeated_rows(patient: np.ndarray, time: np.ndarray, code: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of the rows equal to an earlier row (``df.duplicated()``), for rows sorted by
    ``(patient, time)``: only rows sharing their ``(patient, time)`` with a neighbour can repeat one,
    and polars' ``is_first_distinct`` finds the repeats among those."""
    tie = (patient[1:] == patient[:-1]) & (time[1:] == time[:-1])
    if not tie.any():
        return np.zeros(0, dtype=np.int64)
    tied = np.zeros(len(patient), dtype=bool)
    tied[:-1] = tie
    tied[1:] |= tie
    at = np.flatnonzero(tied)
    # + 0.0 turns -0.0 into 0.0, equal as in pandas
    rows = pl.DataFrame({"p": patient[at], "t": time[at] + 0.0, "c": code[at], "v": value[at] + 0.0})
    first = rows.select(pl.struct(pl.all()).is_first_distinct()).to_series().to_numpy()
    return at[~first]


def _pread(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``: ``os.pread`` (no shared file position), or seek + read where
    the platform lacks it (Windows)."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)
