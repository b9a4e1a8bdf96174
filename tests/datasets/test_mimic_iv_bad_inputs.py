"""convert_mimic_iv on damaged copies of the fake MIMIC-IV: ids read as integers everywhere, duplicate
dictionary items, stays linked to another subject's admission, empty ECG paths, impossible values and
options. Every error must name the file, the column and the row / id.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest

from clinfuse.datasets.mimic_iv import convert_mimic_iv
from clinfuse.datasets.mimic_iv_fixture import write_mimic_iv_fixture
from clinfuse.datasets.staging import STAGING_PREFIX

TASK = "mortality_48h"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_mimic_iv_fixture(tmp_path_factory.mktemp("mimic"), n_subjects=12, seed=0)


@pytest.fixture(scope="module")
def reference(pristine, tmp_path_factory):
    """(the conversion of the undamaged fixture, its ECG root)."""
    return convert_mimic_iv(pristine[0], tmp_path_factory.mktemp("ref") / "o", task=TASK, ecg=pristine[1]), pristine[1]


@pytest.fixture
def fx(pristine, tmp_path):
    """A private copy of the fixture (tests damage it): (mimic root, ecg root)."""
    shutil.copytree(pristine[0].parent, tmp_path / "src")
    return tmp_path / "src" / "mimic-iv", tmp_path / "src" / "mimic-iv-ecg"


def edit(path: Path, fn) -> None:
    """Rewrite a csv / csv.gz (all columns as strings) through ``fn(df) -> df``."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fn(df).to_csv(fh, index=False)
    else:
        fn(df).to_csv(path, index=False)


def source(fx, name: str) -> Path:
    return fx[1] / f"{name}.csv" if name == "record_list" else fx[0] / f"{name}.csv.gz"


def set_cell(col: str, row: int, value: str):
    def fn(df):
        df.loc[row, col] = value
        return df
    return fn


def map_col(col: str, f):
    def fn(df):
        df[col] = df[col].map(f)
        return df
    return fn


def outputs(out: Path, ecg_root: Path) -> dict[str, pd.DataFrame]:
    ecg = pd.read_csv(out / "ecg" / "records.csv", dtype=str)
    ecg["record"] = [str(Path(r).relative_to(ecg_root.resolve())) for r in ecg["record"]]
    frames = {"timeseries": pd.read_parquet(out / "timeseries.parquet"),
              "notes": pd.read_parquet(out / "notes.parquet"), "ecg": ecg}
    return {k: v.sort_values(list(v.columns)).reset_index(drop=True) for k, v in frames.items()}


# ---------------------------------------------------------------------- ids: integers, as in the core tables
@pytest.mark.parametrize("name, column, fmt", [
    ("hosp/labevents", "subject_id", "{}.0"), ("hosp/labevents", "itemid", "{}.0"),
    ("icu/chartevents", "stay_id", " {} "), ("icu/chartevents", "itemid", " {}.0"),
    ("hosp/d_labitems", "itemid", "{}.0"), ("icu/d_items", "itemid", " {} "),
    ("note/radiology", "subject_id", "{}.0"), ("record_list", "subject_id", " {}.0 "),
])
def test_event_ids_match_as_integers(fx, reference, tmp_path, name, column, fmt):
    edit(source(fx, name), map_col(column, fmt.format))
    got = outputs(convert_mimic_iv(fx[0], tmp_path / "o", task=TASK, ecg=fx[1]), fx[1])
    want = outputs(reference[0], reference[1])
    assert len(want["timeseries"]) == 170 and set(want["timeseries"]["variable"]) >= {"Creatinine", "Heart Rate"}
    for k in want:
        pd.testing.assert_frame_equal(got[k], want[k])


@pytest.mark.parametrize("name, column, row, value, what, who", [
    ("hosp/labevents", "subject_id", 2, "10000000.5", "non-integer value '10000000.5'", "subject_id 10000000.5"),
    ("hosp/labevents", "subject_id", 95, "abc", "non-integer value 'abc'", "subject_id abc"),  # excluded subject
    ("hosp/labevents", "itemid", 5, "51006x", "non-integer value '51006x'", "subject_id 10000000"),  # -10 h
    ("icu/chartevents", "stay_id", 3, "", "an empty value None", "subject_id 10000000"),
    ("icu/chartevents", "itemid", 1, "2.2e5.", "non-integer value '2.2e5.'", "subject_id 10000000"),
    ("hosp/d_labitems", "itemid", 1, "Lactate", "non-integer value 'Lactate'", ""),
    ("record_list", "subject_id", 0, "p10000000", "non-integer value 'p10000000'", "subject_id p10000000"),
])
def test_event_id_not_an_integer(fx, tmp_path, name, column, row, value, what, who):
    edit(source(fx, name), set_cell(column, row, value))
    file = name.split("/")[-1]
    where = rf"in data row {row}" + (rf" \({who}\)" if who else "")
    with pytest.raises(ValueError, match=rf"{file}\.csv(\.gz)?: column '{column}' has {what} {where}"):
        convert_mimic_iv(fx[0], tmp_path / "o", task=TASK, ecg=fx[1])


