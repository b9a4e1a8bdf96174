"""`clinfuse convert builtin --out`: an existing folder is replaced only when it holds nothing but a cohort."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("sksurv")

from clinfuse.datasets.builtin_tabular import builtin_cohort  # noqa: E402
from clinfuse.experiments.convert import convert_main  # noqa: E402


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_folder_with_a_user_file_is_refused_and_kept(tmp_path, capsys):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "a.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"keep'? is not empty and is not a clinfuse cohort"):
        convert_main(["builtin", "--name", "veterans", "--out", str(keep)])
    assert _files(keep) == {"a.txt": b"mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]  # no half-written folder left next to it


def test_cohort_folder_with_other_files_is_refused_and_kept(synthetic_cohort, tmp_path):
    out = tmp_path / "cohort"
    shutil.copytree(synthetic_cohort, out, ignore=shutil.ignore_patterns(".clinfuse_cache"))
    (out / "ecg" / "my_notes.txt").write_text("mine")  # inside a cohort subfolder too
    (out / "analysis.ipynb").write_text("{}")
    before = _files(out)
    with pytest.raises(ValueError, match=r"cohort.*other files.*analysis.ipynb"):
        builtin_cohort("veterans", out)
    assert _files(out) == before


def test_a_file_as_out_is_refused(tmp_path):
    target = tmp_path / "cohort"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="not a directory"):
        builtin_cohort("veterans", target)
    assert target.read_text() == "not a folder"


def test_an_earlier_cohort_or_an_empty_folder_is_replaced(synthetic_cohort, tmp_path):
    out = tmp_path / "synthetic"
    shutil.copytree(synthetic_cohort, out)  # a whole synthetic cohort, its .clinfuse_cache included
    builtin_cohort("veterans", out)
    assert json.loads((out / "cohort.json").read_text())["name"] == "veterans"
    assert sorted(p.name for p in out.iterdir()) == ["cohort.json", "labels.parquet", "splits.csv", "tabular.parquet"]
    builtin_cohort("whas500", out)  # a built-in cohort replaced by another
    assert json.loads((out / "cohort.json").read_text())["name"] == "whas500"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (builtin_cohort("veterans", empty) / "cohort.json").is_file()
