"""MEDS label files and subject splits -> clinfuse labels and splits (``docs/sources/meds.md``).

A label row ``subject_id, prediction_time, <value>`` is one sample, id
``"{subject_id}@{prediction_time ISO 8601}"``. Value columns (MEDS label schema, nullable; the
columns with at least one non-null value are used):

- ``boolean_value`` -> ``binary`` (0/1);
- ``integer_value`` -> ``multiclass`` (integers >= 0);
- ``categorical_value`` -> ``multiclass`` (levels sorted, ids 0..C-1; ``label_levels`` in cohort.json);
- ``float_value`` -> ``label_float``;
- time-to-event extension: ``time_to_event`` (float days from ``prediction_time``, > 0) and
  ``event`` (bool: True = the event was observed at ``time_to_event``, False = censored then)
  -> ``time``, ``event``.

``prediction_time`` must be time-zone-naive (as MEDS times are); label files with no row at all
are an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

#: MEDS split name -> clinfuse split.
SPLIT_NAMES = {"train": "train", "tuning": "val", "held_out": "test"}
_VALUE_COLUMNS = ("boolean_value", "integer_value", "categorical_value", "float_value")


def read_labels(files: Sequence[Path]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read and validate MEDS label shards.

    Returns:
        The samples (``subject_id, prediction_time, patient_id`` + clinfuse label columns, sorted by
        subject then prediction time) and ``{"columns": label columns, "info": cohort.json extras}``.

    Raises:
        ValueError: naming the file, column and subject for bad input.
    """
    if not files:
        raise ValueError("no label parquet file given")
    frames = []
    for path in files:
        try:
            df = pl.read_parquet(path)
        except Exception as err:  # polars raises several error types; name the file
            raise ValueError(f"{path}: cannot read parquet: {err}") from err
        frames.append(_check_label_frame(df, path))
    cols = set(frames[0].columns)
    for path, df in zip(files, frames):
        if set(df.columns) != cols:
            raise ValueError(f"{path}: label columns {sorted(df.columns)} differ from {files[0]}'s {sorted(cols)}")
    lab = pl.concat([df.select(sorted(cols)) for df in frames]).sort("subject_id", "prediction_time", "_file")
    if not len(lab):
        where = str(files[0]) if len(files) == 1 else f"label files {[str(f) for f in files[:5]]}"
        raise ValueError(f"{where}: no label rows (one row per subject and prediction time expected)")
    dup = lab.filter(pl.struct("subject_id", "prediction_time").is_duplicated())
    if len(dup):
        row = dup.row(0, named=True)
        raise ValueError(
            f"{row['_file']}: duplicate label rows for subject {row['subject_id']} at prediction_time "
            f"{row['prediction_time']} (one label row per subject and prediction time expected)"
        )
    iso = pl.col("prediction_time").dt.strftime("%Y-%m-%dT%H:%M:%S%.f").str.strip_suffix(".000000")
    lab = lab.with_columns(pl.format("{}@{}", pl.col("subject_id"), iso).alias("patient_id"))
    out, columns, info = [pl.col("subject_id"), pl.col("prediction_time"), pl.col("patient_id")], [], {"labels": {}}
    used = [c for c in _VALUE_COLUMNS if c in lab.columns and lab[c].null_count() < len(lab)]
    if "integer_value" in used and "categorical_value" in used:
        raise ValueError(f"{files[0]}: both 'integer_value' and 'categorical_value' are filled; both map to 'multiclass'")
    for col in used + (["time_to_event"] if "time_to_event" in lab.columns else []):
        _no_nulls(lab, col)
    if "boolean_value" in used:
        out.append(pl.col("boolean_value").cast(pl.Int64).alias("binary"))
        columns.append("binary")
        info["labels"]["binary"] = "boolean_value (1 = True)"
    if "integer_value" in used:
        bad = lab.filter(pl.col("integer_value") < 0)
        if len(bad):
            raise ValueError(f"{bad['_file'][0]}: column 'integer_value' must be >= 0 (a class id); subject(s) "
                             f"{bad['subject_id'].unique().to_list()[:10]}")
        out.append(pl.col("integer_value").cast(pl.Int64).alias("multiclass"))
        columns.append("multiclass")
        info["n_classes"] = int(lab["integer_value"].max()) + 1
        info["labels"]["multiclass"] = "integer_value"
    if "categorical_value" in used:
        levels = lab["categorical_value"].cast(pl.String).unique().sort().to_list()
        out.append(pl.col("categorical_value").cast(pl.String).cast(pl.Enum(levels)).to_physical().cast(pl.Int64).alias("multiclass"))
        columns.append("multiclass")
        info["n_classes"], info["label_levels"] = len(levels), levels
        info["labels"]["multiclass"] = "categorical_value level index (label_levels)"
    if "float_value" in used:
        bad = lab.filter(~pl.col("float_value").cast(pl.Float64).is_finite())
        if len(bad):
            raise ValueError(f"{bad['_file'][0]}: column 'float_value' is NaN/inf for subject(s) "
                             f"{bad['subject_id'].unique().to_list()[:10]}")
        out.append(pl.col("float_value").cast(pl.Float64).alias("label_float"))
        columns.append("label_float")
        info["labels"]["label_float"] = "float_value"
    if "time_to_event" in lab.columns:
        tte = pl.col("time_to_event").cast(pl.Float64)
        bad = lab.filter(~(tte > 0) | ~tte.is_finite())
        if len(bad):
            raise ValueError(f"{bad['_file'][0]}: column 'time_to_event' must be finite and > 0 days; subject(s) "
                             f"{bad['subject_id'].unique().to_list()[:10]}")
        bad = lab.filter(~pl.col("event").cast(pl.Int64).is_in([0, 1]))
        if len(bad):
            raise ValueError(f"{bad['_file'][0]}: column 'event' must be boolean or 0/1; subject(s) "
                             f"{bad['subject_id'].unique().to_list()[:10]}")
        out += [tte.alias("time"), pl.col("event").cast(pl.Int64).alias("event")]
        columns += ["time", "event"]
        info["labels"]["time"] = "time_to_event (days from prediction_time)"
        info["labels"]["event"] = "event (1 = observed at time, 0 = censored at time)"
    if not columns:
        raise ValueError(
            f"{files[0]}: no label value; expected one of {list(_VALUE_COLUMNS)} with values, or "
            f"'time_to_event' + 'event' (found {sorted(c for c in cols if c != '_file')})"
        )
    return lab.select(out), {"columns": columns, "info": info}


