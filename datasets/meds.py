"""MEDS converter: a MEDS dataset + a label file -> a clinfuse cohort folder (``docs/sources/meds.md``).

MEDS (Medical Event Data Standard) stores one long event table ``subject_id, time, code,
numeric_value, text_value`` in parquet shards under ``data/``, with ``metadata/codes.parquet`` and
``metadata/subject_splits.parquet``. Every label row (``subject_id, prediction_time, <value>``)
becomes one clinfuse sample ``"{subject_id}@{prediction_time ISO}"``; its modalities hold only the
subject's events at or before ``prediction_time``:

- static rows (null ``time``) -> ``tabular.parquet``: a code with a value -> a numeric column
  named by the code; ``PREFIX//LEVEL`` without a value -> a categorical column ``PREFIX`` with
  level ``LEVEL``; a code without ``//`` and without a value -> an indicator column (1.0 = the
  subject has it, 0.0 = a subject with other static rows, selected or not, lacks it; null = the
  subject has no static row at all). A static row's ``text_value`` is not used (a warning names
  the shard, codes and subjects): the row counts by its code and ``numeric_value`` only;
- ``MEDS_BIRTH`` (timed) -> tabular ``age_years`` at the prediction time. A ``MEDS_BIRTH`` row
  without a time, two different birth times of one subject, a birth after a prediction time or
  after one of the subject's kept events, and a static code named ``age_years`` are errors;
- timed rows with ``numeric_value`` -> ``timeseries.parquet`` (variable = code);
- timed rows with ``text_value`` -> ``notes.parquet``;
- timed rows with neither value (e.g. ``DIAGNOSIS//ICD10//I10``, ``ADMISSION``) are not used
  (their count over the whole dataset is ``cohort.json`` ``n_events.timed_without_value``).

``time`` (shards) and ``prediction_time`` (labels) must be time-zone-naive, as the MEDS schema
says (``timestamp[us]``): a time-zone-aware column is an error naming the file and the zone, since
comparing it with naive times would shift events against the prediction time.

Event times are hours from the sample's index time: ``prediction_time - max_hours_before`` when a
lookback is given, else the sample's earliest timeseries/notes event; so times are >= 0.

The shards are read once, one record batch at a time, and the event tables are sorted in passes
of bounded memory through a disk spill (``datasets/meds_events.py``), so peak memory does not grow
with the dataset (``memory_mb``).

The new cohort is written into a staging folder inside ``out`` and moved into place only when the
whole conversion succeeded (``datasets/staging.py``), so a failed conversion leaves an earlier cohort
as it was.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from clinfuse.datasets.conversion import fingerprint, is_current, write_cohort_info
from clinfuse.datasets.arrow_memory import arrow_system_pool
from clinfuse.datasets.meds_events import BIRTH_CODE as _BIRTH_CODE
from clinfuse.datasets.meds_events import (
    _PASS_FACTOR, US_PER_HOUR, Samples, plan_buckets, scan_shards, write_events,
)
from clinfuse.datasets.meds_labels import SPLIT_NAMES, read_labels, read_subject_splits
from clinfuse.datasets.staging import check_out, staged_out

BIRTH_CODE = _BIRTH_CODE  # re-exported (meds.BIRTH_CODE); defined in meds_events

FORMAT = "meds"
_NAME = "MEDS"  # as messages spell the format
_DATA_DTYPES = {
    "subject_id": (pl.Int64, pl.Int32, pl.UInt32, pl.UInt64),
    "time": (pl.Datetime,),
    "code": (pl.String, pl.Categorical),
    "numeric_value": (pl.Float32, pl.Float64),
    "text_value": (pl.String,),
}
_REQUIRED = ("subject_id", "time", "code", "numeric_value")
#: tabular columns the converter makes itself (a static code of that name would clash)
_RESERVED = ("patient_id", "subject_id", "prediction_time", "age_years")
_OWNED = ("labels.parquet", "splits.csv", "tabular.parquet", "timeseries.parquet", "notes.parquet")
#: default memory budget of the event sort (MiB), see ``memory_mb``
DEFAULT_MEMORY_MB = 16.0


def convert_meds(
    src: str | Path,
    out: str | Path,
    *,
    labels: str | Path,
    task: str | None = None,
    tabular_codes: Sequence[str] | None = None,
    max_hours_before: float | None = None,
    overwrite: bool = False,
    memory_mb: float = DEFAULT_MEMORY_MB,
) -> Path:
    """Convert a MEDS dataset and one label file (or folder of label shards) to a cohort folder.

    Args:
        src: the MEDS root (``data/**/*.parquet``, ``metadata/subject_splits.parquet``).
        out: the cohort folder to write.
        labels: a parquet file, or a folder of parquet shards, in the MEDS label schema
            (``subject_id, prediction_time`` + ``boolean_value`` / ``integer_value`` /
            ``float_value`` / ``categorical_value``) and/or the time-to-event extension
            (``time_to_event`` days > 0, ``event`` bool); see ``docs/sources/meds.md``.
        task: the task's name recorded in ``cohort.json`` (default: the labels path's stem).
        tabular_codes: static codes to put in the tabular modality, each an exact code or a
            prefix (``"GENDER"`` selects ``GENDER//F``); ``None`` = every static code.
        max_hours_before: keep only events in ``[prediction_time - max_hours_before,
            prediction_time]``; times then count from ``prediction_time - max_hours_before``.
        overwrite: rewrite ``out`` even when it holds a current conversion, or when it is a
            non-empty folder that is not a MEDS conversion (other files in it are kept).
        memory_mb: about how much memory (MiB) one sorting pass over the event rows may take; a
            smaller budget means more, smaller passes (the output is the same). Needs about 24
            bytes per kept event (plus note text) of temporary disk space next to ``out``.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: naming the file, column and subject for bad input; naming ``out`` when it is a file
            or a non-empty folder that is no MEDS conversion and ``overwrite`` is False (before any
            input is read, and again before the new cohort is moved in).
    """
    src, out, labels = Path(src), Path(out), Path(labels)
    if max_hours_before is not None and not max_hours_before > 0:
        raise ValueError(f"max_hours_before must be > 0 hours; got {max_hours_before}")
    if not memory_mb > 0:
        raise ValueError(f"memory_mb must be > 0; got {memory_mb}")
    check_out(out, FORMAT, overwrite, _NAME)  # before reading anything: a file, or a folder that is no MEDS conversion
    shards = sorted((src / "data").rglob("*.parquet"))
    if not shards:
        raise ValueError(f"{src / 'data'}: no parquet shard found (MEDS layout: data/**/*.parquet)")
    splits_path = src / "metadata" / "subject_splits.parquet"
    label_files = sorted(labels.rglob("*.parquet")) if labels.is_dir() else [labels]
    if not label_files:
        raise ValueError(f"labels {labels}: the folder holds no label parquet file (*.parquet)")
    options = dict(task=task, tabular_codes=None if tabular_codes is None else list(tabular_codes),
                   max_hours_before=max_hours_before, labels=str(labels.resolve()))
    fp = fingerprint([*shards, splits_path, *label_files], options)
    if not overwrite and is_current(out, FORMAT, fp):
        print(f"reusing converted cohort {out} (inputs unchanged)")
        return out

    has_text = _check_shards(shards)
    lab, label_info = read_labels(label_files)
    split_of = read_subject_splits(splits_path, lab["subject_id"].unique())
    splits = lab.select("patient_id", pl.col("subject_id").replace_strict(split_of).alias("split"))
    del split_of  # a dict over every subject of the splits file
    samples = Samples.from_labels(lab)
    lookback_us = None if max_hours_before is None else int(round(max_hours_before * US_PER_HOUR))
    pass_bytes = memory_mb * 2**20 / _PASS_FACTOR
    n_buckets = plan_buckets(shards, len(lab), len(samples.subjects), has_text, pass_bytes)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-spill-", dir=out.parent) as spill, arrow_system_pool():
        # the one read of the shards; it validates them
        scan = scan_shards(shards, samples, has_text, lookback_us, Path(spill), n_buckets)
        if len(scan.birth):  # before the events, which are also checked against the birth
            _no_birth_after_prediction(lab.select(pl.col("subject_id").cast(pl.Int64), "prediction_time")
                                       .join(scan.birth, on="subject_id"))
        # the new cohort is staged and moved into `out` only at the end (a failed conversion never
        # touches `out`); after the scan, so that bad values in the shards do not even create `out`
        with staged_out(out, FORMAT, overwrite, _OWNED, name=_NAME, fp=fp) as new:
            n_ts, n_notes = write_events(scan, samples, lookback_us, new, pass_bytes)
            # the small tables after the events, so that their polars work does not add to the sort's peak
            tabular = _tabular(scan.static, scan.birth, lab, tabular_codes, shards)
            scan.static = scan.birth = None
            modalities = []
            if tabular is not None:
                tabular.write_parquet(new / "tabular.parquet")
                modalities.append("tabular")
                del tabular
            lab.select("patient_id", *label_info["columns"]).write_parquet(new / "labels.parquet")
            splits.write_csv(new / "splits.csv")
            n_unused = scan.n_unused
            modalities += [m for m, n in (("timeseries", n_ts), ("notes", n_notes)) if n]

            write_cohort_info(
                new, FORMAT, fp, name=task or labels.stem, task=task or labels.stem, n_patients=len(lab),
                n_subjects=int(lab["subject_id"].n_unique()), modalities=modalities, missingness={},
                time_unit="hours from the index time (docs/sources/meds.md); survival time in days from "
                          "prediction_time",
                index_time="prediction_time - max_hours_before" if max_hours_before else "first timeseries/notes event",
                max_hours_before=max_hours_before,
                n_events={"timeseries": n_ts, "notes": n_notes, "timed_without_value": n_unused},
                splits_from=dict(SPLIT_NAMES), **label_info["info"],
            )
    return out


# ---------------------------------------------------------------------- data shards
def _check_shards(shards: list[Path]) -> bool:
    """Validate every shard's columns and dtypes (from the parquet schema; the values, null
    ``subject_id`` / ``code`` and NaN/inf ``numeric_value``, are checked during the one scan).

    Returns:
        whether the shards carry ``text_value`` (all or none of them must).
    """
    with_text = []
    for path in shards:
        try:
            schema = pl.read_parquet_schema(path)
        except Exception as err:  # polars raises several error types; name the file
            raise ValueError(f"{path}: cannot read parquet: {err}") from err
        missing = [c for c in _REQUIRED if c not in schema]
        if missing:
            raise ValueError(f"{path}: missing required MEDS column(s) {missing}; found {list(schema)}")
        for col, allowed in _DATA_DTYPES.items():
            if col in schema and not any(schema[col] == a or isinstance(schema[col], a) for a in allowed):
                raise ValueError(
                    f"{path}: column '{col}' has dtype {schema[col]}; MEDS expects "
                    f"{' or '.join(str(a) for a in allowed)}"
                    + (" (timestamps must be parquet timestamps, not strings)" if col == "time" else "")
                )
        if schema["time"].time_zone is not None:
            raise ValueError(
                f"{path}: column 'time' has time zone {schema['time'].time_zone!r}; MEDS times are "
                "time-zone-naive (timestamp[us]) and are compared with the labels' naive prediction_time. "
                "Store naive local (or UTC) times, e.g. polars "
                "pl.col('time').dt.convert_time_zone(<zone>).dt.replace_time_zone(None)"
            )
        with_text.append("text_value" in schema)
    if any(with_text) and not all(with_text):
        lacking = [str(p) for p, t in zip(shards, with_text) if not t][:5]
        raise ValueError(f"shard(s) {lacking} lack column 'text_value' that other shards have")
    return all(with_text)


# ---------------------------------------------------------------------- static -> tabular
def _tabular(static: pl.DataFrame, birth: pl.DataFrame, lab: pl.DataFrame, select: Sequence[str] | None,
             shards: list[Path]) -> pl.DataFrame | None:
    """One row per sample: static codes (numeric / categorical / indicator) and age at prediction.

    ``static``: every null-time row but ``MEDS_BIRTH`` (``_file, subject_id, code, numeric_value,
    _text``); ``birth``: the ``MEDS_BIRTH`` time per subject (``subject_id, _birth, _birth_file``),
    both from the one scan (which checked the birth rows).
    """
    # subjects with any static row: an indicator code they lack is 0.0 (null for the others)
    has_static = static["subject_id"].unique()
    if select is not None:
        chosen = pl.lit(False)
        for entry in select:
            chosen = chosen | (pl.col("code") == entry) | pl.col("code").str.starts_with(f"{entry}//")
        unmatched = [e for e in select if not static["code"].is_in([e]).any()
                     and not static["code"].str.starts_with(f"{e}//").any()]
        if unmatched:
            raise ValueError(f"tabular_codes {unmatched} match no static code (null time) in {shards[0].parent}")
        static = static.filter(chosen)
    _warn_static_text(static)
    _no_reserved_columns(static, with_age=len(birth) > 0)
    frames = []
    numeric = static.filter(pl.col("numeric_value").is_not_null())
    if len(numeric):
        _no_conflicts(numeric, ["subject_id", "code"], "numeric_value")
        frames.append(numeric.pivot(on="code", index="subject_id", values="numeric_value", aggregate_function="first")
                      .with_columns(pl.exclude("subject_id").cast(pl.Float64)))
    coded = static.filter(pl.col("numeric_value").is_null())
    leveled = coded.filter(pl.col("code").str.contains("//", literal=True)).with_columns(
        pl.col("code").str.splitn("//", 2).struct.rename_fields(["column", "level"]).alias("_s")
    ).unnest("_s")
    if len(leveled):
        _no_conflicts(leveled.unique(["subject_id", "code"]), ["subject_id", "column"], "level")
        frames.append(leveled.pivot(on="column", index="subject_id", values="level", aggregate_function="first"))
    flags = coded.filter(~pl.col("code").str.contains("//", literal=True)).unique(["subject_id", "code"])
    flag_columns = []
    if len(flags):
        frames.append(flags.with_columns(pl.lit(1.0).alias("_v")).pivot(on="code", index="subject_id", values="_v"))
        flag_columns = [c for c in frames[-1].columns if c != "subject_id"]
    if not frames and not len(birth):
        return None
    table = lab.select(pl.col("subject_id").cast(pl.Int64), "prediction_time", "patient_id")
    for frame in frames:
        dup = set(frame.columns) & set(table.columns) - {"subject_id"}
        if dup:
            raise ValueError(f"{shards[0].parent}: static codes give clashing tabular column(s) {sorted(dup)}")
        table = table.join(frame, on="subject_id", how="left")
    if flag_columns:
        absent = pl.when(pl.col("subject_id").is_in(has_static.implode())).then(0.0)
        table = table.with_columns(pl.col(flag_columns).fill_null(absent))
    if len(birth):
        table = table.join(birth, on="subject_id", how="left")  # no birth after a prediction: checked after the scan
        age = (pl.col("prediction_time") - pl.col("_birth")).dt.total_microseconds() / (US_PER_HOUR * 24 * 365.25)
        table = table.with_columns(age.alias("age_years")).drop("_birth", "_birth_file")
    known = [c for c in table.columns if c not in ("subject_id", "prediction_time", "patient_id")]
    has_any = pl.any_horizontal([pl.col(c).is_not_null() for c in known])
    # a sample whose subject has no static fact at all is absent from tabular (never zero-filled)
    return table.filter(has_any).select(pl.col("patient_id").cast(pl.String), *known)


def _warn_static_text(static: pl.DataFrame) -> None:
    """Warn (naming shard, codes and subjects) that static rows' ``text_value`` is not used."""
    text = static.filter(pl.col("_text"))
    if len(text):
        files = text["_file"].cast(pl.String).unique(maintain_order=True).to_list()
        warnings.warn(
            f"{files[0]}{f' (and {len(files) - 1} more shard(s))' if len(files) > 1 else ''}: {len(text)} static "
            f"row(s) (null time) carry a text_value, which is not used (code(s) "
            f"{text['code'].unique(maintain_order=True).to_list()[:5]}, subject(s) "
            f"{text['subject_id'].unique(maintain_order=True).to_list()[:10]}); a static row becomes a tabular "
            "column by its code and numeric_value only (docs/sources/meds.md)",
            UserWarning, stacklevel=4,
        )


