"""PTB-XL (``ptbxl_database.csv`` + ``scp_statements.csv`` + WFDB records) -> a clinfuse cohort folder.

One sample per ECG (``patient_id`` = ``ecg_id``), labelled with the 5 diagnostic superclasses
(NORM, MI, STTC, CD, HYP) as in the PTB-XL benchmark, split by the recommended ``strat_fold``
(1-8 train, 9 val, 10 test; the folds keep each patient's ECGs together, which is verified).
Page: ``docs/sources/ptbxl.md``.
"""

from __future__ import annotations

import ast
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from clinfuse.datasets.conversion import fingerprint, is_current, write_cohort_info
from clinfuse.datasets.ecg import STANDARD_LEADS
from clinfuse.datasets.staging import check_out, staged_out

FORMAT = "ptbxl"
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
AGE_OVER_89 = 300  # PTB-XL writes the age of patients older than 89 as 300 (HIPAA)
_DB_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "height", "weight", "scp_codes", "strat_fold",
               "filename_lr", "filename_hr")
_NON_NEGATIVE = ("age", "height", "weight")  # age 300 (over 89) is valid; only negatives are impossible
_OWNED = ("labels.parquet", "splits.csv", "tabular.parquet", "ecg/records.csv")


def convert_ptbxl(
    src: str | Path,
    out: str | Path,
    *,
    sampling_rate: Literal[100, 500] = 100,
    min_likelihood: float = 0.0,
    drop_unlabelled: bool = True,
    overwrite: bool = False,
) -> Path:
    """Convert a PTB-XL download (files unchanged) to a cohort folder.

    Args:
        src: the PTB-XL root (``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``,
            ``records500/``).
        out: the cohort folder to write.
        sampling_rate: 100 (``filename_lr``, ``records100/``) or 500 (``filename_hr``).
        min_likelihood: a diagnostic statement counts when its likelihood is >= this; 0 (the
            benchmark's choice) takes every diagnostic statement present, whatever its likelihood.
        drop_unlabelled: drop ECGs with no diagnostic superclass (as the benchmark does); else
            they are kept with all five labels 0 and ``binary`` 1 (not NORM).
        overwrite: reconvert even when ``out`` holds a current conversion, or write into a
            non-empty folder that is no PTB-XL conversion.

    Returns:
        ``out``.

    Raises:
        ValueError: an ``out`` that is a file or a foreign non-empty folder (before any input is
            read); a missing file/column, an empty file, a wrong dtype, NaN/inf, a negative
            age/height/weight, duplicate ``ecg_id``, an unparsable ``scp_codes`` or a likelihood in
            it that is not a number, an unknown scp code, a code listed twice in
            ``scp_statements.csv``, an empty record file name, a bad ``strat_fold``, a patient in two
            folds, or no ECG left after dropping the unlabelled ones; each names the file, the
            column and the ECG or patient. Everything is checked before ``out`` is changed, and the
            cohort is written aside and moved in at the end, so a failed conversion leaves a
            previous one in ``out`` intact.
    """
    if sampling_rate not in (100, 500):
        raise ValueError(f"sampling_rate must be 100 or 500, got {sampling_rate!r}")
    src, out = Path(src), Path(out)
    db_path, scp_path = src / "ptbxl_database.csv", src / "scp_statements.csv"
    options = {"sampling_rate": sampling_rate, "min_likelihood": min_likelihood, "drop_unlabelled": drop_unlabelled}
    fp = fingerprint([db_path, scp_path], options)
    if not overwrite and is_current(out, FORMAT, fp):
        print(f"reusing converted cohort {out} (inputs unchanged)")
        return out
    check_out(out, FORMAT, overwrite)  # a file or a foreign folder fails before the inputs are read

    classes = _statement_classes(scp_path)
    db = _read_database(db_path)
    column = "filename_lr" if sampling_rate == 100 else "filename_hr"
    _check_filenames(db, column, db_path)
    labels = _labels(db, classes, db_path, scp_path, min_likelihood)
    keep = labels[list(SUPERCLASSES)].any(axis=1) | (not drop_unlabelled)
    if not keep.any():
        raise ValueError(f"{db_path}: column 'scp_codes': none of the {len(db)} ECGs has a diagnostic statement "
                         f"(diagnostic == 1 in {scp_path}) with likelihood >= {min_likelihood}, so every ECG "
                         f"would be dropped as unlabelled and the cohort would be empty; lower min_likelihood "
                         f"or pass drop_unlabelled=False")
    db, labels = db[keep.to_numpy()], labels[keep.to_numpy()]
    _check_folds(db, db_path)
    with staged_out(out, FORMAT, overwrite, _OWNED, fp=fp) as stage:  # moved into out only if all is written
        _write_tables(db, labels, stage)
        _write_records(db, src, stage, column, db_path)
        write_cohort_info(
            stage, FORMAT, fp, name=f"ptbxl_{sampling_rate}hz", n_patients=len(db),
            modalities=["tabular", "ecg"], labels=["binary", *[f"label_{c}" for c in SUPERCLASSES]],
            time_unit="hours from the ECG recording (the index time); no survival labels",
            ecg={"fs": sampling_rate, "seconds": 10, "leads": list(STANDARD_LEADS)},
            min_likelihood=min_likelihood, drop_unlabelled=drop_unlabelled,
        )
    return out


