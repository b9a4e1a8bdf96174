"""TCGA converter, bad input and a bad ``out``: errors name the file, column and case, and a failed
conversion leaves the previous cohort in ``out`` as it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import clinfuse.datasets.tcga as tcga
from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.tcga import convert_tcga
from clinfuse.datasets.tcga_fixture import write_tcga_fixture


@pytest.fixture()
def src(tmp_path):
    return write_tcga_fixture(tmp_path / "src", n_subjects=12, seed=5)


def _convert(src, out, **kw):
    args = dict(genomics=src["genomics"], signatures=src["signatures"], slides_dir=src["slides_dir"])
    return convert_tcga(src["clinical"], out, **{**args, **kw})


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _clinical_text(src):
    return pd.read_csv(src["clinical"], dtype=str, keep_default_na=False)


def _set_per_case(src, col, case, value):
    clin = _clinical_text(src)
    clin.loc[clin["case_id"] == case, col] = value  # every slide row of the case
    clin.to_csv(src["clinical"], index=False)


def _set_column(src, col, levels, first=None):
    """Give every case a ``col`` value (``levels`` in turn; the first case ``first`` when given),
    written on all its slide rows; returns case -> value."""
    clin = _clinical_text(src)
    cases = clin["case_id"].unique()
    values = {case: levels[i % len(levels)] for i, case in enumerate(cases)}
    if first is not None:
        values[cases[0]] = first
    clin[col] = clin["case_id"].map(values)
    clin.to_csv(src["clinical"], index=False)
    return values


def _corrupt_first_slide(src):
    """Overwrite the first slide's feature file; returns it, its case and its original bytes."""
    clin = _clinical_text(src)
    stem = clin["slide_id"].iloc[0][: -len(".svs")]
    (path,) = src["slides_dir"].rglob(stem + ".*")
    original = path.read_bytes()
    path.write_bytes(b"not a slide file")
    return path, clin["case_id"].iloc[0], original


# ---------------------------------------------------------------------- a failed conversion keeps the old cohort
def test_corrupt_first_slide_leaves_the_previous_cohort_intact(src, tmp_path):
    out = _convert(src, tmp_path / "out")
    before = _snapshot(out)
    assert {"cohort.json", "labels.parquet", "splits.csv", "tabular.parquet", "genomics.csv", "gene_groups.csv",
            "wsi/slides.csv"} <= set(before)
    path, case, original = _corrupt_first_slide(src)  # read for the feature width, after every CSV was checked
    with pytest.raises(ValueError, match=rf"{path.name} \(case {case}\).*corrupt"):
        _convert(src, out)
    assert _snapshot(out) == before  # every file, cohort.json included, byte for byte; no staging folder left
    path.write_bytes(original)  # the cohort refers to the slide files: repaired, the old cohort loads and fits
    cohort = Cohort.load(out).fit()
    assert cohort.modalities == ["tabular", "wsi", "genomics"] and cohort.spec()["wsi"] == {"feature_dim": 8}


