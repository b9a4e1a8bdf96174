"""An on-disk store of a long event table ``patient_id, time, variable, value``.

The time-series reader never holds the events in memory: the parquet file is streamed once, in
record batches, into flat per-column files under ``<cohort>/.clinfuse_cache/`` (grouped by
patient, sorted by time within a patient, ties in file order), and read back in sequential chunks
(fitting) or one patient at a time with ``os.pread`` (``get``). Memory is then a few bytes per
*patient* plus one batch, whatever the number of events (``benchmarks/bench_meds.py``).

Written by hand because no library here does it: pyarrow and polars can stream parquet, but
neither gives random access to one patient's rows without reading a row group, and a numpy
memory map would count every page it touches in the process's resident memory.

Files of a store folder (``timeseries_<key>``, key = the parquet file's path, size and mtime):

- ``patient.i4``, ``time.f8``, ``code.i4``, ``value.f8``: one entry per event, in store order;
  ``patient`` indexes ``patients.npy`` and ``code`` indexes ``meta.json`` ``variables`` (both in
  order of first appearance in the file);
- ``patients.npy`` ``(P,)`` UTF-8 bytes: the patient ids in store order;
- ``starts.npy`` ``(P + 1,)`` int64: patient ``p``'s events are rows ``starts[p]:starts[p + 1]``;
- ``last_time.npy`` ``(P,)`` float64: each patient's latest event time;
- ``meta.json``: written last, so a folder without it is never taken as complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clinfuse.datasets.arrow_memory import arrow_system_pool, release_free_memory
from clinfuse.datasets.reader import FLOAT_IDS_HINT, huge_values, require_columns, temporal_error

CACHE_DIR = ".clinfuse_cache"
_VERSION = 2  # 2: datetime/timedelta times and float patient ids refused (an older store may hold them)
COLUMNS = ("patient_id", "time", "variable", "value")
_FILES = {"patient": np.int32, "time": np.float64, "code": np.int32, "value": np.float64}
#: what to do about a null/NaN ``time`` or ``value`` row
NAN_HINTS = {"time": "drop rows without a time: an event is placed by its time",
             "value": "drop rows without a value: a measurement not taken is simply absent"}
CHUNK_ROWS = 1 << 16  # rows per sequential read when scanning the store


class EventStore:
    """A built store folder: per-patient row ranges in memory, the events on disk.

    Build or reuse one with :func:`open_store`.

    Attributes:
        folder: the store folder.
        patients: ``(P,)`` patient ids in store order, as UTF-8 bytes.
        variables: variable names by code (``(V,)``).
        starts: ``(P + 1,)`` int64 row offsets per patient.
        last_time: ``(P,)`` float64 latest event time per patient.
    """

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.folder = folder
        self.patients: np.ndarray = np.load(folder / "patients.npy")
        self.variables: list[str] = meta["variables"]
        self.starts = np.load(folder / "starts.npy")
        self.last_time = np.load(folder / "last_time.npy")

    @property
    def n_events(self) -> int:
        return int(self.starts[-1])

    def chunks(self, *names: str, rows: int = CHUNK_ROWS) -> Iterator[tuple[np.ndarray, ...]]:
        """The columns ``names`` (of ``patient, time, code, value``) in store order, chunk by chunk."""
        handles = [open(self.folder / f"{n}.{_suffix(n)}", "rb") for n in names]
        try:
            for start in range(0, self.n_events, rows):
                count = min(rows, self.n_events - start)
                yield tuple(np.fromfile(h, dtype=_FILES[n], count=count) for h, n in zip(handles, names))
        finally:
            for h in handles:
                h.close()


def open_store(path: Path, batch_rows: int) -> EventStore:
    """The store of the parquet event table ``path``: reused when ``path`` is unchanged, else built.

    The store lives in ``<path's folder>/.clinfuse_cache/``; if that folder is not writable, in a
    temporary folder (rebuilt by every process).

    Raises:
        ValueError: unreadable file, a missing column, null or float ids, non-numeric/NaN/inf time
            or value, a datetime/timedelta time or value (times are float hours), naming the file,
            column and patients (and what to do).
    """
    try:
        st = path.stat()
    except OSError as err:
        raise ValueError(f"{path}: cannot read parquet: {err}") from err
    key = hashlib.sha256(json.dumps([_VERSION, str(path.resolve()), st.st_size, st.st_mtime_ns]).encode())
    with open(path, "rb") as fh:  # the parquet footer too: a same-size rewrite within one mtime tick
        fh.seek(max(0, st.st_size - (1 << 16)))
        key.update(fh.read())
    key = key.hexdigest()[:20]
    folder = path.parent / CACHE_DIR / f"{path.stem}_{key}"
    if (folder / "meta.json").exists():
        return EventStore(folder)
    temporary = False
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f"{folder.name}.{os.getpid()}.tmp"
        tmp.mkdir(exist_ok=True)
    except OSError:
        import tempfile
        import warnings

        tmp = Path(tempfile.mkdtemp(prefix="clinfuse-events-"))
        folder, temporary = tmp, True
        warnings.warn(f"{path.parent / CACHE_DIR}: not writable; the event store is built in {tmp}", stacklevel=3)
    try:
        _build(path, tmp, batch_rows)
        if not temporary:
            try:
                os.replace(tmp, folder)  # atomic publish; another process may have won the race
            except OSError:
                if not (folder / "meta.json").exists():
                    raise
    except BaseException:
        if temporary:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if not temporary:
            shutil.rmtree(tmp, ignore_errors=True)
    if temporary:  # removed with the store (its reader), not left in the temporary directory
        store = EventStore(folder)
        remove_when_collected(store, folder)
        return store
    for stale in folder.parent.glob(f"{path.stem}_*"):  # stores of earlier versions of the file
        if stale != folder and stale.is_dir() and not stale.name.endswith(".tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    return EventStore(folder)


def remove_when_collected(owner: object, folder: Path) -> None:
    """Delete the temporary ``folder`` once ``owner`` is garbage-collected (or at exit), in the
    process that made it only: a forked data-loader worker's copy of ``owner`` must not delete the
    folder its parent still reads."""
    pid = os.getpid()

    def remove(folder: Path = folder) -> None:
        if os.getpid() == pid:
            shutil.rmtree(folder, ignore_errors=True)

    weakref.finalize(owner, remove)


def _suffix(name: str) -> str:
    return np.dtype(_FILES[name]).str[1:]  # "i4" / "f8"


# ---------------------------------------------------------------------- building
def _build(path: Path, out: Path, batch_rows: int) -> None:
    """Stream ``path`` into the store files in ``out``; sort them when the file is not grouped."""
    with arrow_system_pool():  # the default mimalloc pool kept ~30 MB more on 10 M events
        patients, var_names, grouped = _stream(path, out, batch_rows)
    release_free_memory()
    patients, grouped = _merge_repeated(patients, out, grouped)
    if not grouped:
        _sort_files(out)
    n_patients = len(patients)
    counts = np.zeros(n_patients, dtype=np.int64)
    last_time = np.zeros(n_patients, dtype=np.float64)
    for patient, time in _Raw(out).chunks("patient", "time"):
        counts += np.bincount(patient, minlength=n_patients)
        ends = np.flatnonzero(np.append(patient[1:] != patient[:-1], True))  # last row of each run
        last_time[patient[ends]] = time[ends]  # time-sorted within a patient: the run's last = latest
    np.save(out / "starts.npy", np.concatenate([[0], np.cumsum(counts)]))
    np.save(out / "last_time.npy", last_time)
    np.save(out / "patients.npy", patients)
    (out / "meta.json").write_text(json.dumps({"variables": var_names}))


def _stream(path: Path, out: Path, batch_rows: int) -> tuple[list[str], list[str], bool]:
    """Validate and write the four column files in file order.

    Returns:
        the patient ids of the codes (``(C,)`` UTF-8 bytes; a patient whose rows are not contiguous
        has several codes, see ``_merge_repeated``), the variable names in order of first
        appearance, and whether runs of one code are time-sorted and codes never go back.
    """
    try:
        # no pre-buffering, one thread: one batch is held at a time
        pf = pq.ParquetFile(path, read_dictionary=["patient_id", "variable"], pre_buffer=False)
        names = pf.schema_arrow.names
    except Exception as err:  # pyarrow raises several error types; name the file
        raise ValueError(f"{path}: cannot read parquet: {err}") from err
    require_columns(names, COLUMNS, path)
    batches = pf.iter_batches(batch_size=batch_rows, columns=list(COLUMNS), use_threads=False)
    patients = _PatientCoder()
    var_names: dict[str, int] = {}
    order = _OrderCheck()
    handles = {n: open(out / f"{n}.{_suffix(n)}", "wb") for n in _FILES}
    try:
        row = 0  # file row of the batch's first row, for error messages
        for batch in _batches(batches, path):
            pid, labels = patients.codes(batch.column("patient_id"), path, row)
            row += batch.num_rows
            code, _ = _codes(batch.column("variable"), var_names, path, "variable", labels)
            time = _finite_float(batch.column("time"), labels, path, "time")
            value = _finite_float(batch.column("value"), labels, path, "value")
            order.update(pid, time)
            for name, arr in (("patient", pid), ("time", time), ("code", code), ("value", value)):
                np.ascontiguousarray(arr, dtype=_FILES[name]).tofile(handles[name])
    finally:
        for h in handles.values():
            h.close()
    return patients.names(), list(var_names), order.ok


class _PatientCoder:
    """Patient codes without a Python string per patient (a dict of 100,000+ ids costs ~150
    bytes each, and pymalloc keeps the memory after the dict is gone).

    Each batch's patients get codes in order of first appearance in its rows; the batch's first
    patient keeps its code when it continues the previous batch's last. Any other patient gets a
    new code, so a file that is not grouped by patient gives some patients several codes; those
    are merged after the read (``_merge_repeated``).
    """

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._n = 0
        self._last: bytes | None = None  # the patient of the last row read, and its code
        self._last_code = -1

    def codes(self, col: pa.Array, path: Path, first_row: int = 0) -> tuple[np.ndarray, pa.Array]:
        """Codes of a batch's ``patient_id`` column, and the column (row labels for errors);
        ``first_row`` is the file row of the batch's first row."""
        value_type = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if pa.types.is_floating(value_type):  # 691960.0 would be the text "691960" or "6.9196e+05"
            example = next((v for v in col.to_pylist() if v is not None), None)
            raise ValueError(f"{path}: column 'patient_id' holds floats (e.g. {example!r}); {FLOAT_IDS_HINT}")
        if not pa.types.is_dictionary(col.type):
            col = pc.dictionary_encode(pc.cast(col, pa.string()) if not pa.types.is_string(col.type) else col)
        if col.null_count:
            rows = (np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False)) + first_row)[:10].tolist()
            raise ValueError(f"{path}: column 'patient_id' is null in row(s) {rows} (0-based file rows)")
        indices = col.indices.to_numpy(zero_copy_only=False)
        if not len(indices):
            return indices.astype(np.int32), col
        used, first = np.unique(indices, return_index=True)
        used = used[np.argsort(first, kind="stable")]  # local ids in order of first appearance
        names = np.array([str(v).encode() for v in col.dictionary.take(pa.array(used)).to_pylist()], dtype=bytes)
        position = np.empty(len(col.dictionary), dtype=np.int64)  # local id -> index into names
        position[used] = np.arange(len(names))
        continues = self._last is not None and names[0] == self._last
        fresh = names[1:] if continues else names
        code_of_name = np.empty(len(names), dtype=np.int32)
        code_of_name[int(continues):] = self._n + np.arange(len(fresh))
        if continues:
            code_of_name[0] = self._last_code
        codes = code_of_name[position[indices]]
        self._parts.append(fresh)
        self._n += len(fresh)
        self._last, self._last_code = names[position[indices[-1]]], int(codes[-1])
        return codes, col

    def names(self) -> np.ndarray:
        if not self._parts:
            return np.zeros(0, dtype="S1")
        width = max(p.dtype.itemsize for p in self._parts)
        return np.concatenate([p.astype(f"S{width}") for p in self._parts])


