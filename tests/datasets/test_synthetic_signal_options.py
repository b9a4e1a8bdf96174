"""``generate_cohort``'s signal options (``wsi_signal``, ``notes_signal``, ``ts_signal``,
``ecg_signal``, ``genomics_signal``, ``tabular_signal``, and ``wsi_stain_sd``): each changes only its own modality's files, records itself in ``cohort.json``,
leaves the default byte-identical, and an unknown value is named before anything is written;
``clinfuse synth`` passes each one through its ``--<option>`` flag."""

import json
from pathlib import Path

import numpy as np
import pytest

from clinfuse.datasets.synthetic import generate_cohort
from clinfuse.datasets.synthetic.wsi import STAIN_SD
from clinfuse.datasets.wsi import read_slide_features
from clinfuse.experiments.cli import synth_main

SMALL = dict(n_patients=24, seed=3, wsi_patches=(5, 20), ecg_seconds=2.0, show_progress=False)

# option, default, other value, cohort.json block, is a file the option may change?
OPTIONS = [
    ("wsi_signal", "amount", "grade", "wsi", lambda name: name.endswith(".h5")),
    ("wsi_signal", "amount", "focal", "wsi", lambda name: name.endswith(".h5")),
    ("notes_signal", "keywords", "context", "notes", lambda name: name == "notes.parquet"),
    ("ts_signal", "level_and_trend", "trend", "timeseries", lambda name: name == "timeseries.parquet"),
    ("ecg_signal", "rate", "rhythm", "ecg", lambda name: name.endswith((".dat", ".hea"))),  # headers hold checksums
    ("genomics_signal", "coexpression", "exclusive", "genomics", lambda name: name == "genomics.csv"),
    ("tabular_signal", "linear", "interaction", "tabular", lambda name: name == "tabular.parquet"),
]


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("option, default, other, block, own", OPTIONS, ids=[f"{o[0]}={o[2]}" for o in OPTIONS])
def test_an_option_changes_only_its_modality_and_records_itself(tmp_path, option, default, other, block, own):
    plain = _files(generate_cohort(tmp_path / "plain", **SMALL))
    explicit = _files(generate_cohort(tmp_path / "explicit", **{option: default}, **SMALL))
    changed = _files(generate_cohort(tmp_path / "changed", **{option: other}, **SMALL))
    assert explicit == plain  # the default is the option's default value, byte for byte
    assert set(changed) == set(plain)
    mine = {name for name in plain if own(name)}
    assert mine and any(plain[name] != changed[name] for name in mine)
    assert [name for name in sorted(set(plain) - mine - {"cohort.json"}) if plain[name] != changed[name]] == []
    assert json.loads(changed["cohort.json"])[block]["signal"] == other
    assert json.loads(plain["cohort.json"])[block]["signal"] == default


@pytest.mark.parametrize("option", sorted({o[0] for o in OPTIONS}))
def test_an_unknown_value_is_named_and_nothing_is_written(tmp_path, option):
    with pytest.raises(ValueError, match=rf"{option}.*'nonsense'"):
        generate_cohort(tmp_path / "out", **{option: "nonsense"}, **SMALL)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, default, other, block, own", OPTIONS, ids=[f"{o[0]}={o[2]}" for o in OPTIONS])
def test_synth_command_passes_the_option(tmp_path, capsys, option, default, other, block, own):
    flag = "--" + option.replace("_", "-")
    synth_main(["--out", str(tmp_path / "c"), "--patients", "12", flag, other])
    assert json.loads((tmp_path / "c" / "cohort.json").read_text())[block]["signal"] == other
    with pytest.raises(SystemExit):
        synth_main(["--out", str(tmp_path / "d"), flag, "texture"])
    assert "texture" in capsys.readouterr().err


def test_wsi_stain_sd_defaults_to_the_signal_and_changes_only_the_slides(tmp_path):
    focal = _files(generate_cohort(tmp_path / "focal", wsi_signal="focal", **SMALL))
    focal_explicit = _files(generate_cohort(tmp_path / "focal_sd", wsi_signal="focal", wsi_stain_sd=STAIN_SD, **SMALL))
    assert focal_explicit == focal
    assert json.loads(focal["cohort.json"])["wsi"]["stain_sd"] == STAIN_SD
    unstained = _files(generate_cohort(tmp_path / "focal_0", wsi_signal="focal", wsi_stain_sd=0.0, **SMALL))
    assert "stain_sd" not in json.loads(unstained["cohort.json"])["wsi"]
    plain = _files(generate_cohort(tmp_path / "plain", **SMALL))
    stained = _files(generate_cohort(tmp_path / "stained", wsi_stain_sd=1.0, **SMALL))
    assert "stain_sd" not in json.loads(plain["cohort.json"])["wsi"]
    assert json.loads(stained["cohort.json"])["wsi"]["stain_sd"] == 1.0
    changed = {name for name in plain if plain[name] != stained[name]}
    assert changed and all(name.endswith(".h5") or name == "cohort.json" for name in changed)
    for name in sorted(n for n in changed if n.endswith(".h5")):  # each slide shifted as a whole
        diff = read_slide_features(tmp_path / "stained" / name) - read_slide_features(tmp_path / "plain" / name)
        np.testing.assert_allclose(diff, np.broadcast_to(diff[0], diff.shape), atol=1e-5)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.5", True])
def test_a_bad_wsi_stain_sd_is_named_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ValueError, match="wsi_stain_sd"):
        generate_cohort(tmp_path / "out", wsi_stain_sd=bad, **SMALL)
    assert not (tmp_path / "out").exists()


def test_synth_command_passes_wsi_stain_sd(tmp_path):
    synth_main(["--out", str(tmp_path / "c"), "--patients", "12", "--wsi-stain-sd", "0.25"])
    assert json.loads((tmp_path / "c" / "cohort.json").read_text())["wsi"]["stain_sd"] == 0.25