@pytest.mark.parametrize("name, item, dup", [("hosp/d_labitems", 50912, "50912"), ("icu/d_items", 220045, "220045"),
                                             ("hosp/d_labitems", 50912, "50912.0")])
def test_duplicate_dictionary_itemid(fx, tmp_path, name, item, dup):
    edit(source(fx, name), lambda df: pd.concat([df, df.head(1).assign(itemid=dup, label="Renamed")]))
    file = name.split("/")[1]
    with pytest.raises(ValueError, match=rf"{file}\.csv\.gz: column 'itemid' has duplicate id {item} in data row 0"):
        convert_mimic_iv(fx[0], tmp_path / "o", task=TASK)


# ---------------------------------------------------------------------- core tables
def test_stay_linked_to_another_subjects_admission(fx, tmp_path):
    edit(source(fx, "icu/icustays"), set_cell("hadm_id", 2, "20000010"))  # stay 30000020 (subject 10000002)
    with pytest.raises(ValueError, match=r"icustays\.csv\.gz: column 'subject_id' 10000002 in data row 2 \(stay_id "
                                         r"30000020\) does not match subject_id 10000001 of its hadm_id 20000010 "
                                         r"in .*admissions\.csv\.gz"):
        convert_mimic_iv(fx[0], tmp_path / "o", task=TASK)


def test_out_time_before_in_time(fx, tmp_path):
    edit(source(fx, "icu/icustays"), set_cell("outtime", 0, "2100-01-01 00:00:00"))
    with pytest.raises(ValueError, match=r"icustays\.csv\.gz: column 'outtime' 2100-01-01 00:00:00 lies before column "
                                         r"'intime' .* in data row 0 \(subject_id 10000000, stay_id 30000000\)"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d")


@pytest.mark.parametrize("name, column, row, value, who", [
    ("icu/icustays", "los", 2, "-3", "stay_id 30000020"),
    ("hosp/patients", "anchor_age", 3, "-40", "subject_id 10000003"),
])
def test_negative_value(fx, tmp_path, name, column, row, value, who):
    edit(source(fx, name), set_cell(column, row, value))
    file = name.split("/")[1]
    with pytest.raises(ValueError, match=rf"{file}\.csv\.gz: column '{column}' has negative value {value}\.0 "
                                         rf"in data row {row} \({who}\)"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d")


def test_empty_ecg_path(fx, tmp_path):
    edit(source(fx, "record_list"), set_cell("path", 1, ""))  # subject 10000000's in-window ECG
    with pytest.raises(ValueError, match=r"record_list\.csv: column 'path' is empty in data row 1 "
                                         r"\(subject_id 10000000\)"):
        convert_mimic_iv(fx[0], tmp_path / "o", task=TASK, ecg=fx[1])


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize("option, value", [("lookback_hours", -10.0), ("lookback_hours", float("nan")),
                                           ("lookback_hours", float("inf")), ("ecg_lookback_hours", -1)])
def test_bad_lookback_option(pristine, tmp_path, option, value):
    with pytest.raises(ValueError, match=rf"^{option} must be a finite number of hours >= 0; got {value}$"):
        convert_mimic_iv(pristine[0], tmp_path / "o", task=TASK, **{option: value})
    assert not (tmp_path / "o").exists()


def test_zero_lookback_keeps_events_from_intime(pristine, tmp_path):
    out = convert_mimic_iv(pristine[0], tmp_path / "o", task=TASK, lookback_hours=0)
    ts = pd.read_parquet(out / "timeseries.parquet")
    assert len(ts) and ts["time"].between(0.0, 48.0).all()


def test_a_failed_reconversion_keeps_the_previous_cohort(fx, tmp_path):
    out = convert_mimic_iv(fx[0], tmp_path / "o", task=TASK, ecg=fx[1])
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    edit(source(fx, "hosp/labevents"), set_cell("valuenum", 0, "abc"))  # found while reading events, after the labels
    with pytest.raises(ValueError, match="labevents.csv.gz: column 'valuenum'"):
        convert_mimic_iv(fx[0], out, task=TASK, ecg=fx[1])
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before and not list(out.glob(f"{STAGING_PREFIX}*"))  # untouched, no staging folder left


def test_out_that_is_a_file_is_refused_before_reading(fx, tmp_path):
    (tmp_path / "o").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        convert_mimic_iv(fx[0], tmp_path / "o", task=TASK, ecg=fx[1])
    assert (tmp_path / "o").read_text() == "mine"


def test_chart_event_of_another_subject_than_its_stay(fx, tmp_path):
    chart = pd.read_csv(source(fx, "icu/chartevents"), dtype=str)
    row = 0
    stay, subject = chart.loc[row, "stay_id"], chart.loc[row, "subject_id"]
    other = str(int(subject) + 1)
    edit(source(fx, "icu/chartevents"), set_cell("subject_id", row, other))
    with pytest.raises(ValueError, match=rf"chartevents\.csv\.gz: column 'subject_id' {other} in data row {row} "
                                         rf"\(stay_id {stay}\) does not match subject_id {subject} of that ICU stay"):
        convert_mimic_iv(fx[0], tmp_path / "o", task=TASK)
