"""``generate_cohort``'s signal options (``wsi_signal``, ``notes_signal``, ``ts_signal``,
``ecg_signal``, ``genomics_signal``, ``tabular_signal``): each changes only its own modality's files, records itself in ``cohort.json``,
leaves the default byte-identical, and an unknown value is named before anything is written;
``clinfuse synth`` passes each one through its ``--<option>`` flag."""

import json
from pathlib import Path

import pytest

from clinfuse.datasets.synthetic import generate_cohort
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
