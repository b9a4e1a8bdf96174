"""``staging.staged_out``, the write-aside-then-swap of every source converter (MEDS, MIMIC-IV, PTB-XL,
TCGA): a bad ``out`` is refused first, a failure keeps the previous cohort current and leaves nothing
behind, a success replaces exactly the owned files (nested ones too) with ``cohort.json`` last."""

from __future__ import annotations

import json
import os
import re

import pytest

from clinfuse.datasets import staging
from clinfuse.datasets.conversion import is_current, write_cohort_info
from clinfuse.datasets.staging import STAGING_PREFIX, check_out, prepare_out, staged_out

FMT = "demo"
OWNED = ("labels.parquet", "splits.csv", "wsi/slides.csv", "ecg/records.csv")
ALL = {"labels.parquet": "L1", "splits.csv": "S1", "wsi/slides.csv": "W1", "ecg/records.csv": "E1"}


def _convert(out, files, fp="1", overwrite=False, fail=None, check_fp=True, **kw):
    """One conversion through ``staged_out``: ``files`` (relative path -> text) and cohort.json with
    fingerprint ``fp`` (also given to ``staged_out`` when ``check_fp``), then ``fail`` (an exception)
    is raised inside the block when given."""
    with staged_out(out, FMT, overwrite, OWNED, fp=fp if check_fp else None, **kw) as stage:
        assert stage.parent == out and stage.name.startswith(STAGING_PREFIX)  # same file system: renames
        for rel, text in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_text(text)
        write_cohort_info(stage, FMT, fp, name="demo")
        if fail is not None:
            raise fail
    return out