def _check_label_frame(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Check one label shard's key columns and dtypes; add ``_file``."""
    missing = [c for c in ("subject_id", "prediction_time") if c not in df.columns]
    if ("time_to_event" in df.columns) != ("event" in df.columns):
        missing += ["event" if "time_to_event" in df.columns else "time_to_event"]
    if missing:
        raise ValueError(f"{path}: missing required label column(s) {missing}; found {df.columns}")
    want = {"subject_id": "integer", "prediction_time": "timestamp", "boolean_value": "boolean",
            "integer_value": "integer", "float_value": "float", "categorical_value": "string",
            "time_to_event": "float", "event": "boolean or 0/1 integer"}
    ok = {"integer": lambda d: d.is_integer(), "timestamp": lambda d: isinstance(d, pl.Datetime),
          "boolean": lambda d: d == pl.Boolean, "float": lambda d: d.is_float() or d.is_integer(),
          "boolean or 0/1 integer": lambda d: d == pl.Boolean or d.is_integer(),
          "string": lambda d: d in (pl.String, pl.Categorical) or isinstance(d, (pl.Categorical, pl.Enum))}
    for col, kind in want.items():
        if col in df.columns and not (ok[kind](df.schema[col]) or (kind != "timestamp" and df[col].null_count() == len(df)
                                                                     and df.schema[col] == pl.Null)):
            raise ValueError(f"{path}: column '{col}' has dtype {df.schema[col]}; expected {kind}")
    zone = df.schema["prediction_time"].time_zone
    if zone is not None:
        raise ValueError(
            f"{path}: column 'prediction_time' has time zone {zone!r}; MEDS times are time-zone-naive "
            "(timestamp[us]), as the shards' 'time' is. Store naive local (or UTC) times, e.g. polars "
            "pl.col('prediction_time').dt.convert_time_zone(<zone>).dt.replace_time_zone(None)"
        )
    for col in ("subject_id", "prediction_time") + (("event",) if "event" in df.columns else ()):
        if df[col].null_count():
            who = df.filter(pl.col(col).is_null())["subject_id"].to_list()[:10]
            raise ValueError(f"{path}: column '{col}' is null for subject(s) {who}")
    return df.with_columns(pl.lit(str(path)).alias("_file"), pl.col("prediction_time").cast(pl.Datetime("us")))


def _no_nulls(lab: pl.DataFrame, col: str) -> None:
    bad = lab.filter(pl.col(col).is_null())
    if len(bad):
        raise ValueError(f"{bad['_file'][0]}: column '{col}' is null for subject(s) "
                         f"{bad['subject_id'].unique().to_list()[:10]} (every label row needs a value)")


def read_subject_splits(path: Path, subjects: Iterable[int]) -> dict[int, str]:
    """``metadata/subject_splits.parquet`` -> subject -> clinfuse split, for every labelled subject.

    Raises:
        ValueError: a missing file/column, an unknown split name, a subject in two splits, or a
            labelled subject without a split, naming the file and subjects.
    """
    if not path.exists():
        raise ValueError(f"{path} does not exist: MEDS splits subjects in metadata/subject_splits.parquet")
    try:
        df = pl.read_parquet(path)
    except Exception as err:  # polars raises several error types; name the file
        raise ValueError(f"{path}: cannot read parquet: {err}") from err
    missing = [c for c in ("subject_id", "split") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; found {df.columns}")
    if not df.schema["subject_id"].is_integer():
        raise ValueError(f"{path}: column 'subject_id' has dtype {df.schema['subject_id']}; expected integer")
    df = df.with_columns(pl.col("split").cast(pl.String))
    bad = df.filter(~pl.col("split").is_in(list(SPLIT_NAMES)) | pl.col("split").is_null())
    if len(bad):
        raise ValueError(f"{path}: column 'split' must be one of {list(SPLIT_NAMES)}; subject(s) "
                         f"{bad['subject_id'].to_list()[:10]} have {bad['split'].unique().to_list()[:5]}")
    dup = df.filter(pl.col("subject_id").is_duplicated())["subject_id"].unique().to_list()
    if dup:
        raise ValueError(f"{path}: subject(s) {dup[:10]} appear more than once (a subject has one split)")
    split_of = dict(zip(df["subject_id"].to_list(), df["split"].replace_strict(SPLIT_NAMES).to_list()))
    lacking = sorted(set(int(s) for s in subjects) - set(split_of))
    if lacking:
        raise ValueError(f"{path}: labelled subject(s) {lacking[:10]} have no split")
    return split_of
