"""`clinfuse evaluate` / `clinfuse compare`: arguments and folders are checked before anything is
scored or written; subgroup tables in natural order with one marker for an undefined metric."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from clinfuse.experiments.compare import compare_main
from clinfuse.experiments.subgroups import by_subgroup, subgroups, tabular_groups
from clinfuse.experiments.external_validation import evaluate_main, validate_cohort
from clinfuse.experiments.prognosis import Prognosis


@pytest.fixture(scope="module")
def folders(trained_prognosis, synthetic_cohort, tmp_path_factory):
    """The saved predictor, a copy of the cohort whose tabular file has a ``site`` column (s0..s11,
    one patient without: 'missing'), and a copy without labels.parquet."""
    work = tmp_path_factory.mktemp("args")
    prog, _ = trained_prognosis
    model = prog.save(work / "model")
    ignore = shutil.ignore_patterns(".clinfuse_cache", "ecg", "wsi", "notes.parquet")
    sites = work / "sites"
    shutil.copytree(synthetic_cohort, sites, ignore=ignore)
    tab = pd.read_parquet(sites / "tabular.parquet")
    tab["site"] = [f"s{k % 12}" for k in range(len(tab))]
    tab.loc[0, "site"] = None
    tab.to_parquet(sites / "tabular.parquet", index=False)
    bare = work / "bare"
    shutil.copytree(synthetic_cohort, bare, ignore=ignore)
    (bare / "labels.parquet").unlink()
    return model, sites, bare


def _fails(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("column", ["nosuch", "patient_id"])
def test_evaluate_bad_by_fails_before_scoring_or_writing(folders, synthetic_cohort, tmp_path, capsys, column):
    model, _, _ = folders
    out = tmp_path / "ev"
    err = _fails(evaluate_main, ["--model", model, "--root", synthetic_cohort, "--out", out, "--split", "test",
                                 "--by", column, "--n-boot", 20], capsys)
    assert "--by" in err and repr(column) in err
    assert not out.exists()
    prog = Prognosis.load(model)
    with pytest.raises(ValueError, match=column):
        validate_cohort(prog, synthetic_cohort, out, split="test", n_boot=20, show_progress=False, by=column)
    assert not out.exists()


@pytest.mark.parametrize("column", ["nosuch", "patient_id"])
def test_compare_bad_by_fails_before_scoring(folders, synthetic_cohort, capsys, column):
    model, _, _ = folders
    err = _fails(compare_main, ["--models", model, model, "--root", synthetic_cohort, "--split", "test",
                                "--by", column, "--n-boot", 20], capsys)
    assert "--by" in err and repr(column) in err
    assert capsys.readouterr().out == ""  # no table printed before the error


def test_by_patient_id_is_not_a_covariate(synthetic_cohort):
    with pytest.raises(ValueError, match="patient_id.*not a covariate"):
        tabular_groups(synthetic_cohort, "patient_id", ["P00002"])


@pytest.mark.parametrize("main", [evaluate_main, compare_main])
@pytest.mark.parametrize("value", ["0", "-5", "1", "19", "many"])
def test_n_boot_below_the_minimum_is_refused_by_the_parser(main, value, tmp_path, capsys):
    model = ["--model", tmp_path / "m", "--out", tmp_path / "o"] if main is evaluate_main else ["--models", tmp_path / "m"]
    err = _fails(main, [*model, "--root", tmp_path, "--n-boot", value], capsys)
    assert "argument --n-boot" in err and "20" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "at least 20" in capsys.readouterr().out


def test_evaluate_unlabelled_cohort_creates_no_folder(folders, tmp_path, capsys):
    model, _, bare = folders
    out = tmp_path / "ev"
    err = _fails(evaluate_main, ["--model", model, "--root", bare, "--out", out, "--n-boot", 20], capsys)
    assert "labels.parquet" in err and "time and event" in err
    assert not out.exists()
    prog = Prognosis.load(model)
    with pytest.raises(ValueError, match="needs time and event labels"):
        validate_cohort(prog, bare, out, n_boot=20, show_progress=False)
    assert not out.exists()


def test_compare_unlabelled_cohort_names_the_labels(folders, capsys):
    model, _, bare = folders
    err = _fails(compare_main, ["--models", model, model, "--root", bare, "--n-boot", 20], capsys)
    assert "labels.parquet" in err and "time and event" in err and "scored other patients" not in err


def test_binary_labels_are_required_for_binary_models(tmp_path):
    from clinfuse.experiments.compare import check_labels

    pd.DataFrame({"patient_id": ["a", "b"], "time": [1.0, 2.0], "event": [1, 0]}).to_parquet(tmp_path / "labels.parquet")
    check_labels(tmp_path, "survival", "compare")
    with pytest.raises(ValueError, match="labels.parquet.*binary"):
        check_labels(tmp_path, "binary", "compare")


def test_subgroups_in_natural_order_with_missing_last():
    rng = np.random.default_rng(0)
    names = ["s0", "s1", "s11", "s2", "missing", "s10", "s3"]
    groups = pd.Series(rng.choice(names, 300))
    score, time, event = rng.normal(size=300), rng.exponential(size=300), rng.integers(0, 2, 300).astype(float)
    sub = by_subgroup([score], ["m"], {"time": time, "event": event}, groups, n_boot=20)
    assert sub["group"].tolist() == ["s0", "s1", "s2", "s3", "s10", "s11", "missing"]
    numeric = subgroups(pd.Series([2, 11, -3, 1, None, 2.5, 11]))
    sub = by_subgroup([np.arange(7.0)], ["m"], {"binary": np.array([0, 1, 0, 1, 0, 1, 1.0])}, numeric, n_boot=20)
    assert sub["group"].tolist() == ["-3.0", "1.0", "2.0", "2.5", "11.0", "missing"]
    quartiles = subgroups(pd.Series(np.r_[np.arange(-20.0, 20.0), np.nan]))
    sub = by_subgroup([np.arange(41.0)], ["m"], {"binary": np.arange(41) % 2.0}, quartiles, n_boot=20)
    assert [g[:2] for g in sub["group"]] == ["Q1", "Q2", "Q3", "Q4", "mi"]


def test_evaluate_by_site_one_marker_for_undefined_and_natural_order(folders, tmp_path):
    model, sites, _ = folders
    out = tmp_path / "ev"
    evaluate_main([str(a) for a in ["--model", model, "--root", sites, "--out", out, "--split", "test",
                                    "--by", "site", "--n-boot", 20]])
    report = (out / "report.md").read_text()
    table = report.split("## By site")[1]
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines() if line.startswith("| s") or line.startswith("| missing")]
    want = [f"s{k}" for k in range(12)]
    assert [r for r in rows if r != "missing"] == [w for w in want if w in rows]
    assert rows[-1] == "missing" or "missing" not in rows
    assert "nan" not in table
    # a subgroup of under 10 patients or without an event has no C: '-' and the footnote saying why
    assert "| - |" in table and "`-`: not reported in this subgroup: fewer than 10 patients" in table


def test_compare_by_site_one_marker_for_undefined(folders, capsys):
    model, sites, _ = folders
    compare_main([str(a) for a in ["--models", model, model, "--root", sites, "--split", "test", "--by", "site",
                                   "--n-boot", 20]])
    out = capsys.readouterr().out
    table = out.split("Harrell C by site")[1]
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines() if line.startswith("| s")]
    assert rows == sorted(rows, key=lambda g: int(g[1:]))
    assert "nan" not in table and "`-`: not reported" in table