def _no_reserved_columns(static: pl.DataFrame, with_age: bool) -> None:
    """Raise ``ValueError`` when a static code would give a column the converter makes itself
    (``age_years`` only when there are ``MEDS_BIRTH`` rows)."""
    column = (pl.when(pl.col("numeric_value").is_null() & pl.col("code").str.contains("//", literal=True))
              .then(pl.col("code").str.splitn("//", 2).struct.field("field_0")).otherwise(pl.col("code")))
    reserved = [c for c in _RESERVED if with_age or c != "age_years"]
    bad = static.with_columns(column.alias("_column")).filter(pl.col("_column").is_in(reserved))
    if len(bad):
        row = bad.row(0, named=True)
        what = "the age computed from MEDS_BIRTH" if row["_column"] == "age_years" else "a column the converter writes"
        raise ValueError(
            f"{row['_file']}: static code {row['code']!r} (subject {row['subject_id']}) gives the tabular column "
            f"{row['_column']!r}, which clashes with {what}; static codes give clashing tabular column(s) "
            f"{[row['_column']]}"
        )


def _no_birth_after_prediction(table: pl.DataFrame) -> None:
    """Raise ``ValueError`` naming file and subject when ``MEDS_BIRTH`` is after a prediction time."""
    late = table.filter(pl.col("_birth") > pl.col("prediction_time"))
    if len(late):
        row = late.row(0, named=True)
        raise ValueError(
            f"{row['_birth_file']}: subject {row['subject_id']} has MEDS_BIRTH at {row['_birth']}, after its "
            f"prediction_time {row['prediction_time']} (column 'time'; {len(late)} sample(s) of "
            f"{late['subject_id'].n_unique()} subject(s)): age_years would be negative"
        )


def _no_conflicts(df: pl.DataFrame, key: list[str], value: str) -> None:
    """Raise ``ValueError`` naming file and subject when ``key`` has several different ``value``."""
    n = df.group_by(key).agg(pl.col(value).n_unique().alias("_n"), pl.col("_file").first()).filter(pl.col("_n") > 1)
    if len(n):
        row = n.row(0, named=True)
        raise ValueError(
            f"{row['_file']}: subject {row['subject_id']} has conflicting static values for "
            f"{ {k: row[k] for k in key if k != 'subject_id'} } (column '{value}')"
        )
