"""convert_ptbxl on damaged inputs and unusable ``out`` folders: a ValueError naming the file, the
column and the ecg_id, raised before ``out`` is changed; a failed conversion keeps the previous cohort.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from clinfuse.datasets import ptbxl
from clinfuse.datasets.ptbxl import convert_ptbxl
from clinfuse.datasets.ptbxl_fixture import write_ptbxl_fixture
from clinfuse.datasets.source_tables import check_out, prepare_out
from clinfuse.datasets.staging import STAGING_PREFIX

DB = r"ptbxl_database\.csv"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_ptbxl_fixture(tmp_path_factory.mktemp("ptbxl_bad") / "src", n_ecgs=14, seed=0)


@pytest.fixture
def src(pristine, tmp_path):
    """A private copy of the fixture (tests damage it)."""
    return shutil.copytree(pristine, tmp_path / "src")


def set_cell(src, row, column, value):
    path = src / "ptbxl_database.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, column] = value
    df.to_csv(path, index=False)


def snapshot(folder):
    """relative path -> (bytes, mtime) of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- scp_codes likelihoods
@pytest.mark.parametrize("cell, shown", [
    ("{'NORM': 'high'}", "'high'"), ("{'NORM': None}", "None"), ("{'NORM': [1]}", r"\[1\]"),
    ("{'NORM': True}", "True"), ("{'NORM': 1e999}", "inf"),
    ("{'NORM': 100.0, 'SR': 'x'}", "'x'"),  # a non-diagnostic (rhythm) code is checked too
])
def test_likelihood_that_is_not_a_number(src, tmp_path, cell, shown):
    set_cell(src, 4, "scp_codes", cell)
    code = "SR" if "SR" in cell else "NORM"
    with pytest.raises(ValueError, match=rf"{DB}: column 'scp_codes' of ecg_id 5: the likelihood of code "
                                         rf"'{code}' is {shown}, not a finite number"):
        convert_ptbxl(src, tmp_path / "o")


def test_scp_codes_with_an_unhashable_key(src, tmp_path):
    set_cell(src, 2, "scp_codes", "{['NORM']: 100.0}")  # literal_eval raises TypeError
    with pytest.raises(ValueError, match=rf"{DB}: column 'scp_codes' of ecg_id 3 is not a dict literal"):
        convert_ptbxl(src, tmp_path / "o")


# ---------------------------------------------------------------------- scp_statements.csv
def test_code_listed_twice_in_scp_statements(src, tmp_path):
    path = src / "scp_statements.csv"
    scp = pd.read_csv(path, dtype=str, keep_default_na=False)
    again = scp[scp.iloc[:, 0] == "NORM"].assign(diagnostic="", diagnostic_class="")
    pd.concat([scp, again]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"scp_statements\.csv: scp code 'NORM' is listed 2 times in the first "
                                         r"column \(data rows \[1, 10\]\)"):
        convert_ptbxl(src, tmp_path / "o")


# ---------------------------------------------------------------------- record file names
@pytest.mark.parametrize("rate, column", [(100, "filename_lr"), (500, "filename_hr")])
def test_empty_filename_fails_before_out_is_touched(src, tmp_path, rate, column):
    out = convert_ptbxl(src, tmp_path / "o", sampling_rate=rate)
    before = snapshot(out)
    set_cell(src, 0, column, "")
    with pytest.raises(ValueError, match=rf"{DB}: column '{column}' has an empty record file name in data row 0 "
                                         r"\(ecg_id 1\)"):
        convert_ptbxl(src, out, sampling_rate=rate)
    assert snapshot(out) == before  # the previous cohort (cohort.json included) is untouched


def test_failed_write_keeps_the_previous_cohort(src, tmp_path, monkeypatch):
    out = convert_ptbxl(src, tmp_path / "o")
    before = snapshot(out)
    set_cell(src, 0, "age", "41")  # changed inputs: a reconversion is due

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(ptbxl, "_write_records", broken)
    with pytest.raises(OSError, match="disk full"):
        convert_ptbxl(src, out)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "src"]  # no staging folder left behind
    assert not list(out.glob(f"{STAGING_PREFIX}*"))