def _snapshot(folder):
    """relative path -> text of every file, and every folder (as None), under ``folder``."""
    return {p.relative_to(folder).as_posix(): (p.read_text() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _no_staging(out):
    return not [p for p in out.rglob("*") if p.name.startswith(STAGING_PREFIX)]


def _at(path) -> str:
    return re.escape(str(path))


# ---------------------------------------------------------------------- out refused before anything is written
def test_out_that_is_a_file_or_under_one_is_refused(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("user data")
    for out, match in ((f, rf"out '{_at(f)}' exists and is not a directory"),
                       (f / "sub", rf"out '{_at(f / 'sub')}' cannot be created: {_at(f)} exists and is not a dir")):
        for call in (lambda: check_out(out, FMT, True), lambda: prepare_out(out, FMT, True, OWNED),
                     lambda: _convert(out, ALL, overwrite=True)):
            with pytest.raises(ValueError, match=match):
                call()
    assert f.read_text() == "user data" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("info, why", [
    (None, r"is a non-empty folder that is not a cohort \(it has no cohort.json\), so not a DEMO conversion"),
    ({"source": {"format": "ptbxl", "fingerprint": "x"}},
     r"is a non-empty folder that is not a DEMO conversion \(its cohort.json is a 'ptbxl' conversion\)"),
    ({"name": "synthetic", "format_version": 1},
     r"is a non-empty folder that is not a DEMO conversion \(its cohort.json is not from a converter\)"),
])
def test_foreign_folder_refused_unless_overwrite(tmp_path, info, why):
    out = tmp_path / "out"
    (out / "ecg").mkdir(parents=True)
    (out / "ecg" / "extra.hea").write_text("theirs")
    (out / "labels.parquet").write_text("theirs")
    if info is not None:
        (out / "cohort.json").write_text(json.dumps(info))
    before = _snapshot(out)
    with pytest.raises(ValueError, match=rf"^{_at(out)} {why}; pass overwrite=True to write into it$"):
        _convert(out, ALL, name="DEMO")
    assert _snapshot(out) == before  # nothing written, no staging folder made
    _convert(out, ALL, overwrite=True)  # asked for: written into; the owned name is replaced, the rest kept
    assert (out / "ecg" / "extra.hea").read_text() == "theirs" and (out / "labels.parquet").read_text() == "L1"
    assert is_current(out, FMT, "1") and _no_staging(out)


def test_message_names_the_format_by_default(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="so not a demo conversion; pass overwrite=True"):
        check_out(tmp_path, FMT, False)


def test_empty_folder_staging_leftovers_and_same_format_accepted(tmp_path):
    check_out(tmp_path, FMT, False)  # empty
    (tmp_path / f"{STAGING_PREFIX}{FMT}-killed").mkdir()  # left by a killed conversion: not user content
    (tmp_path / f"{STAGING_PREFIX}{FMT}-killed" / "labels.parquet").write_text("half")
    check_out(tmp_path, FMT, False)
    _convert(tmp_path, ALL)
    check_out(tmp_path, FMT, False)  # a conversion of the same format
    with pytest.raises(ValueError, match=r"not a other conversion \(its cohort.json is a 'demo' conversion\)"):
        check_out(tmp_path, "other", False)


# ---------------------------------------------------------------------- success
def test_first_conversion_creates_out_with_cohort_json_last(tmp_path):
    out = _convert(tmp_path / "a" / "b" / "out", ALL)
    assert _snapshot(out) == {**ALL, "cohort.json": (out / "cohort.json").read_text(), "ecg": None, "wsi": None}
    assert is_current(out, FMT, "1") and _no_staging(out)


def test_rewrite_replaces_owned_files_removes_absent_ones_and_keeps_others(tmp_path):
    out = _convert(tmp_path / "out", ALL)
    (out / "mine.txt").write_text("keep")
    (out / "ecg" / "extra.hea").write_text("keep too")  # a user's file next to an owned one
    _convert(out, {"labels.parquet": "L2", "splits.csv": "S2"}, fp="2")
    got = _snapshot(out)
    assert got.pop("cohort.json") is not None
    # wsi/slides.csv and ecg/records.csv removed; the emptied wsi/ too, ecg/ kept for the user's file
    assert got == {"labels.parquet": "L2", "splits.csv": "S2", "mine.txt": "keep", "ecg": None,
                   "ecg/extra.hea": "keep too"}
    assert is_current(out, FMT, "2") and not is_current(out, FMT, "1")
    _convert(out, ALL, fp="3")  # nested owned files come back into existing and new folders
    assert (out / "wsi" / "slides.csv").read_text() == "W1" and (out / "ecg" / "extra.hea").read_text() == "keep too"


def test_cohort_json_is_removed_first_and_moved_in_last(tmp_path, monkeypatch):
    out = _convert(tmp_path / "out", ALL)
    moves, real = [], os.replace

    def spy(src, dst):
        moves.append((os.path.relpath(dst, out), (out / "cohort.json").exists()))
        real(src, dst)
    monkeypatch.setattr(staging.os, "replace", spy)
    _convert(out, {"labels.parquet": "L2", "wsi/slides.csv": "W2"}, fp="2")
    assert moves[-1] == ("cohort.json", False)
    assert sorted(moves[:-1]) == [("labels.parquet", False), (os.path.join("wsi", "slides.csv"), False)]
    assert is_current(out, FMT, "2")


def test_an_interrupted_swap_is_never_current(tmp_path, monkeypatch):
    out = _convert(tmp_path / "out", ALL)
    (out / "mine.txt").write_text("keep")
    real = os.replace

    def disk_full(src, dst):
        if str(dst).endswith("splits.csv"):
            raise OSError("No space left on device")
        real(src, dst)
    monkeypatch.setattr(staging.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _convert(out, ALL, fp="2")
    assert not (out / "cohort.json").exists() and not is_current(out, FMT, "1") and not is_current(out, FMT, "2")
    assert (out / "mine.txt").read_text() == "keep" and _no_staging(out)


def test_relative_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _convert(type(tmp_path)("."), ALL)
    assert is_current(tmp_path, FMT, "1") and sorted(p.name for p in tmp_path.iterdir()) == [
        "cohort.json", "ecg", "labels.parquet", "splits.csv", "wsi"]


# ---------------------------------------------------------------------- failure
def test_failure_keeps_the_previous_cohort_current_and_leaves_no_staging(tmp_path):
    out = _convert(tmp_path / "out", ALL)
    (out / "mine.txt").write_text("keep")
    before = _snapshot(out)
    with pytest.raises(OSError, match="disk full"):
        _convert(out, {"labels.parquet": "L2"}, fp="2", fail=OSError("disk full"))
    assert _snapshot(out) == before and is_current(out, FMT, "1")  # byte for byte; no staging folder left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("existing", [0, 1, 2])
def test_failed_first_conversion_leaves_no_folder(tmp_path, existing):
    """Of ``new/deeper/out``, the ``existing`` outer folders were there before; only those remain."""
    chain = [tmp_path / "new", tmp_path / "new" / "deeper", tmp_path / "new" / "deeper" / "out"]
    for folder in chain[:existing]:
        folder.mkdir()
    with pytest.raises(KeyboardInterrupt):
        _convert(chain[-1], ALL, fail=KeyboardInterrupt())
    assert [folder.exists() for folder in chain] == [i < existing for i in range(3)]


def test_converter_bugs_are_caught_before_out_changes(tmp_path):
    out = _convert(tmp_path / "out", ALL)
    before = _snapshot(out)
    with pytest.raises(RuntimeError, match=r"wrote \['extra.csv'\], which are not among its owned files"):
        _convert(out, {"extra.csv": "x"}, fp="2")
    with pytest.raises(RuntimeError, match="the demo conversion wrote no cohort.json"):
        with staged_out(out, FMT, False, OWNED) as stage:
            (stage / "labels.parquet").write_text("L2")
    assert _snapshot(out) == before and is_current(out, FMT, "1")


# ---------------------------------------------------------------------- out changed while converting
def test_out_is_checked_again_before_the_swap(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="not a cohort .*so not a demo conversion"):
        with staged_out(out, FMT, False, OWNED) as stage:
            (out / "theirs.txt").write_text("written meanwhile")  # out was absent when the conversion began
            (stage / "labels.parquet").write_text("L1")
            write_cohort_info(stage, FMT, "1")
    assert _snapshot(out) == {"theirs.txt": "written meanwhile"}


def test_a_concurrent_identical_conversion_is_kept(tmp_path):
    out = tmp_path / "out"
    with staged_out(out, FMT, False, OWNED, fp="1") as stage:
        _convert(out, {"labels.parquet": "theirs"}, fp="1")  # another process, same inputs, finished first
        (stage / "labels.parquet").write_text("ours")
        write_cohort_info(stage, FMT, "1")
    assert (out / "labels.parquet").read_text() == "theirs" and _no_staging(out)
    for kw in ({"overwrite": True}, {"check_fp": False}):  # asked to overwrite, or no fingerprint given: swapped
        _convert(out, {"labels.parquet": "ours"}, **kw)
        assert (out / "labels.parquet").read_text() == "ours"
        (out / "labels.parquet").write_text("theirs")