def _write_tables(db: pd.DataFrame, labels: pd.DataFrame, out: Path) -> None:
    """``labels.parquet``, ``splits.csv`` and ``tabular.parquet`` of the kept ECGs."""
    ids = db["ecg_id"].astype(str).tolist()
    frame = pd.DataFrame({"patient_id": ids, "binary": 1 - labels["NORM"].to_numpy()})
    for name in SUPERCLASSES:
        frame[f"label_{name}"] = labels[name].to_numpy()
    frame.to_parquet(out / "labels.parquet", index=False)
    split = np.where(db["strat_fold"] <= 8, "train", np.where(db["strat_fold"] == 9, "val", "test"))
    pd.DataFrame({"patient_id": ids, "split": split}).to_csv(out / "splits.csv", index=False)
    age = db["age"].where(db["age"] < AGE_OVER_89, 90.0)
    sex = db["sex"].map({0.0: "male", 1.0: "female"}).astype("string")
    pd.DataFrame({"patient_id": ids, "age": age.to_numpy(), "sex": sex.to_numpy(),
                  "height": db["height"].to_numpy(), "weight": db["weight"].to_numpy()}).to_parquet(
        out / "tabular.parquet", index=False)


def _read_database(path: Path) -> pd.DataFrame:
    """``ptbxl_database.csv`` with checked dtypes (``patient_id`` is a float in the real file)."""
    try:
        db = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as err:  # pandas raises many types; name the file
        raise ValueError(f"{path}: cannot read csv: {err}") from err
    missing = [c for c in _DB_COLUMNS if c not in db.columns]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; found {sorted(db.columns)}")
    if db.empty:
        raise ValueError(f"{path}: has a header but no data rows; no ECG to convert")
    raw_ids = db["ecg_id"].copy()
    for col in ("ecg_id", "patient_id", "age", "sex", "height", "weight", "strat_fold"):
        raw = db[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = (raw.notna() & num.isna()) | np.isinf(num.fillna(0.0))
        if col in ("ecg_id", "patient_id", "strat_fold"):
            bad |= num.isna() | (num != num.round())
        what = "invalid value"
        if col in _NON_NEGATIVE and not bad.any():
            bad, what = num < 0, "negative value"
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path}: column '{col}' has {what} {raw.iloc[row]!r} in data row {row} "
                             f"(ecg_id {raw_ids.iloc[row]})")
        db[col] = num.astype(np.float64)
    db["ecg_id"] = db["ecg_id"].astype(np.int64)
    db["patient_id"] = db["patient_id"].astype(np.int64).astype(str)  # 15709.0 -> "15709"
    dup = db["ecg_id"].duplicated()
    if dup.any():
        raise ValueError(f"{path}: column 'ecg_id' has duplicate id {db.loc[dup, 'ecg_id'].iloc[0]}")
    bad = ~db["strat_fold"].isin(range(1, 11))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}: column 'strat_fold' must be 1..10; ecg_id {db['ecg_id'].iloc[row]} has "
                         f"{db['strat_fold'].iloc[row]}")
    bad = ~db["sex"].isin([0.0, 1.0]) & db["sex"].notna()
    if bad.any():
        raise ValueError(f"{path}: column 'sex' must be 0 (male) or 1 (female); ecg_id "
                         f"{db.loc[bad, 'ecg_id'].iloc[0]} has {db.loc[bad, 'sex'].iloc[0]}")
    return db.reset_index(drop=True)