def test_failure_while_writing_leaves_the_previous_cohort_intact(src, tmp_path, monkeypatch):
    out = _convert(src, tmp_path / "out")
    before = _snapshot(out)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(tcga, "write_cohort_info", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _convert(src, out, seed=1)  # a changed option: reconverts
    assert _snapshot(out) == before
    Cohort.load(out).fit()


def test_failed_first_conversion_leaves_no_folder(src, tmp_path):
    _corrupt_first_slide(src)
    with pytest.raises(ValueError, match="corrupt"):
        _convert(src, tmp_path / "new" / "out")
    assert not (tmp_path / "new" / "out").exists()


def test_reconversion_replaces_the_old_files_and_keeps_other_files(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _convert(src, out, overwrite=True)  # a non-empty folder that is not a conversion: written into
    assert (out / "genomics.csv").exists()
    convert_tcga(src["clinical"], out, slides_dir=src["slides_dir"])  # now without genomics
    assert sorted(p.name for p in out.iterdir()) == [
        "cohort.json", "labels.parquet", "notes.txt", "splits.csv", "tabular.parquet", "wsi"]
    assert (out / "notes.txt").read_text() == "mine"
    assert Cohort.load(out).fit().modalities == ["tabular", "wsi"]


# ---------------------------------------------------------------------- no case
def test_header_only_clinical_csv_names_the_file(src, tmp_path):
    _clinical_text(src).head(0).to_csv(src["clinical"], index=False)
    with pytest.raises(ValueError, match=r"tcga_clinical.csv: no case in the clinical CSV"):
        convert_tcga(src["clinical"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fewer_cases_than_folds_names_the_file(src, tmp_path):
    clin = _clinical_text(src)
    clin[clin["case_id"].isin(clin["case_id"].unique()[:3])].to_csv(src["clinical"], index=False)
    with pytest.raises(ValueError, match=r"tcga_clinical.csv: 3 case\(s\): n_folds must be in \[2, 3\]"):
        convert_tcga(src["clinical"], tmp_path / "out", n_folds=5)


# ---------------------------------------------------------------------- out is a file
def test_out_that_is_a_file_fails_before_reading_any_input(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("user data")
    missing = tmp_path / "no_such_clinical.csv"  # never read: the out error comes first
    with pytest.raises(ValueError, match=rf"out '{f}' exists and is not a directory"):
        convert_tcga(missing, f)
    with pytest.raises(ValueError, match=rf"out '{f / 'sub'}' cannot be created: {f} exists and is not a dir"):
        convert_tcga(missing, f / "sub")
    assert f.read_text() == "user data"


def test_foreign_folder_fails_before_reading_any_input(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a TCGA conversion; pass overwrite=True"):
        convert_tcga(tmp_path / "no_such_clinical.csv", tmp_path / "out")


# ---------------------------------------------------------------------- covariate types
def test_text_in_a_numeric_covariate_names_file_column_case_and_value(src, tmp_path):
    case = _clinical_text(src)["case_id"].iloc[-1]
    _set_per_case(src, "age", case, "unknown")
    with pytest.raises(ValueError, match=rf"tcga_clinical.csv: column 'age' .*\['unknown'\].*\['{case}'\]"):
        convert_tcga(src["clinical"], tmp_path / "out")


@pytest.mark.parametrize("marker", ["", "NA", "[Not Available]", "[Unknown]", "'--"])
def test_missing_markers_in_a_numeric_covariate_are_missing(src, tmp_path, marker):
    clin = _clinical_text(src)
    case = clin["case_id"].iloc[-1]
    _set_per_case(src, "age", case, marker)
    table = pd.read_parquet(convert_tcga(src["clinical"], tmp_path / "out") / "tabular.parquet")
    table = table.set_index("patient_id")
    assert table["age"].dtype == np.float64 and np.isnan(table.loc[case, "age"])
    expected = clin.drop_duplicates("case_id").set_index("case_id")["age"].drop(case).astype(float)
    np.testing.assert_array_equal(table["age"].drop(case), expected)


def test_site_codes_stay_strings_even_when_all_numeric(src, tmp_path):
    codes = _set_column(src, "site", ("05", "38", "44"))
    table = pd.read_parquet(convert_tcga(src["clinical"], tmp_path / "out") / "tabular.parquet")
    assert table.set_index("patient_id")["site"].to_dict() == codes


def test_mostly_text_covariate_with_a_number_stays_categorical(src, tmp_path):
    stage = _set_column(src, "stage", ("Stage I", "Stage II", "Stage III"), first="4")
    table = pd.read_parquet(convert_tcga(src["clinical"], tmp_path / "out") / "tabular.parquet")
    assert table.set_index("patient_id")["stage"].to_dict() == stage


def test_a_grade_with_numbers_and_gx_is_an_error_unless_listed_as_categorical(src, tmp_path):
    grade = _set_column(src, "grade", ("1", "2", "3"), first="GX")
    with pytest.raises(ValueError, match=r"column 'grade' holds numbers .*\['GX'\].*categorical_columns"):
        convert_tcga(src["clinical"], tmp_path / "out")
    out = convert_tcga(src["clinical"], tmp_path / "out", categorical_columns=["grade"])
    table = pd.read_parquet(out / "tabular.parquet").set_index("patient_id")
    assert table["grade"].to_dict() == grade and table["age"].dtype == np.float64  # the others as before
    with pytest.raises(ValueError, match=r"categorical_columns \['grde'\] are not among the kept covariates"):
        convert_tcga(src["clinical"], tmp_path / "out2", categorical_columns=["grde"])
    with pytest.raises(ValueError, match="a list of column names"):
        convert_tcga(src["clinical"], tmp_path / "out2", categorical_columns="grade")