def _merge_repeated(names: np.ndarray, out: Path, grouped: bool) -> tuple[np.ndarray, bool]:
    """Give a patient with several codes (rows not contiguous in the file) one code.

    Codes are renumbered in order of first appearance and ``patient.i4`` is rewritten; the
    file then needs sorting.

    Returns:
        the patient ids of the new codes, and whether the file is still taken as grouped.
    """
    uniq, first, inverse = np.unique(names, return_index=True, return_inverse=True)
    if len(uniq) == len(names):
        return names, grouped
    order = np.argsort(first)  # unique ids by first appearance
    rank = np.empty(len(uniq), dtype=np.int32)
    rank[order] = np.arange(len(uniq), dtype=np.int32)
    remap = rank[inverse]  # old code -> new code
    file = out / "patient.i4"
    with open(file, "r+b") as fh:
        for start in range(0, file.stat().st_size // 4, CHUNK_ROWS):
            fh.seek(start * 4)
            chunk = np.fromfile(fh, dtype=np.int32, count=CHUNK_ROWS)
            fh.seek(start * 4)
            remap[chunk].tofile(fh)
    return uniq[order], False


def _batches(batches: Iterator[pa.RecordBatch], path: Path) -> Iterator[pa.RecordBatch]:
    """``batches``, with a decoding error (a corrupt page) named by the file."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as err:  # pyarrow raises several error types; name the file
            raise ValueError(f"{path}: cannot read parquet: {err}") from err
        yield batch


class _Raw(EventStore):
    """A store being built: events known from the file sizes, no meta yet."""

    def __init__(self, folder: Path) -> None:  # noqa: D107 - no meta to read yet
        self.folder = folder
        n = (folder / "patient.i4").stat().st_size // 4
        self.starts = np.array([0, n], dtype=np.int64)


class _OrderCheck:
    """Tracks, batch by batch, whether the file is grouped by patient and time-sorted within one.

    A file is grouped when each patient's rows are one contiguous run. Patient codes are given in
    order of first appearance, so in a grouped file they never decrease: then store order is file
    order and nothing is sorted.
    """

    def __init__(self) -> None:
        self.ok = True
        self.last_pid = -1
        self.last_time = -np.inf

    def update(self, pid: np.ndarray, time: np.ndarray) -> None:
        if not self.ok or not len(pid):
            return
        step = np.diff(pid.astype(np.int64), prepend=self.last_pid)
        tdiff = np.diff(time, prepend=self.last_time)
        # a grouped file: a new run always brings the next new code (codes are first-appearance);
        # within a run, time never decreases
        new_run = step != 0
        expected = np.arange(1, new_run.sum() + 1) + max(self.last_pid, -1)
        self.ok = bool(np.array_equal(pid[new_run], expected) and (step >= 0).all()
                       and not (tdiff[~new_run] < 0).any())
        self.last_pid, self.last_time = int(pid[-1]), float(time[-1])


def _sort_files(out: Path) -> None:
    """Reorder the store files by (patient code, time), stably (ties keep file order).

    Only for files not grouped by patient (the converters write grouped files): this step holds the
    patient and time columns and the order in memory, about 20 bytes per event, then one column
    at a time.
    """
    patient = np.fromfile(out / "patient.i4", dtype=np.int32)
    time = np.fromfile(out / "time.f8", dtype=np.float64)
    # polars' multi-column sort is multi-threaded; maintain_order keeps ties in file order
    perm = pl.DataFrame({"p": patient, "t": time}).select(pl.arg_sort_by(["p", "t"], maintain_order=True)).to_series().to_numpy()
    del patient, time
    for name, dtype in _FILES.items():
        file = out / f"{name}.{_suffix(name)}"
        np.fromfile(file, dtype=dtype)[perm].tofile(file)


# ---------------------------------------------------------------------- validation
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
    indices = col.indices.to_numpy(zero_copy_only=False)
    # codes in order of first appearance in the rows (not in the dictionary's order, which may list
    # every category of the file): a file grouped by patient then has non-decreasing codes
    used, first = np.unique(indices, return_index=True)
    used = used[np.argsort(first, kind="stable")]
    remap = np.full(len(col.dictionary), -1, dtype=np.int32)
    remap[used] = [names.setdefault(str(v), len(names)) for v in col.dictionary.take(pa.array(used)).to_pylist()]
    return remap[indices] if len(indices) else indices.astype(np.int32), (pids if pids is not None else col)


def _finite_float(col: pa.Array, pids: pa.Array, path: Path, column: str) -> np.ndarray:
    """``col`` as float64; ValueError naming the patients of non-numeric/null/NaN/inf rows
    (with what to do about null/NaN ones), or the type of a datetime/timedelta column (which
    polars would cast to a count of micro- or nanoseconds)."""
    if pa.types.is_temporal(col.type):
        raise temporal_error(str(path), column, col.type)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raw = pl.from_arrow(col)  # strings of numbers are accepted, like a lenient cast
        num = raw.cast(pl.Float64, strict=False)
        bad = (num.is_null() & raw.is_not_null()).to_numpy()
        if bad.any():
            raise ValueError(f"{path}: column '{column}' has non-numeric values for patient(s) {_who(pids, bad)}")
        values = num.to_numpy()
    else:
        values = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        hint = f"; {NAN_HINTS[column]}" if column in NAN_HINTS and np.isnan(values[bad]).any() else ""
        raise ValueError(f"{path}: column '{column}' has null/NaN/inf values for patient(s) {_who(pids, bad)}{hint}")
    bad = huge_values(values)
    if bad.any():
        raise ValueError(f"{path}: column '{column}' has values beyond float32's range (|x| > 3.4e38) for patient(s) {_who(pids, bad)}")
    return values


def _who(pids: pa.Array, rows: np.ndarray) -> list[str]:
    """The first ten distinct patient ids of the ``rows`` mask, in row order."""
    return pl.from_arrow(pc.filter(pids, pa.array(rows))).cast(pl.Utf8).unique(maintain_order=True).to_list()[:10]