def _statement_classes(path: Path) -> dict[str, str | None]:
    """scp code -> its diagnostic superclass, or None for a non-diagnostic (form/rhythm) statement."""
    try:
        scp = pd.read_csv(path, index_col=0)
    except Exception as err:  # pandas raises many types; name the file
        raise ValueError(f"{path}: cannot read csv: {err}") from err
    missing = [c for c in ("diagnostic", "diagnostic_class") if c not in scp.columns]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; found {sorted(scp.columns)}")
    if scp.index.isna().any():
        raise ValueError(f"{path}: the first column (the scp code) is empty in data row "
                         f"{int(np.flatnonzero(scp.index.isna())[0])}")
    codes = scp.index.astype(str)
    dup = codes.duplicated(keep=False)
    if dup.any():  # a second row would silently replace the first one's diagnostic class
        code = codes[dup][0]
        rows = np.flatnonzero(codes == code).tolist()
        raise ValueError(f"{path}: scp code {code!r} is listed {len(rows)} times in the first column (data rows "
                         f"{rows}); each code must have exactly one statement row")
    diagnostic = pd.to_numeric(scp["diagnostic"], errors="coerce")
    bad = scp["diagnostic"].notna() & (diagnostic != 1.0)
    if bad.any():
        raise ValueError(f"{path}: column 'diagnostic' must be 1.0 or empty; code {scp.index[bad][0]!r} has "
                         f"{scp['diagnostic'][bad].iloc[0]!r}")
    out: dict[str, str | None] = {}
    for code, diag, cls in zip(scp.index.astype(str), diagnostic, scp["diagnostic_class"]):
        if diag == 1.0 and cls not in SUPERCLASSES:
            raise ValueError(f"{path}: column 'diagnostic_class' of diagnostic code {code!r} is {cls!r}, "
                             f"not one of {SUPERCLASSES}")
        out[code] = cls if diag == 1.0 else None
    return out


def _labels(db: pd.DataFrame, classes: dict[str, str | None], db_path: Path, scp_path: Path,
            min_likelihood: float) -> pd.DataFrame:
    """The 0/1 superclass table, one row per ECG."""
    rows = np.zeros((len(db), len(SUPERCLASSES)), dtype=np.int64)
    position = {c: k for k, c in enumerate(SUPERCLASSES)}
    for i, (ecg_id, text) in enumerate(zip(db["ecg_id"], db["scp_codes"])):
        try:
            codes = ast.literal_eval(text)  # the file stores a Python dict literal, e.g. "{'NORM': 100.0}"
            if not isinstance(codes, dict):
                raise ValueError(f"not a dict: {type(codes).__name__}")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
            raise ValueError(f"{db_path}: column 'scp_codes' of ecg_id {ecg_id} is not a dict literal: "
                             f"{text!r} ({err})") from err
        for code, likelihood in codes.items():
            if code not in classes:
                raise ValueError(f"{db_path}: column 'scp_codes' of ecg_id {ecg_id} has code {code!r} "
                                 f"unknown to {scp_path}")
            number = isinstance(likelihood, (int, float)) and not isinstance(likelihood, bool)
            if not number or not math.isfinite(likelihood):  # e.g. 'high', None, [1], True, 1e999
                raise ValueError(f"{db_path}: column 'scp_codes' of ecg_id {ecg_id}: the likelihood of code {code!r} "
                                 f"is {likelihood!r}, not a finite number")
            if classes[code] is not None and likelihood >= min_likelihood:
                rows[i, position[classes[code]]] = 1
    return pd.DataFrame(rows, columns=list(SUPERCLASSES))


def _check_folds(db: pd.DataFrame, path: Path) -> None:
    """Raise if one patient's ECGs lie in two ``strat_fold`` values (the split would leak)."""
    folds = db.groupby("patient_id")["strat_fold"].nunique()
    if (folds > 1).any():
        pid = folds.index[folds > 1][0]
        got = sorted(db.loc[db["patient_id"] == pid, "strat_fold"].astype(int).unique().tolist())
        raise ValueError(f"{path}: column 'strat_fold': patient_id {pid} has ECGs in folds {got}; "
                         f"a patient must stay in one fold")


def _check_filenames(db: pd.DataFrame, column: str, path: Path) -> None:
    """Raise if a record file name of ``column`` is empty (it would name no record, or ``src`` itself)."""
    bad = db[column].isna() | (db[column].astype(str).str.strip() == "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}: column '{column}' has an empty record file name in data row {row} "
                         f"(ecg_id {db['ecg_id'].iloc[row]})")


def _write_records(db: pd.DataFrame, src: Path, out: Path, column: str, db_path: Path) -> None:
    """``ecg/records.csv`` with absolute record paths; a missing header leaves that ECG absent (warning)."""
    records = [str((src / name).resolve()) for name in db[column]]
    exists = np.array([Path(f"{rec}.hea").is_file() for rec in records], dtype=bool)
    for ecg_id, rec in zip(db["ecg_id"][~exists], np.array(records)[~exists]):
        warnings.warn(f"{db_path}: column '{column}' of ecg_id {ecg_id}: WFDB header {rec}.hea does not "
                      f"exist; its ECG is left absent", stacklevel=4)
    (out / "ecg").mkdir(exist_ok=True)
    pd.DataFrame({"patient_id": db["ecg_id"].astype(str)[exists], "record": np.array(records)[exists],
                  "time": 0.0}).to_csv(out / "ecg" / "records.csv", index=False)
