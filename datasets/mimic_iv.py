"""MIMIC-IV (hosp + icu + note modules, optional MIMIC-IV-ECG) -> a clinfuse cohort folder.

One sample per ICU stay (``patient_id`` = ``stay_id``; the first stay of each subject unless
``all_stays``), split by ``subject_id``. Index time = ICU ``intime``; prediction time = intime +
48 h. Every modality time is in hours from intime and nothing charted after the prediction time
is written. Page: ``docs/sources/mimic_iv.md``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
import polars as pl

from clinfuse.datasets.conversion import fingerprint, is_current, write_cohort_info
from clinfuse.datasets.ecg import STANDARD_LEADS
from clinfuse.datasets.source_tables import (
    ROW,
    as_datetime,
    as_float,
    as_int,
    check_unique,
    datetime_expr,
    float_expr,
    find_table,
    hours_between,
    scan_table,
    split_by_group,
)
from clinfuse.datasets.staging import check_out, staged_out

FORMAT = "mimic_iv"
TASKS = ("mortality_48h", "los_7d", "survival")
PREDICTION_HOURS = 48.0
_OWNED = ("labels.parquet", "splits.csv", "tabular.parquet", "timeseries.parquet", "notes.parquet",
          "ecg/records.csv", "sample_map.csv")
_TABULAR_ADMISSION = ("admission_type", "admission_location", "insurance", "race")


def convert_mimic_iv(
    src: str | Path,
    out: str | Path,
    *,
    task: Literal["mortality_48h", "los_7d", "survival"],
    ecg: str | Path | None = None,
    lookback_hours: float = 24.0,
    ecg_lookback_hours: float = 24.0,
    all_stays: bool = False,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Convert a MIMIC-IV download (files unchanged, ``.csv`` or ``.csv.gz``) to a cohort folder.

    Args:
        src: the MIMIC-IV root holding ``hosp/``, ``icu/`` and optionally ``note/``.
        out: the cohort folder to write.
        task: ``mortality_48h`` (in-hospital death after the first 48 h), ``los_7d`` (ICU stay
            longer than 7 days) or ``survival`` (days from the prediction time to death, censored
            at the subject's last discharge / ICU out time).
        ecg: the MIMIC-IV-ECG root (``record_list.csv`` + WFDB files), or None.
        lookback_hours: lab / chart events from ``intime - lookback_hours`` on are kept.
        ecg_lookback_hours: the latest ECG in ``[intime - ecg_lookback_hours, prediction time]``.
        all_stays: one sample per ICU stay of every subject instead of the first stay only.
        split_fractions: train/val/test fractions of subjects.
        seed: seed of the subject split.
        overwrite: reconvert even when ``out`` holds a current conversion, or write into a
            non-empty folder that is no MIMIC-IV conversion.

    Returns:
        ``out``.

    Raises:
        ValueError: a bad option; a missing file or column, a wrong dtype, an unparsable timestamp,
            NaN/inf, a negative age / length of stay, an ICU out time before its in time, duplicate
            ids, a stay whose subject is not its admission's subject, an empty ECG path, a death
            before the ICU admission; each names file, column, row/subject.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    for name, hours in (("lookback_hours", lookback_hours), ("ecg_lookback_hours", ecg_lookback_hours)):
        if isinstance(hours, bool) or not isinstance(hours, numbers.Real) or not math.isfinite(hours) or hours < 0:
            raise ValueError(f"{name} must be a finite number of hours >= 0; got {hours!r}")
    src, out = Path(src), Path(out)
    files = _locate(src, None if ecg is None else Path(ecg))
    options = {"task": task, "lookback_hours": lookback_hours, "ecg_lookback_hours": ecg_lookback_hours,
               "all_stays": all_stays, "split_fractions": list(split_fractions), "seed": seed,
               "ecg": None if ecg is None else str(Path(ecg).resolve())}
    fp = fingerprint([p for p in files.values() if p is not None], options)
    if not overwrite and is_current(out, FORMAT, fp):
        print(f"reusing converted cohort {out} (inputs unchanged)")
        return out

    check_out(out, FORMAT, overwrite)  # a file or a foreign folder: refused before reading anything
    stays = _stays(files, task, all_stays)
    # written into a staging folder and moved into out at the end: a bad row found while reading the
    # event, note or ECG tables leaves a previous cohort in out intact
    with staged_out(out, FORMAT, overwrite, _OWNED, fp=fp) as stage:
        label_cols = ["time", "event"] if task == "survival" else ["binary"]
        stays.select(pl.col("patient_id"), *label_cols).write_parquet(stage / "labels.parquet")
        split = split_by_group(stays["subject_id"].cast(pl.String).to_list(), split_fractions, seed)
        pd.DataFrame({"patient_id": stays["patient_id"].to_list(),
                      "split": [split[str(s)] for s in stays["subject_id"]]}).to_csv(stage / "splits.csv", index=False)
        stays.select("patient_id", "subject_id", "hadm_id", "stay_id", "intime", "prediction_time").write_csv(
            stage / "sample_map.csv"
        )
        tab_cols = ["gender", "age", *[c for c in (*_TABULAR_ADMISSION, "first_careunit") if c in stays.columns]]
        stays.select("patient_id", *tab_cols).to_pandas().astype(
            {c: "string" for c in tab_cols if c != "age"}
        ).to_parquet(stage / "tabular.parquet", index=False)

        keys = stays.select("patient_id", "subject_id", "stay_id", "intime", "prediction_time")
        modalities = ["tabular"]
        events = _events(files, keys, lookback_hours)
        if events.height:
            events.write_parquet(stage / "timeseries.parquet")
            modalities.append("timeseries")
        notes = _notes(files, keys)
        if notes.height:
            notes.write_parquet(stage / "notes.parquet")
            modalities.append("notes")
        if ecg is not None:
            records = _ecg_records(files["record_list"], Path(ecg), keys, ecg_lookback_hours)
            if records.height:
                (stage / "ecg").mkdir(exist_ok=True)
                records.write_csv(stage / "ecg" / "records.csv")
                modalities.append("ecg")
        write_cohort_info(
            stage, FORMAT, fp, name=f"mimic_iv_{task}", n_patients=stays.height, task=task,
            modalities=modalities, labels=label_cols,
            time_unit="modality times: hours from ICU intime; survival time: days from the prediction time",
            prediction_hours=PREDICTION_HOURS, lookback_hours=lookback_hours,
            ecg={"fs": 500, "seconds": 10, "leads": list(STANDARD_LEADS)} if "ecg" in modalities else None,
        )
    return out


# ---------------------------------------------------------------------- input files
def _locate(src: Path, ecg: Path | None) -> dict[str, Path | None]:
    files: dict[str, Path | None] = {
        "patients": find_table(src / "hosp", "patients"),
        "admissions": find_table(src / "hosp", "admissions"),
        "icustays": find_table(src / "icu", "icustays"),
        "labevents": find_table(src / "hosp", "labevents", required=False),
        "chartevents": find_table(src / "icu", "chartevents", required=False),
        "discharge": find_table(src / "note", "discharge", required=False),
        "radiology": find_table(src / "note", "radiology", required=False),
    }
    files["d_labitems"] = find_table(src / "hosp", "d_labitems", required=files["labevents"] is not None)
    files["d_items"] = find_table(src / "icu", "d_items", required=files["chartevents"] is not None)
    if ecg is not None:
        files["record_list"] = find_table(ecg, "record_list")
    return files


# ---------------------------------------------------------------------- samples and labels
def _stays(files: dict[str, Path | None], task: str, all_stays: bool) -> pl.DataFrame:
    """One row per kept ICU stay with its times, label and tabular columns."""
    p_path, a_path, i_path = files["patients"], files["admissions"], files["icustays"]
    pat = scan_table(p_path, ["subject_id", "gender", "anchor_age", "anchor_year", "dod"]).collect()
    pat = pat.with_columns(
        as_int(pat, p_path, "subject_id"), as_float(pat, p_path, "anchor_age", "subject_id", nullable=False),
        as_int(pat, p_path, "anchor_year", "subject_id"), as_datetime(pat, p_path, "dod", "subject_id"),
    )
    check_unique(pat, p_path, "subject_id")
    _check_not_negative(pat, p_path, "anchor_age", "subject_id")
    adm = scan_table(a_path, ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
                              "hospital_expire_flag"]).collect()
    adm = adm.with_columns(
        as_int(adm, a_path, "subject_id"), as_int(adm, a_path, "hadm_id", "subject_id"),
        *[as_datetime(adm, a_path, c, "subject_id", nullable=c == "deathtime")
          for c in ("admittime", "dischtime", "deathtime")],
        as_int(adm, a_path, "hospital_expire_flag", "subject_id"),
    )
    check_unique(adm, a_path, "hadm_id")
    bad = ~adm["hospital_expire_flag"].is_in([0, 1])
    if bad.any():
        row = adm.filter(bad).row(0, named=True)
        raise ValueError(f"{a_path}: column 'hospital_expire_flag' must be 0/1; data row {row[ROW]} "
                         f"(subject_id {row['subject_id']}) has {row['hospital_expire_flag']}")
    icu = scan_table(i_path, ["subject_id", "hadm_id", "stay_id", "intime", "outtime", "los"]).collect()
    icu = icu.with_columns(
        as_int(icu, i_path, "subject_id"), as_int(icu, i_path, "hadm_id", "subject_id"),
        as_int(icu, i_path, "stay_id", "subject_id"),
        as_datetime(icu, i_path, "intime", "subject_id", nullable=False),
        as_datetime(icu, i_path, "outtime", "subject_id", nullable=False),
        as_float(icu, i_path, "los", "subject_id", nullable=False),
    )
    check_unique(icu, i_path, "stay_id")
    _check_not_negative(icu, i_path, "los", "stay_id")
    back = icu.filter(pl.col("outtime") < pl.col("intime"))
    if back.height:
        row = back.row(0, named=True)
        raise ValueError(f"{i_path}: column 'outtime' {row['outtime']} lies before column 'intime' {row['intime']} "
                         f"in data row {row[ROW]} (subject_id {row['subject_id']}, stay_id {row['stay_id']})")
    other = icu.join(adm.select("hadm_id", adm_subject="subject_id"), on="hadm_id").filter(
        pl.col("subject_id") != pl.col("adm_subject"))
    if other.height:
        row = other.sort(ROW).row(0, named=True)
        raise ValueError(f"{i_path}: column 'subject_id' {row['subject_id']} in data row {row[ROW]} (stay_id "
                         f"{row['stay_id']}) does not match subject_id {row['adm_subject']} of its hadm_id "
                         f"{row['hadm_id']} in {a_path}")
    last_seen = pl.concat([adm.select("subject_id", t=pl.col("dischtime")),
                           icu.select("subject_id", t=pl.col("outtime"))]).group_by("subject_id").agg(
        last_followup=pl.col("t").max())
    unknown = icu.join(pat, on="subject_id", how="anti")
    if unknown.height:
        raise ValueError(f"{i_path}: subject_id {unknown['subject_id'][0]} (data row {unknown[ROW][0]}) "
                         f"is not in {p_path}")
    stays = icu.sort("subject_id", "intime", ROW)
    if not all_stays:
        stays = stays.unique("subject_id", keep="first", maintain_order=True)
    adm_cols = ["hadm_id", "deathtime", "hospital_expire_flag", *[c for c in _TABULAR_ADMISSION if c in adm.columns]]
    orphan = stays.join(adm, on="hadm_id", how="anti")
    if orphan.height:
        raise ValueError(f"{i_path}: hadm_id {orphan['hadm_id'][0]} (data row {orphan[ROW][0]}, subject_id "
                         f"{orphan['subject_id'][0]}) is not in {a_path}")
    subject_death = adm.group_by("subject_id").agg(hosp_death=pl.col("deathtime").max())
    stays = (
        stays.drop(ROW)
        .join(pat.drop(ROW), on="subject_id", how="left")
        .join(adm.select(adm_cols), on="hadm_id", how="left")
        .join(subject_death, on="subject_id", how="left")
        .join(last_seen, on="subject_id", how="left")
        .with_columns(
            prediction_time=pl.col("intime") + pl.duration(hours=PREDICTION_HOURS),
            age=pl.col("anchor_age") + (pl.col("intime").dt.year() - pl.col("anchor_year")),
            # exact in-hospital death time when there is one, else the date of death (midnight)
            death=pl.coalesce("hosp_death", "dod"),
        )
    )
    early = stays.filter(pl.col("death") < pl.col("intime").dt.truncate("1d"))
    if early.height:
        raise ValueError(f"{p_path}: column 'dod' (or {a_path} 'deathtime') of subject_id "
                         f"{early['subject_id'][0]} lies before the ICU admission {early['intime'][0]}: "
                         f"negative survival time")
    stays = stays.filter(
        (hours_between(pl.col("outtime"), pl.col("intime")) > PREDICTION_HOURS)  # shorter stays: no 48 h window
        & (pl.col("death").is_null() | (pl.col("death") > pl.col("prediction_time")))  # died in the window
    )
    if not stays.height:
        raise ValueError(f"{i_path}: no ICU stay longer than {PREDICTION_HOURS} h with the subject alive at "
                         f"its prediction time; nothing to convert")
    if task == "mortality_48h":
        label = {"binary": ((pl.col("hospital_expire_flag") == 1) | pl.col("deathtime").is_not_null()).cast(pl.Int64)}
    elif task == "los_7d":
        label = {"binary": (pl.col("los") > 7.0).cast(pl.Int64)}
    else:
        end = pl.coalesce("death", "last_followup")
        label = {"time": hours_between(end, pl.col("prediction_time")) / 24.0,
                 "event": pl.col("death").is_not_null().cast(pl.Int64)}
    return stays.with_columns(patient_id=pl.col("stay_id").cast(pl.String), **label)


def _check_not_negative(df: pl.DataFrame, path: Path, column: str, who: str) -> None:
    neg = df.filter(pl.col(column) < 0)
    if neg.height:
        row = neg.row(0, named=True)
        raise ValueError(f"{path}: column '{column}' has negative value {row[column]} in data row {row[ROW]} "
                         f"({who} {row[who]})")


# ---------------------------------------------------------------------- modalities
def _window_scan(path: Path, required: list[str], keys: pl.DataFrame, on: str, time_col: str,
                 start: pl.Expr | None, value_col: str | None = None) -> pl.DataFrame:
    """Rows of ``path`` joined to the samples on ``on``, charted in ``[start, prediction time]``.

    ``start`` None = no lower bound. The id ``on`` is matched as an integer, like the core tables
    read it (``"12"``, ``"12.0"`` and ``" 12 "`` are one id).

    Rows with an empty or non-integer id (any subject), and unparsable times/values (the samples'
    rows), are kept through the lazy filter, then raise with file/column/row.
    """
    num = pl.col(on).str.strip_chars().cast(pl.Float64, strict=False)
    whole = (num.is_finite() & (num == num.round(0))).fill_null(False)
    lf = scan_table(path, required).with_columns(_key=pl.when(whole).then(num.cast(pl.Int64)))
    lf = lf.join(keys.lazy().rename({on: "_key"}), on="_key", how="left")  # left: keep bad ids to report
    t = datetime_expr(time_col)
    bad = pl.col(time_col).is_null() | t.is_null()
    if value_col is not None:
        v = float_expr(value_col)
        bad = bad | (pl.col(value_col).is_not_null() & (v.is_null() | ~v.is_finite()))
    window = t <= pl.col("prediction_time")
    if start is not None:
        window = window & (t >= start)
    keep = ~whole | (pl.col("patient_id").is_not_null() & (bad | window))
    df = lf.filter(keep.fill_null(False)).collect(engine="streaming").sort(ROW)  # bounded memory on chartevents
    as_int(df, path, on, "subject_id")  # raises on the rows with an empty / non-integer id
    df = df.with_columns(as_datetime(df, path, time_col, "subject_id", nullable=False).alias("_t"))
    if value_col is not None:
        df = df.with_columns(as_float(df, path, value_col, "subject_id").alias("_v"))
    return df.with_columns(time=hours_between(pl.col("_t"), pl.col("intime")))


def _check_stay_subject(df: pl.DataFrame, path: Path) -> None:
    """Chart events are matched to samples by ``stay_id``; a row whose ``subject_id`` is not its
    stay's (a corrupt extract or a bad join upstream) would give one patient another's vitals."""
    subject = as_int(df, path, "subject_id", "stay_id")
    wrong = df.filter((subject != pl.col("subject_id_right")).fill_null(False))
    if wrong.height:
        row = wrong.row(0, named=True)
        raise ValueError(f"{path}: column 'subject_id' {row['subject_id']} in data row {row[ROW]} (stay_id "
                         f"{row['stay_id']}) does not match subject_id {row['subject_id_right']} of that ICU stay "
                         f"({wrong.height} such row(s))")


def _labels_of(path: Path) -> pl.DataFrame:
    """``itemid`` (Int64, unique) -> ``label`` of a dictionary table (d_labitems / d_items)."""
    d = scan_table(path, ["itemid", "label"]).collect()
    d = d.with_columns(as_int(d, path, "itemid"))
    check_unique(d, path, "itemid")  # a repeated itemid would duplicate its events
    return d.select("itemid", "label")


def _events(files: dict[str, Path | None], keys: pl.DataFrame, lookback_hours: float) -> pl.DataFrame:
    """Lab + chart events of each sample in ``[intime - lookback, prediction time]`` (long table)."""
    start = pl.col("intime") - pl.duration(hours=lookback_hours)
    parts = []
    for table, dictionary, on in (("labevents", "d_labitems", "subject_id"), ("chartevents", "d_items", "stay_id")):
        path = files[table]
        if path is None:
            continue
        required = sorted({"subject_id", on, "itemid", "charttime", "valuenum"})
        df = _window_scan(path, required, keys, on, "charttime", start, "valuenum")
        if on == "stay_id":
            _check_stay_subject(df, path)
        df = df.with_columns(as_int(df, path, "itemid", "subject_id"))
        df = df.filter(pl.col("_v").is_not_null())  # valuenum is empty for text-only results
        df = df.join(_labels_of(files[dictionary]), on="itemid", how="left")
        variable = pl.coalesce("label", pl.col("itemid").cast(pl.String))
        parts.append(df.select("patient_id", "time", variable=variable, value="_v"))
    if not parts:
        schema = {"patient_id": pl.String, "time": pl.Float64, "variable": pl.String, "value": pl.Float64}
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).sort("patient_id", "time", maintain_order=True)


def _notes(files: dict[str, Path | None], keys: pl.DataFrame) -> pl.DataFrame:
    """Discharge / radiology notes of the subject charted before the prediction time (any earlier stay too)."""
    parts = []
    for table in ("discharge", "radiology"):
        path = files[table]
        if path is None:
            continue
        df = _window_scan(path, ["note_id", "subject_id", "charttime", "text"], keys, "subject_id", "charttime",
                          None)
        empty = df.filter(pl.col("text").is_null())
        if empty.height:
            raise ValueError(f"{path}: column 'text' is empty in data row {empty[ROW][0]} "
                             f"(subject_id {empty['subject_id'][0]})")
        parts.append(df.select("patient_id", "time", "text"))
    if not parts:
        return pl.DataFrame(schema={"patient_id": pl.String, "time": pl.Float64, "text": pl.String})
    return pl.concat(parts).sort("patient_id", "time", maintain_order=True)


def _ecg_records(path: Path, root: Path, keys: pl.DataFrame, lookback_hours: float) -> pl.DataFrame:
    """The latest ECG of each sample in ``[intime - lookback, prediction time]``; absolute record paths."""
    start = pl.col("intime") - pl.duration(hours=lookback_hours)
    df = _window_scan(path, ["subject_id", "study_id", "file_name", "ecg_time", "path"], keys, "subject_id",
                      "ecg_time", start)
    empty = df.filter(pl.col("path").str.strip_chars().fill_null("") == "")
    if empty.height:
        raise ValueError(f"{path}: column 'path' is empty in data row {empty[ROW][0]} "
                         f"(subject_id {empty['subject_id'][0]})")
    df = df.sort("patient_id", "_t", ROW).unique("patient_id", keep="last", maintain_order=True)
    records = [str((root / p).resolve()) for p in df["path"]]
    keep = []
    for rec, pid, row in zip(records, df["patient_id"], df[ROW]):
        if not Path(f"{rec}.hea").is_file():
            warnings.warn(f"{path}: data row {row}: WFDB header {rec}.hea does not exist; the ECG of "
                          f"sample {pid} is left absent", stacklevel=3)
        keep.append(Path(f"{rec}.hea").is_file())
    return df.with_columns(record=pl.Series(records)).filter(pl.Series(keep)).select("patient_id", "record", "time")
