"""``clinfuse convert``: the converters as console subcommands (options from their signatures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.ptbxl_fixture import write_ptbxl_fixture

CLINFUSE = Path(sys.executable).with_name("clinfuse")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLINFUSE), "convert", *args], capture_output=True, text=True, timeout=300)


def test_convert_ptbxl_from_the_command_line_then_load(tmp_path):
    src = write_ptbxl_fixture(tmp_path / "ptbxl", 12, 0) or tmp_path / "ptbxl"
    out = tmp_path / "cohort"
    done = _run("ptbxl", "--src", str(src), "--out", str(out), "--sampling_rate", "100")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"cohort folder: {out}" in done.stdout
    cohort = Cohort.load(out)
    db = pd.read_csv(Path(src) / "ptbxl_database.csv")
    assert len(cohort.patient_ids) <= len(db) and "ecg" in cohort.modalities
    mtime = (out / "labels.parquet").stat().st_mtime_ns
    assert _run("ptbxl", "--src", str(src), "--out", str(out)).returncode == 0
    assert (out / "labels.parquet").stat().st_mtime_ns == mtime  # cached: unchanged inputs, no rewrite


def test_convert_rejects_a_bad_option_naming_it(tmp_path):
    done = _run("ptbxl", "--src", str(tmp_path), "--out", str(tmp_path / "o"), "--sampling_rate", "250")
    assert done.returncode != 0 and "sampling_rate" in done.stderr
    done = _run("nosuch", "--out", str(tmp_path))
    assert done.returncode != 0 and "nosuch" in done.stderr
