"""MEDS converter: a MEDS dataset + a label file -> a clinfuse cohort folder (``docs/sources/meds.md``).

MEDS (Medical Event Data Standard) stores one long event table ``subject_id, time, code,
numeric_value, text_value`` in parquet shards under ``data/``, with ``metadata/codes.parquet`` and
``metadata/subject_splits.parquet``. Every label row (``subject_id, prediction_time, <value>``)
becomes one clinfuse sample ``"{subject_id}@{prediction_time ISO}"``; its modalities hold only the
subject's events at or before ``prediction_time``:

- static rows (null ``time``) -> ``tabular.parquet``: a code with a value -> a numeric column
  named by the code; ``PREFIX//LEVEL`` without a value -> a categorical column ``PREFIX`` with
  level ``LEVEL``; a code without ``//`` and without a value -> an indicator column (1.0 = the
  subject has it, 0.0 = a subject with other static facts lacks it);
- ``MEDS_BIRTH`` (timed) -> tabular ``age_years`` at the prediction time;
- timed rows with ``numeric_value`` -> ``timeseries.parquet`` (variable = code);
- timed rows with ``text_value`` -> ``notes.parquet``;
- timed rows with neither value (e.g. ``DIAGNOSIS//ICD10//I10``, ``ADMISSION``) are not used
  (their count over the whole dataset is ``cohort.json`` ``n_events.timed_without_value``).

Event times are hours from the sample's index time: ``prediction_time - max_hours_before`` when a
lookback is given, else the sample's earliest timeseries/notes event; so times are >= 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from clinfuse.datasets.conversion import fingerprint, is_current, write_cohort_info
from clinfuse.datasets.meds_labels import SPLIT_NAMES, read_labels, read_subject_splits

FORMAT = "meds"
_DATA_DTYPES = {
    "subject_id": (pl.Int64, pl.Int32, pl.UInt32, pl.UInt64),
    "time": (pl.Datetime,),
    "code": (pl.String, pl.Categorical),
    "numeric_value": (pl.Float32, pl.Float64),
    "text_value": (pl.String,),
}
_REQUIRED = ("subject_id", "time", "code", "numeric_value")
_OWNED = ("labels.parquet", "splits.csv", "tabular.parquet", "timeseries.parquet", "notes.parquet")
BIRTH_CODE = "MEDS_BIRTH"
_US_PER_HOUR = 3_600_000_000.0
#: shards may mix int32/int64 ids and float32/float64 values
_CAST = pl.ScanCastOptions(integer_cast="upcast", float_cast="upcast")


def convert_meds(
    src: str | Path,
    out: str | Path,
    *,
    labels: str | Path,
    task: str | None = None,
    tabular_codes: Sequence[str] | None = None,
    max_hours_before: float | None = None,
    overwrite: bool = False,
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
            non-empty folder that is not a cohort.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: naming the file, column and subject for bad input.
    """
    src, out, labels = Path(src), Path(out), Path(labels)
    if max_hours_before is not None and not max_hours_before > 0:
        raise ValueError(f"max_hours_before must be > 0 hours; got {max_hours_before}")
    shards = sorted((src / "data").rglob("*.parquet"))
    if not shards:
        raise ValueError(f"{src / 'data'}: no parquet shard found (MEDS layout: data/**/*.parquet)")
    splits_path = src / "metadata" / "subject_splits.parquet"
    label_files = sorted(labels.rglob("*.parquet")) if labels.is_dir() else [labels]
    options = dict(task=task, tabular_codes=None if tabular_codes is None else list(tabular_codes),
                   max_hours_before=max_hours_before, labels=str(labels.resolve()))
    fp = fingerprint([*shards, splits_path, *label_files], options)
    if not overwrite and is_current(out, FORMAT, fp):
        print(f"reusing converted cohort {out} (inputs unchanged)")
        return out

    has_text = _check_shards(shards)
    lab, label_info = read_labels(label_files)
    split_of = read_subject_splits(splits_path, lab["subject_id"].unique())
    _prepare_out(out, overwrite)
    ids = lab["patient_id"].to_list()
    lab.select("patient_id", *label_info["columns"]).write_parquet(out / "labels.parquet")
    lab.select("patient_id", pl.col("subject_id").replace_strict(split_of).alias("split")).write_csv(out / "splits.csv")

    data = pl.scan_parquet(shards, include_file_paths="_file", cast_options=_CAST)
    # an Enum in sorted-string order: the event tables are written sorted as the readers sort them,
    # without a string per event in memory
    keys = lab.lazy().select("subject_id", "prediction_time", pl.col("patient_id").cast(pl.Enum(sorted(ids))))
    modalities = []
    tabular = _tabular(data, keys, tabular_codes, shards)
    if tabular is not None:
        tabular.write_parquet(out / "tabular.parquet")
        modalities.append("tabular")
    n_ts, n_notes, n_unused = _events(data, keys, has_text, max_hours_before, out)
    modalities += [m for m, n in (("timeseries", n_ts), ("notes", n_notes)) if n]

    write_cohort_info(
        out, FORMAT, fp, name=task or labels.stem, task=task or labels.stem, n_patients=len(ids),
        n_subjects=int(lab["subject_id"].n_unique()), modalities=modalities, missingness={},
        time_unit="hours from the index time (docs/sources/meds.md); survival time in days from prediction_time",
        index_time="prediction_time - max_hours_before" if max_hours_before else "first timeseries/notes event",
        max_hours_before=max_hours_before, n_events={"timeseries": n_ts, "notes": n_notes, "timed_without_value": n_unused},
        splits_from=dict(SPLIT_NAMES), **label_info["info"],
    )
    return out