def test_reconversion_keeps_files_it_does_not_own(src, tmp_path, monkeypatch):
    out = tmp_path / "o"
    (out / "ecg").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "ecg" / "extra.hea").write_text("mine too")
    with pytest.raises(ValueError, match=r"is a non-empty folder that is not a cohort \(it has no cohort.json\), so "
                                         r"not a ptbxl conversion; pass overwrite=True"):
        convert_ptbxl(src, out)
    monkeypatch.chdir(out)
    convert_ptbxl(src, ".", overwrite=True)  # a relative out without a name: staged inside it all the same
    assert (out / "notes.txt").read_text() == "mine" and (out / "ecg" / "extra.hea").read_text() == "mine too"
    assert json.loads((out / "cohort.json").read_text())["source"]["format"] == "ptbxl"
    assert (out / "ecg" / "records.csv").is_file() and (out / "labels.parquet").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "src"] and not list(out.glob(f"{STAGING_PREFIX}*"))


# ---------------------------------------------------------------------- nothing left
def test_no_ecg_with_a_diagnostic_statement(src, tmp_path):
    path = src / "ptbxl_database.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.assign(scp_codes="{'SR': 0.0}").to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"{DB}: column 'scp_codes': none of the 14 ECGs has a diagnostic "
                                         r"statement .* every ECG would be dropped as unlabelled"):
        convert_ptbxl(src, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    kept = convert_ptbxl(src, tmp_path / "k", drop_unlabelled=False)  # the way out the message names
    assert json.loads((kept / "cohort.json").read_text())["n_patients"] == 14


def test_min_likelihood_above_every_statement(pristine, tmp_path):
    with pytest.raises(ValueError, match=r"none of the 14 ECGs has a diagnostic statement .*likelihood >= 101"):
        convert_ptbxl(pristine, tmp_path / "o", min_likelihood=101)


def test_header_only_database(src, tmp_path):
    path = src / "ptbxl_database.csv"
    pd.read_csv(path, dtype=str).head(0).to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"{DB}: has a header but no data rows"):
        convert_ptbxl(src, tmp_path / "o")


# ---------------------------------------------------------------------- impossible values
@pytest.mark.parametrize("column, value", [("age", "-5"), ("height", "-170"), ("weight", "-0.5")])
def test_negative_age_height_weight(src, tmp_path, column, value):
    set_cell(src, 2, column, value)
    with pytest.raises(ValueError, match=rf"{DB}: column '{column}' has negative value '{value}' in data row 2 "
                                         r"\(ecg_id 3\)"):
        convert_ptbxl(src, tmp_path / "o")


# ---------------------------------------------------------------------- out is not a folder
def test_out_is_a_file_fails_before_reading_inputs(src, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("user data")
    (src / "scp_statements.csv").write_text("broken\n")  # reading the inputs would fail differently
    with pytest.raises(ValueError, match=r"out '.*a_file' exists and is not a directory"):
        convert_ptbxl(src, target)
    with pytest.raises(ValueError, match=r"out '.*a_file/sub' cannot be created: .*a_file exists and is not a "
                                         r"directory"):
        convert_ptbxl(src, target / "sub")
    assert target.read_text() == "user data"


def test_source_tables_out_helpers_refuse_a_file(tmp_path):
    """``prepare_out`` (used by mimic_iv) gives the same ValueError, never NotADirectoryError."""
    target = tmp_path / "a_file"
    target.write_text("user data")
    for call in (lambda: check_out(target, "mimic_iv", False), lambda: prepare_out(target, "mimic_iv", True, ())):
        with pytest.raises(ValueError, match=r"out '.*a_file' exists and is not a directory"):
            call()
    assert target.read_text() == "user data"
    check_out(tmp_path / "new" / "deeper", "mimic_iv", False)  # absent: fine, and nothing is created
    assert not (tmp_path / "new").exists()
