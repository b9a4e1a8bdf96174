"""``cohort.json``: docs/formats.md names exactly the keys the readers read (``n_classes``,
``wsi.feature_dim``); the rest (the ``ecg`` block, ``modalities``) is descriptive, as a user who
writes their own rate or modality list there must be told (tiny cohort of tests/datasets/conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clinfuse.datasets.cohort import Cohort

FORMATS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def _edit_info(root: Path, **changes) -> None:
    info = json.loads((root / "cohort.json").read_text())
    (root / "cohort.json").write_text(json.dumps({**info, **changes}))


def test_formats_md_names_the_keys_readers_read_and_calls_the_rest_descriptive():
    text = " ".join(FORMATS.read_text().split())
    assert "the keys readers use" not in text
    read = re.search(r"the readers read two keys: `n_classes` .*? and `wsi\.feature_dim`", text)
    assert read, "formats.md must say which cohort.json keys the readers read"
    assert re.search(r"The other keys are descriptive for the readers", text)
    assert "`data.ecg_fs` / `data.ecg_seconds`" in text and "the `ecg` block is not read" in text
    assert "(not `modalities`)" in text


@pytest.mark.filterwarnings("ignore:.*shorter than the 10 s window")
def test_the_ecg_block_and_modalities_of_cohort_json_are_not_read(tiny):
    _edit_info(tiny.root, ecg={"fs": 250, "seconds": 5, "leads": ["II"]}, modalities=["tabular"])
    cohort = Cohort.load(tiny.root, notes={"min_patients": 1})
    assert cohort.modalities == ["tabular", "timeseries", "ecg", "notes", "wsi", "genomics"]
    spec = cohort.fit().spec()["ecg"]
    assert (spec["fs"], spec["n_samples"], len(spec["leads"])) == (100.0, 1000, 12)


def test_n_classes_and_wsi_feature_dim_are_read(tiny):
    _edit_info(tiny.root, n_classes=2)  # the tiny labels have classes 0..2
    with pytest.raises(ValueError, match=r"labels\.parquet: column 'multiclass' must be an integer in \[0, 2\)"):
        Cohort.load(tiny.root, ["tabular"])
    _edit_info(tiny.root, n_classes=5, wsi={"feature_dim": 4})
    cohort = Cohort.load(tiny.root, ["wsi"]).fit()
    assert cohort.n_classes == 5 and cohort.spec()["wsi"]["feature_dim"] == 4