# ---------------------------------------------------------------------- data shards
def _check_shards(shards: list[Path]) -> bool:
    """Validate every shard's columns and dtypes and the finiteness of ``numeric_value``.

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
        with_text.append("text_value" in schema)
    if any(with_text) and not all(with_text):
        lacking = [str(p) for p, t in zip(shards, with_text) if not t][:5]
        raise ValueError(f"shard(s) {lacking} lack column 'text_value' that other shards have")
    scan = pl.scan_parquet(shards, include_file_paths="_file", cast_options=_CAST)
    value = pl.col("numeric_value")
    non_finite = value.is_nan() | value.is_infinite()
    counts = scan.select(pl.col("subject_id").null_count(), pl.col("code").null_count(), non_finite.sum()).collect()
    for col in ("subject_id", "code"):
        if counts[col][0]:
            bad = scan.filter(pl.col(col).is_null()).select("_file", "subject_id").head(10).collect()
            who = "" if col == "subject_id" else f" (subject(s) {bad['subject_id'].unique().to_list()})"
            raise ValueError(f"{bad['_file'][0]}: column '{col}' is null in {counts[col][0]} row(s){who}")
    if counts["numeric_value"][0]:
        bad = scan.filter(non_finite).select("_file", "subject_id", "code").head(10).collect()
        raise ValueError(
            f"{bad['_file'][0]}: column 'numeric_value' is NaN/inf for subject(s) "
            f"{bad['subject_id'].unique(maintain_order=True).to_list()} (codes {bad['code'].unique().to_list()[:5]})"
        )
    return all(with_text)


def _events(data: pl.LazyFrame, keys: pl.LazyFrame, has_text: bool, lookback: float | None, out: Path) -> tuple[int, int, int]:
    """Write ``timeseries.parquet`` and ``notes.parquet``; return their row counts and the number of
    timed rows (whole dataset, ``MEDS_BIRTH`` aside) that have neither a numeric nor a text value."""
    cols = [pl.col("subject_id"), pl.col("time"), pl.col("code").cast(pl.String), pl.col("numeric_value")]
    if has_text:
        cols.append(pl.col("text_value"))
    rows = data.filter(pl.col("time").is_not_null() & pl.col("code").cast(pl.String).ne(BIRTH_CODE)).select(cols)
    kinds = pl.col("numeric_value").is_not_null()
    if has_text:
        kinds = kinds | pl.col("text_value").is_not_null()
    unused = rows.filter(~kinds).select(pl.len())
    rows = rows.filter(kinds).join(keys, on="subject_id", how="inner", maintain_order="left").filter(pl.col("time") <= pl.col("prediction_time"))
    if lookback is not None:
        start = pl.col("prediction_time") - pl.duration(microseconds=int(round(lookback * _US_PER_HOUR)))
        rows = rows.filter(pl.col("time") >= start).with_columns(start.alias("_index"))
    else:
        rows = rows.with_columns(pl.col("time").min().over("patient_id").alias("_index"))
    hours = ((pl.col("time") - pl.col("_index")).dt.total_microseconds() / _US_PER_HOUR).alias("time")
    # one sort serves both tables (filters keep order); ties keep the shards' row order
    rows = rows.sort("patient_id", "time", maintain_order=True).with_columns(hours)
    n_unused, rows = pl.collect_all([unused, rows])  # one query plan: the shards are scanned once
    ts = rows.filter(pl.col("numeric_value").is_not_null()).select(
        "patient_id", "time", pl.col("code").alias("variable"), pl.col("numeric_value").cast(pl.Float64).alias("value")
    )
    notes = None
    if has_text:
        notes = rows.filter(pl.col("text_value").is_not_null()).select("patient_id", "time", pl.col("text_value").alias("text"))
    del rows
    if len(ts):
        _write(ts, out / "timeseries.parquet")
    n_notes = 0 if notes is None else len(notes)
    if n_notes:
        _write(notes, out / "notes.parquet")
    return len(ts), n_notes, int(n_unused.item())


def _write(df: pl.DataFrame, path: Path) -> None:
    """Write ``df`` with ``patient_id`` as a dictionary-encoded string column.

    Cast from Enum to Categorical first: polars would store an Enum's whole category list in the
    parquet schema; a Categorical reads back as strings (pandas: category) everywhere.
    """
    df.with_columns(pl.col("patient_id").cast(pl.Categorical)).write_parquet(path)


# ---------------------------------------------------------------------- static -> tabular
def _tabular(data: pl.LazyFrame, keys: pl.LazyFrame, select: Sequence[str] | None, shards: list[Path]) -> pl.DataFrame | None:
    """One row per sample: static codes (numeric / categorical / indicator) and age at prediction."""
    static = data.filter(pl.col("time").is_null()).select(
        "_file", "subject_id", pl.col("code").cast(pl.String), "numeric_value"
    ).collect()
    if select is not None:
        chosen = pl.lit(False)
        for entry in select:
            chosen = chosen | (pl.col("code") == entry) | pl.col("code").str.starts_with(f"{entry}//")
        unmatched = [e for e in select if not static["code"].is_in([e]).any()
                     and not static["code"].str.starts_with(f"{e}//").any()]
        if unmatched:
            raise ValueError(f"tabular_codes {unmatched} match no static code (null time) in {shards[0].parent}")
        static = static.filter(chosen)
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
    if len(flags):
        frames.append(flags.with_columns(pl.lit(1.0).alias("_v")).pivot(on="code", index="subject_id", values="_v")
                      .with_columns(pl.exclude("subject_id").fill_null(0.0)))
    samples = keys.collect()
    birth = (data.filter(pl.col("code").cast(pl.String) == BIRTH_CODE).select("subject_id", pl.col("time").alias("_birth"))
             .group_by("subject_id").agg(pl.col("_birth").min()).collect())
    if not frames and not len(birth):
        return None
    table = samples
    for frame in frames:
        dup = set(frame.columns) & set(table.columns) - {"subject_id"}
        if dup:
            raise ValueError(f"{shards[0].parent}: static codes give clashing tabular column(s) {sorted(dup)}")
        table = table.join(frame, on="subject_id", how="left")
    if len(birth):
        age = (pl.col("prediction_time") - pl.col("_birth")).dt.total_microseconds() / (_US_PER_HOUR * 24 * 365.25)
        table = table.join(birth, on="subject_id", how="left").with_columns(age.alias("age_years")).drop("_birth")
    known = [c for c in table.columns if c not in ("subject_id", "prediction_time", "patient_id")]
    has_any = pl.any_horizontal([pl.col(c).is_not_null() for c in known])
    # a sample whose subject has no static fact at all is absent from tabular (never zero-filled)
    return table.filter(has_any).select(pl.col("patient_id").cast(pl.String), *known)


def _no_conflicts(df: pl.DataFrame, key: list[str], value: str) -> None:
    """Raise ``ValueError`` naming file and subject when ``key`` has several different ``value``."""
    n = df.group_by(key).agg(pl.col(value).n_unique().alias("_n"), pl.col("_file").first()).filter(pl.col("_n") > 1)
    if len(n):
        row = n.row(0, named=True)
        raise ValueError(
            f"{row['_file']}: subject {row['subject_id']} has conflicting static values for "
            f"{ {k: row[k] for k in key if k != 'subject_id'} } (column '{value}')"
        )


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Create ``out``; clear the files a previous conversion wrote (cohort.json first)."""
    if out.exists() and any(out.iterdir()) and not overwrite and not (out / "cohort.json").exists():
        raise ValueError(f"{out} is a non-empty folder that is not a cohort; pass overwrite=True to write into it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cohort.json").unlink(missing_ok=True)  # an interrupted rewrite is never taken as current
    for name in _OWNED:
        (out / name).unlink(missing_ok=True)
