"""The MEDS converter's event pass in bounded memory (``docs/sources/meds.md``, section Scale).

``convert_meds`` reads the MEDS shards exactly once, here, one parquet record batch at a time
(pyarrow ``iter_batches``), and never holds the event table in memory:

1. **scan** (:func:`scan_shards`): per batch, validate (null ``subject_id`` / ``code``, NaN/inf
   ``numeric_value``; reported after the scan, with the dataset's counts), keep the static rows
   (null ``time``) and ``MEDS_BIRTH`` rows (few) as compact arrays for the tabular modality, count
   the timed rows without a value, join the valued timed rows to the samples (a vectorised lookup
   in the sorted label subjects: a subject with several prediction times gives one row per
   sample), drop rows after the prediction time (and before the lookback start), and append them
   to spill files (Arrow IPC streams): ``rank (uint32), time (int64 us), code id (uint32), value
   (float64)`` for the rows with a numeric value, ``rank, time, text`` for those with a text value.
   ``rank`` is the sample's position in the sorted ``patient_id`` strings; bucket ``b`` of ``B``
   holds the ranks in ``[b * n / B, (b + 1) * n / B)``;
2. **sort and write** (:func:`write_events`): consecutive buckets are grouped so that a group's
   spill stays within the pass budget (``memory_mb / 3``); each group is read back into numpy
   arrays, sorted by (rank, time) with ties in the shards' row order (stable sorts; rows reach the
   spill in shard order), turned into hours from the index time, and appended to
   ``timeseries.parquet`` / ``notes.parquet`` as row groups through pyarrow ``ParquetWriter`` s.
   Groups follow each other in rank order, so the files are globally sorted by ``patient_id``
   (string order), then time: the same rows, order and dtypes as one in-memory sort.

Peak memory is about ``memory_mb`` for a pass plus one input batch and the label tables, whatever
the dataset's size (more buckets than 256 per spill are never opened: past about 25 GB of spill a
pass outgrows its budget). The spill takes about 24 bytes per kept event plus 12 per note and the
note text, on disk next to the output folder, and is deleted as it is consumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clinfuse.datasets.arrow_memory import release_free_memory

BIRTH_CODE = "MEDS_BIRTH"
US_PER_HOUR = 3_600_000_000.0
#: rows per parquet record batch read from a shard, and per row group written
BATCH_ROWS = 1 << 16
ROW_GROUP_ROWS = 1 << 17
#: spill bytes per event besides any text: rank 4 + time 8 + code 4 + value 8 (+ slack)
_SPILL_BYTES_PER_ROW = 25
#: a pass reads its spill, sorts it (an index + one column copy at a time) and writes it in
#: slices: peak ~ this many times its spill size
_PASS_FACTOR = 3.0
_MAX_BUCKETS = 256  # spill files open at once: two per bucket (events, notes)


@dataclass
class Samples:
    """The label samples as sorted arrays for the vectorised join.

    ``subjects`` are the unique labelled subject ids (sorted); subject ``subjects[i]`` owns samples
    ``first[i] .. first[i] + count[i] - 1`` of ``pred_us`` (prediction times, microseconds) and
    ``rank`` (the sample's position in the sorted ``patient_id`` strings).
    """

    subjects: np.ndarray
    first: np.ndarray
    count: np.ndarray
    pred_us: np.ndarray
    rank: np.ndarray
    ids: pa.Array  # patient ids in sorted string order (rank -> id)

    @classmethod
    def from_labels(cls, lab: pl.DataFrame) -> Samples:
        """``lab``: ``subject_id, prediction_time (us), patient_id``, sorted by subject then time."""
        subj = lab["subject_id"].cast(pl.Int64).to_numpy()
        subjects, first, count = np.unique(subj, return_index=True, return_counts=True)
        # polars sorts strings by their UTF-8 bytes: code point order, as Python's sorted()
        order = lab["patient_id"].arg_sort().to_numpy()
        rank = np.empty(len(lab), dtype=np.uint32)
        rank[order] = np.arange(len(lab), dtype=np.uint32)
        pred = lab["prediction_time"].cast(pl.Datetime("us")).dt.epoch("us").to_numpy()
        ids = lab["patient_id"].gather(order).to_arrow().cast(pa.string())
        return cls(subjects, first, count, pred, rank, ids)

    def join(self, sid: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inner join of event rows ``rows`` (subject ids ``sid[rows]``) to the samples.

        Returns:
            ``(row, sample)`` pairs, in row order (a row's samples consecutive, by prediction time).
        """
        if not len(self.subjects) or not len(rows):
            return rows[:0], rows[:0]
        s = sid[rows]
        pos = np.minimum(np.searchsorted(self.subjects, s), len(self.subjects) - 1)
        hit = self.subjects[pos] == s
        rows, pos = rows[hit], pos[hit]
        cnt = self.count[pos]
        if len(cnt) == 0 or cnt.max() == 1:
            return rows, self.first[pos]
        row_of = np.repeat(np.arange(len(rows)), cnt)
        starts = np.cumsum(cnt) - cnt
        within = np.arange(len(row_of)) - np.repeat(starts, cnt)
        return rows[row_of], self.first[pos][row_of] + within


class _Spill:
    """One kind of spilled rows (events or notes): an Arrow IPC stream file per bucket."""

    def __init__(self, folder: Path, kind: str, schema: pa.Schema, n_buckets: int) -> None:
        self.folder, self.kind, self.schema = folder, kind, schema
        self.files: list[Path | None] = [None] * n_buckets
        self.rows = [0] * n_buckets
        self.nbytes = [0] * n_buckets
        self._writers: list = [None] * n_buckets

    def write(self, bucket: np.ndarray, arrays: list[pa.Array]) -> None:
        """Append rows (``bucket`` sorted) to their buckets' files."""
        if not len(bucket):
            return
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        bounds = np.searchsorted(bucket, np.arange(len(self.files) + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            part = batch.slice(bounds[b], bounds[b + 1] - bounds[b])
            if self._writers[b] is None:
                self.files[b] = self.folder / f"{self.kind}-{b:05d}.arrows"
                self._writers[b] = pa.ipc.new_stream(pa.OSFile(str(self.files[b]), "wb"), self.schema)
            self._writers[b].write_batch(part)
            self.rows[b] += part.num_rows
            self.nbytes[b] += part.nbytes

    def close(self) -> None:
        for w in self._writers:
            if w is not None:
                w.close()
        self._writers = [None] * len(self.files)

    def load(self, buckets: list[int]) -> dict:
        """Read the ``buckets`` back (deleting their files) as numpy columns, and ``text`` as one
        Arrow array, sorted by (rank, time), ties in spill order."""
        n = sum(self.rows[b] for b in buckets)
        cols = {f.name: np.empty(n, f.type.to_pandas_dtype()) for f in self.schema if f.name != "text"}
        texts, pos = [], 0
        for b in buckets:
            if self.files[b] is None:
                continue
            with pa.OSFile(str(self.files[b]), "rb") as fh:
                for batch in pa.ipc.open_stream(fh):
                    k = batch.num_rows
                    for name, arr in cols.items():
                        arr[pos:pos + k] = batch.column(name).to_numpy()
                    if "text" in self.schema.names:
                        texts.append(batch.column("text"))
                    pos += k
            self.files[b].unlink()
        if "text" in self.schema.names:
            cols["text"] = pa.concat_arrays(texts) if texts else pa.array([], pa.large_string())
            del texts
        _sort(cols)
        return cols


def _sort(cols: dict) -> None:
    """Sort the numpy columns ``cols`` in place by (rank, time), stably (ties keep spill order).

    MEDS shards are sorted by subject and time, so a stable sort by rank alone usually suffices (a
    radix sort when the ranks span < 65536); the two-key sort runs only when some sample's rows are
    not time-ordered in the spill (unsorted shards, a subject split across shards). Columns are
    permuted one at a time: one extra column in memory, not a second copy of all.
    """
    rank = cols["rank"]
    if len(rank) < 2:
        return
    key = rank - np.uint32(rank.min())
    if int(key.max()) < 1 << 16:
        key = key.astype(np.uint16)
    order = np.argsort(key, kind="stable")
    del key
    if (order[1:] > order[:-1]).all():
        order = None
    else:
        cols["rank"] = rank = rank[order]
        cols["time"] = cols["time"][order]
    time = cols["time"]
    if ((rank[1:] == rank[:-1]) & (time[1:] < time[:-1])).any():
        second = np.lexsort((time, rank))  # stable: equal (rank, time) keep their order
        cols["rank"], cols["time"] = rank[second], time[second]
        order = second if order is None else order[second]
        del second
    if order is None:
        return
    for name in cols:
        if name not in ("rank", "time"):
            cols[name] = cols[name][order] if isinstance(cols[name], np.ndarray) else cols[name].take(pa.array(order))


@dataclass
class ScanResult:
    """What the single read of the shards gives to the rest of the conversion."""

    static: pl.DataFrame  # _file, subject_id, code (String), numeric_value, _text: null-time rows but MEDS_BIRTH
    birth: pl.DataFrame  # subject_id, _birth, _birth_file: the MEDS_BIRTH time per subject (checked)
    n_unused: int  # timed rows (MEDS_BIRTH aside) with neither a numeric nor a text value
    codes: list[str]  # code id -> code
    events: _Spill  # rank, time, code, value
    notes: _Spill | None  # rank, time, text


class _Problems:
    """Bad values found while scanning, reported after the scan as the old full-scan check did."""

    def __init__(self) -> None:
        self.count = {"subject_id": 0, "code": 0, "numeric_value": 0}
        self.file: dict[str, str] = {}
        self.subjects: dict[str, list] = {"subject_id": [], "code": [], "numeric_value": []}
        self.codes: list[str] = []

    def add(self, col: str, path: Path, n: int, subjects=(), codes=()) -> None:
        if not n:
            return
        self.count[col] += n
        self.file.setdefault(col, str(path))
        if len(self.subjects[col]) < 10:
            self.subjects[col] += list(subjects)[: 10 - len(self.subjects[col])]
            if col == "numeric_value":
                self.codes += list(codes)[:10]

    def raise_first(self) -> None:
        for col in ("subject_id", "code"):
            if self.count[col]:
                who = "" if col == "subject_id" else f" (subject(s) {list(dict.fromkeys(self.subjects[col]))})"
                raise ValueError(f"{self.file[col]}: column '{col}' is null in {self.count[col]} row(s){who}")
        if self.count["numeric_value"]:
            raise ValueError(
                f"{self.file['numeric_value']}: column 'numeric_value' is NaN/inf for subject(s) "
                f"{list(dict.fromkeys(self.subjects['numeric_value']))} (codes {list(dict.fromkeys(self.codes))[:5]})"
            )


def plan_buckets(shards: list[Path], n_samples: int, n_subjects: int, has_text: bool, pass_bytes: float) -> int:
    """Number of spill buckets: about 4 per pass of ``pass_bytes``, from the shards' metadata."""
    rows, text = 0, 0
    for path in shards:
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        if has_text:
            names = [meta.schema.column(i).name for i in range(meta.num_columns)]
            j = names.index("text_value")
            text += sum(meta.row_group(g).column(j).total_uncompressed_size for g in range(meta.num_row_groups))
    # a subject with several prediction times repeats its events once per sample
    est = (rows * _SPILL_BYTES_PER_ROW + text) * max(1.0, n_samples / max(n_subjects, 1))
    return int(min(max(1, n_samples), _MAX_BUCKETS, max(1, 4 * math.ceil(est / pass_bytes))))


def scan_shards(shards: list[Path], samples: Samples, has_text: bool, lookback_us: int | None,
                spill: Path, n_buckets: int) -> ScanResult:
    """Read every shard once; spill the kept events by sample bucket (module docstring, step 1).

    Raises:
        ValueError: null ``subject_id`` / ``code`` or NaN/inf ``numeric_value``, naming the first
            file, the count and subjects (after the whole scan, so the count is the dataset's).
    """
    cols = ["subject_id", "time", "code", "numeric_value"] + (["text_value"] if has_text else [])
    code_id: dict[str, int] = {}
    events = _Spill(spill, "events", pa.schema([("rank", pa.uint32()), ("time", pa.int64()), ("code", pa.uint32()),
                                                ("value", pa.float64())]), n_buckets)
    notes = (_Spill(spill, "notes", pa.schema([("rank", pa.uint32()), ("time", pa.int64()),
                                               ("text", pa.large_string())]), n_buckets) if has_text else None)
    statics, births, problems, n_unused = [], [], _Problems(), 0
    n_samples = len(samples.rank)
    prev_dict, remap = None, np.zeros(0, np.uint32)
    try:
        for shard_no, path in enumerate(shards):
            pf = pq.ParquetFile(path, read_dictionary=["code"], pre_buffer=False)
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols, use_threads=False):
                n = batch.num_rows
                if not n:
                    continue
                # ---- columns as numpy (+ validity)
                sid_a = batch.column("subject_id")
                sid_ok = _valid(sid_a)
                sid = sid_a.fill_null(0).cast(pa.int64()).to_numpy()
                code_a = batch.column("code")
                if not pa.types.is_dictionary(code_a.type):
                    code_a = code_a.dictionary_encode()
                dictionary = code_a.dictionary
                if prev_dict is None or not dictionary.equals(prev_dict):
                    remap = np.array([code_id.setdefault(c, len(code_id)) for c in dictionary.to_pylist()],
                                     dtype=np.uint32)
                    prev_dict = dictionary
                code_ok = _valid(code_a)
                code = remap[code_a.indices.fill_null(0).to_numpy()] if len(remap) else np.zeros(n, np.uint32)
                time_a = batch.column("time")
                time_ok = _valid(time_a)
                t = time_a.cast(pa.timestamp("us", time_a.type.tz), safe=False).cast(pa.int64()).fill_null(0).to_numpy()
                val_a = batch.column("numeric_value")
                val_ok = _valid(val_a)
                val = val_a.cast(pa.float64()).to_numpy(zero_copy_only=False)
                text_a = batch.column("text_value") if has_text else None
                text_ok = _valid(text_a) if has_text else np.zeros(n, bool)
                # ---- checks (reported after the scan)
                if not sid_ok.all():
                    problems.add("subject_id", path, int((~sid_ok).sum()))
                if not code_ok.all():
                    problems.add("code", path, int((~code_ok).sum()), sid[~code_ok & sid_ok][:10].tolist())
                bad = val_ok & ~np.isfinite(val)
                if bad.any():
                    bad_rows = np.flatnonzero(bad)[:10]
                    problems.add("numeric_value", path, int(bad.sum()), sid[bad_rows].tolist(),
                                 code_a.take(pa.array(bad_rows)).cast(pa.string()).to_pylist())
                # ---- static and birth rows (few): kept as compact arrays for the tabular modality
                birth = code == code_id[BIRTH_CODE] if BIRTH_CODE in code_id else np.zeros(n, bool)
                birth &= code_ok
                if not time_ok.all():
                    rows = np.flatnonzero(~time_ok & sid_ok & code_ok & ~birth)
                    statics.append((np.full(len(rows), shard_no, np.uint32), sid[rows], code[rows], val[rows],
                                    val_ok[rows], text_ok[rows]))
                if birth.any():
                    rows = np.flatnonzero(birth & sid_ok)
                    births.append((sid[rows], t[rows], time_ok[rows], np.full(len(rows), shard_no, np.uint32)))
                # ---- timed events with a value, joined to the samples, spilled by bucket
                timed = time_ok & code_ok & ~birth
                valued = val_ok | text_ok
                n_unused += int((timed & ~valued).sum())
                row, sample = samples.join(sid, np.flatnonzero(timed & valued & sid_ok))
                pred = samples.pred_us[sample]
                keep = t[row] <= pred
                if lookback_us is not None:
                    keep &= t[row] >= pred - lookback_us
                row, sample = row[keep], sample[keep]
                if not len(row):
                    continue
                rank = samples.rank[sample]
                bucket = (rank.astype(np.int64) * n_buckets // n_samples).astype(np.uint16)
                order = np.argsort(bucket, kind="stable")  # radix sort; keeps row order within a bucket
                row, rank, bucket = row[order], rank[order], bucket[order]
                ev = np.flatnonzero(val_ok[row])
                events.write(bucket[ev], [pa.array(rank[ev]), pa.array(t[row[ev]]), pa.array(code[row[ev]]),
                                          pa.array(val[row[ev]])])
                if has_text:
                    nt = np.flatnonzero(text_ok[row])
                    notes.write(bucket[nt], [pa.array(rank[nt]), pa.array(t[row[nt]]),
                                             text_a.take(pa.array(row[nt])).cast(pa.large_string())])
                del batch
    finally:
        events.close()
        if notes is not None:
            notes.close()
    release_free_memory()
    problems.raise_first()
    codes = list(code_id)
    return ScanResult(_static_frame(statics, shards, codes), _birth_frame(births, shards), n_unused, codes, events,
                      notes)


def _concat(parts: list[tuple], i: int, dtype) -> np.ndarray:
    return np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dtype)


def _static_frame(parts: list[tuple], shards: list[Path], codes: list[str]) -> pl.DataFrame:
    """``_file, subject_id, code, numeric_value, _text`` of the static rows (one frame, strings by
    lookup; ``_text``: the row has a ``text_value``)."""
    values = pa.array(_concat(parts, 3, np.float64), mask=~_concat(parts, 4, bool))
    return pl.DataFrame({
        "_file": pl.Series([str(p) for p in shards], dtype=pl.String).gather(_concat(parts, 0, np.uint32)).cast(pl.Categorical),
        "subject_id": _concat(parts, 1, np.int64),
        "code": pl.Series(codes, dtype=pl.String).gather(_concat(parts, 2, np.uint32)),
        "numeric_value": pl.from_arrow(values).cast(pl.Float64),
        "_text": _concat(parts, 5, bool),
    })


def _birth_frame(parts: list[tuple], shards: list[Path]) -> pl.DataFrame:
    """``subject_id, _birth, _birth_file``: the ``MEDS_BIRTH`` time per subject and the shard of its
    first birth row.

    Raises:
        ValueError: a ``MEDS_BIRTH`` row with a null time, or two different birth times of one
            subject (naming the shard and subject, as conflicting static values are).
    """
    times = pa.array(_concat(parts, 1, np.int64), mask=~_concat(parts, 2, bool)).cast(pa.timestamp("us"))
    files = pl.Series([str(p) for p in shards], dtype=pl.String).gather(_concat(parts, 3, np.uint32))
    rows = pl.DataFrame({"subject_id": _concat(parts, 0, np.int64), "_birth": pl.from_arrow(times), "_birth_file": files})
    null = rows.filter(pl.col("_birth").is_null())
    if len(null):
        raise ValueError(
            f"{null['_birth_file'][0]}: {BIRTH_CODE} row(s) with a null 'time' for subject(s) "
            f"{null['subject_id'].unique(maintain_order=True).to_list()[:10]}: a birth needs its time (age_years)"
        )
    per_subject = rows.group_by("subject_id", maintain_order=True).agg(
        pl.col("_birth").first(), pl.col("_birth_file").first(), pl.col("_birth").n_unique().alias("_n"),
        pl.col("_birth").unique(maintain_order=True).head(3).alias("_times"))
    conflict = per_subject.filter(pl.col("_n") > 1)
    if len(conflict):
        row = conflict.row(0, named=True)
        raise ValueError(
            f"{row['_birth_file']}: subject {row['subject_id']} has {row['_n']} different {BIRTH_CODE} times "
            f"(column 'time': {[str(t) for t in row['_times']]}); one birth time per subject expected"
        )
    return per_subject.select("subject_id", "_birth", "_birth_file")


def _valid(arr: pa.Array) -> np.ndarray:
    """Validity of ``arr`` as a numpy bool array."""
    if arr.null_count == 0:
        return np.ones(len(arr), bool)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def write_events(scan: ScanResult, samples: Samples, lookback_us: int | None, out: Path,
                 pass_bytes: float) -> tuple[int, int]:
    """Sort the spilled buckets group by group and write ``timeseries.parquet`` / ``notes.parquet``.

    Returns:
        the number of timeseries and notes rows written (a file is written only when non-empty).
    """
    spills = [scan.events] + ([scan.notes] if scan.notes is not None else [])
    groups, cur, size = [], [], 0
    for b in range(len(scan.events.files)):
        nbytes = sum(sp.nbytes[b] for sp in spills)
        if cur and size + nbytes > pass_bytes:
            groups.append(cur)
            cur, size = [], 0
        cur.append(b)
        size += nbytes
    if cur:
        groups.append(cur)
    ids = samples.ids
    codes = pa.array(scan.codes, pa.large_string())
    start_of_rank = None
    if lookback_us is not None:
        start_of_rank = np.empty(len(samples.rank), np.int64)
        start_of_rank[samples.rank] = samples.pred_us - lookback_us
    ts_writer = _Writer(out / "timeseries.parquet", [("time", pa.float64()), ("variable", pa.large_string()),
                                                      ("value", pa.float64())])
    notes_writer = _Writer(out / "notes.parquet", [("time", pa.float64()), ("text", pa.large_string())])
    births = _BirthCheck(scan.birth, samples)
    try:
        for group in groups:
            parts = [sp.load(group) for sp in spills]
            for p in parts:
                births.check(p["time"], p["rank"])
            if start_of_rank is not None:
                index_of = lambda r: start_of_rank[r]  # noqa: E731
            else:  # the sample's earliest kept event (timeseries or notes): first of its run
                lo = min((int(p["rank"][0]) for p in parts if len(p["rank"])), default=0)
                hi = max((int(p["rank"][-1]) for p in parts if len(p["rank"])), default=0)
                first = np.full(hi - lo + 1, np.iinfo(np.int64).max, np.int64)
                for p in parts:
                    r = p["rank"]
                    if len(r):
                        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
                        first[r[starts] - lo] = np.minimum(first[r[starts] - lo], p["time"][starts])
                index_of = lambda r, first=first, lo=lo: first[r - lo]  # noqa: E731
            ev = parts[0]
            ts_writer.write(ids, ev["rank"], {
                "time": lambda s, p=ev: _hours(p["time"][s], index_of(p["rank"][s])),
                "variable": lambda s, p=ev: codes.take(pa.array(p["code"][s])),
                "value": lambda s, p=ev: pa.array(p["value"][s]),
            })
            if len(parts) > 1:
                nt = parts[1]
                notes_writer.write(ids, nt["rank"], {
                    "time": lambda s, p=nt: _hours(p["time"][s], index_of(p["rank"][s])),
                    "text": lambda s, p=nt: p["text"].slice(s.start, s.stop - s.start),
                })
            del parts, ev, index_of
            nt = None
            release_free_memory()
    finally:
        ts_writer.close()
        notes_writer.close()
    return ts_writer.rows, notes_writer.rows


class _BirthCheck:
    """Kept events (timeseries or notes) before their subject's ``MEDS_BIRTH`` are impossible data
    (a shifted birth, another person's rows): they would become events at a negative age, so
    :meth:`check` raises ``ValueError`` naming the subject, the birth and the event time."""

    def __init__(self, birth: pl.DataFrame, samples: Samples) -> None:
        self.file, self.of_rank, self.subject_of_rank = birth, None, None
        if not len(birth):
            return
        by_subject = birth.sort("subject_id")
        known = by_subject["subject_id"].to_numpy()
        born = by_subject["_birth"].cast(pl.Datetime("us")).dt.epoch("us").to_numpy()
        subject = np.repeat(samples.subjects, samples.count)  # each sample's subject, in label order
        at = np.clip(np.searchsorted(known, subject), 0, len(known) - 1)
        has = known[at] == subject
        self.of_rank = np.full(len(samples.rank), np.iinfo(np.int64).min, np.int64)  # no birth: never before
        self.of_rank[samples.rank[has]] = born[at[has]]
        self.subject_of_rank = np.empty(len(samples.rank), np.int64)
        self.subject_of_rank[samples.rank] = subject

    def check(self, time: np.ndarray, rank: np.ndarray) -> None:
        if self.of_rank is None or not len(time):
            return
        before = time < self.of_rank[rank]
        if before.any():
            k = int(np.flatnonzero(before)[0])
            subject = int(self.subject_of_rank[rank[k]])
            row = self.file.filter(pl.col("subject_id") == subject).row(0, named=True)
            event = np.datetime64(int(time[k]), "us")
            raise ValueError(
                f"{row['_birth_file']}: subject {subject} has MEDS_BIRTH at {row['_birth']}, after one of its "
                f"events (at {event}; {int(before.sum())} such event(s) in this pass): an event before birth; fix "
                "the birth time or drop those events"
            )


def _hours(time: np.ndarray, index: np.ndarray) -> pa.Array:
    """Hours from the index time; polars' division, as the in-memory converter computed it (the
    same float bits)."""
    return (pl.Series(time - index) / US_PER_HOUR).to_arrow()


class _Writer:
    """Append row groups to one parquet file (created on the first rows), ``patient_id`` first as a
    dictionary-encoded string column (dictionary: the row group's distinct ids, sorted), as polars
    writes a Categorical."""

    def __init__(self, path: Path, columns: list[tuple[str, pa.DataType]]) -> None:
        self.path, self.rows, self.writer = path, 0, None
        self.schema = pa.schema([("patient_id", pa.dictionary(pa.uint32(), pa.string())), *columns])

    def write(self, ids: pa.Array, rank: np.ndarray, columns: dict) -> None:
        """``rank``: sorted sample ranks of the rows; ``columns``: callables taking a slice of the
        rows and returning their Arrow array."""
        if not len(rank):
            return
        if self.writer is None:
            # as polars writes: zstd level 3, dictionary pages for the strings only (not the floats)
            strings = [f.name for f in self.schema if not pa.types.is_floating(f.type)]
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd", compression_level=3,
                                           use_dictionary=strings)
        for lo in range(0, len(rank), ROW_GROUP_ROWS):
            s = slice(lo, min(lo + ROW_GROUP_ROWS, len(rank)))
            r = rank[s]
            new = np.r_[True, r[1:] != r[:-1]]  # r is sorted: the dictionary is its distinct ids
            pid = pa.DictionaryArray.from_arrays(pa.array((np.cumsum(new) - 1).astype(np.uint32)), ids.take(pa.array(r[new])))
            arrays = [pid] + [c(s).cast(f.type) for c, f in zip(columns.values(), list(self.schema)[1:])]
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=ROW_GROUP_ROWS)
        self.rows += len(rank)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
