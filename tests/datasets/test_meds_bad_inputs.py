"""MEDS converter: the output folder (other formats, a file, a failed rewrite) and bad or surprising
inputs (empty labels, time zones, birth rows, static indicator / text / ``age_years`` codes)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import polars as pl
import pytest

from clinfuse.datasets.meds import convert_meds
from clinfuse.datasets.meds_fixture import write_meds_fixture

OWNED = ("cohort.json", "labels.parquet", "splits.csv", "tabular.parquet", "timeseries.parquet", "notes.parquet")
BIRTH = pl.col("code") == "MEDS_BIRTH"


@pytest.fixture
def fresh(tmp_path):
    """A small fixture copy that tests may damage (train/0.parquet holds subjects 1000 and 1003)."""
    return write_meds_fixture(tmp_path / "src", n_subjects=6, seed=1, n_events_per_subject=4)


def _shard(meds):
    return meds.root / "data" / "train" / "0.parquet"


def _edit(meds, fn):
    path = _shard(meds)
    fn(pl.read_parquet(path)).write_parquet(path)
    return path


def _at(path) -> str:
    """``path`` as a regular expression."""
    return re.escape(str(path))


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _spill_dirs(tmp_path) -> list:
    return list(tmp_path.glob(".*"))


# ---------------------------------------------------------------------- output folder
PTBXL_INFO = {"name": "ptbxl", "source": {"format": "ptbxl", "fingerprint": "x"}, "format_version": 1}
SYNTH_INFO = {"name": "synthetic", "seed": 0, "format_version": 1}  # as `clinfuse synth` writes: no source


@pytest.mark.parametrize("info, named", [(PTBXL_INFO, "a 'ptbxl' conversion"), (SYNTH_INFO, "not from a converter")])
def test_cohort_of_another_format_refused(fresh, tmp_path, info, named):
    out = tmp_path / "other"
    (out / "ecg").mkdir(parents=True)
    (out / "cohort.json").write_text(json.dumps(info))
    (out / "labels.parquet").write_bytes(b"theirs")
    (out / "ecg" / "records.csv").write_text("patient_id,record,time\n")
    before = _files(out)
    with pytest.raises(ValueError, match=rf"{_at(out)} is a non-empty folder that is not a MEDS conversion "
                                         rf"\(.*{named}\).*overwrite=True"):
        convert_meds(fresh.root, out, labels=fresh.tte_labels)
    assert _files(out) == before and _spill_dirs(tmp_path) == []
    convert_meds(fresh.root, out, labels=fresh.tte_labels, overwrite=True)  # asked for: written, other files kept
    assert json.loads((out / "cohort.json").read_text())["source"]["format"] == "meds"
    assert (out / "ecg" / "records.csv").exists() and (out / "labels.parquet").read_bytes() != b"theirs"


def test_out_is_a_file_refused_before_reading_inputs(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("user data")
    # src and labels do not exist: the out check comes first
    for out in (path, path / "cohort"):
        with pytest.raises(ValueError, match=rf"out '{_at(out)}'.* exists and is not a directory"):
            convert_meds(tmp_path / "no_src", out, labels=tmp_path / "no_labels.parquet", overwrite=True)
    assert path.read_text() == "user data"


def test_failed_conversion_keeps_the_previous_cohort(fresh, tmp_path):
    out = convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)
    (out / "mine.txt").write_text("keep")
    before = _files(out)
    path = _edit(fresh, lambda d: pl.concat([d, d.filter(pl.col("code") == "HEIGHT").head(1)
                                             .with_columns(pl.col("numeric_value") + 1)]))
    with pytest.raises(ValueError, match=rf"{_at(path)}: subject 1000 has conflicting static values for .*HEIGHT"):
        convert_meds(fresh.root, out, labels=fresh.tte_labels)
    assert _files(out) == before and _spill_dirs(tmp_path) == []


def test_rewrite_replaces_the_owned_files_and_keeps_others(fresh, tmp_path):
    out = convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)
    (out / "mine.txt").write_text("keep")
    # a lookback of ~4 ms keeps no timed event: the new cohort has no timeseries / notes file
    convert_meds(fresh.root, out, labels=fresh.tte_labels, max_hours_before=1e-6)
    assert sorted(p.name for p in out.iterdir()) == ["cohort.json", "labels.parquet", "mine.txt", "splits.csv",
                                                      "tabular.parquet"]
    assert json.loads((out / "cohort.json").read_text())["modalities"] == ["tabular"]
    assert _spill_dirs(tmp_path) == []


# ---------------------------------------------------------------------- labels
def test_label_file_without_rows(fresh, tmp_path):
    pl.read_parquet(fresh.tte_labels).head(0).write_parquet(fresh.tte_labels)
    with pytest.raises(ValueError, match=rf"{_at(fresh.tte_labels)}: no label rows"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)
    assert not (tmp_path / "c").exists()


def test_empty_label_folder(fresh, tmp_path):
    (tmp_path / "labels").mkdir()
    with pytest.raises(ValueError, match=rf"labels {_at(tmp_path / 'labels')}: the folder holds no label parquet file"):
        convert_meds(fresh.root, tmp_path / "c", labels=tmp_path / "labels")


# ---------------------------------------------------------------------- time zones
def test_time_zone_aware_shard(fresh, tmp_path):
    path = _edit(fresh, lambda d: d.with_columns(pl.col("time").dt.replace_time_zone("America/New_York")))
    with pytest.raises(ValueError, match=rf"{_at(path)}: column 'time' has time zone 'America/New_York'.*naive"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_time_zone_aware_labels(fresh, tmp_path):
    lab = pl.read_parquet(fresh.tte_labels)
    lab.with_columns(pl.col("prediction_time").dt.replace_time_zone("UTC")).write_parquet(fresh.tte_labels)
    with pytest.raises(ValueError, match=rf"{_at(fresh.tte_labels)}: column 'prediction_time' has time zone 'UTC'"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


# ---------------------------------------------------------------------- MEDS_BIRTH
def test_birth_after_prediction_time(fresh, tmp_path):
    late = BIRTH & (pl.col("subject_id") == 1003)
    path = _edit(fresh, lambda d: d.with_columns(
        time=pl.when(late).then(pl.col("time") + pl.duration(days=365 * 200)).otherwise(pl.col("time"))))
    with pytest.raises(ValueError, match=rf"{_at(path)}: subject 1003 has MEDS_BIRTH at .* after its prediction_time"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_two_different_birth_times(fresh, tmp_path):
    one = BIRTH & (pl.col("subject_id") == 1003)
    path = _edit(fresh, lambda d: pl.concat([d, d.filter(one)]))  # the same birth twice: fine
    ref = pl.read_parquet(convert_meds(fresh.root, tmp_path / "same", labels=fresh.tte_labels) / "tabular.parquet")
    assert ref["age_years"].is_not_null().all()
    _edit(fresh, lambda d: pl.concat([d, d.filter(one).head(1).with_columns(pl.col("time") - timedelta(days=3650))]))
    with pytest.raises(ValueError, match=rf"{_at(path)}: subject 1003 has 2 different MEDS_BIRTH times"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_birth_without_time(fresh, tmp_path):
    path = _edit(fresh, lambda d: d.with_columns(
        time=pl.when(BIRTH & (pl.col("subject_id") == 1000)).then(None).otherwise(pl.col("time"))))
    with pytest.raises(ValueError, match=rf"{_at(path)}: MEDS_BIRTH row\(s\) with a null 'time' for subject\(s\) "
                                         r"\[1000\]"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


# ---------------------------------------------------------------------- static codes
def test_static_code_age_years_clashes_with_birth(fresh, tmp_path):
    def add_age(d):
        return pl.concat([d, d.filter(pl.col("code") == "HEIGHT").with_columns(code=pl.lit("age_years"),
                                                                               numeric_value=pl.lit(5.0, pl.Float32))])

    path = _edit(fresh, add_age)
    with pytest.raises(ValueError, match=rf"{_at(path)}: static code 'age_years' .*clash.*MEDS_BIRTH"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)
    # without any MEDS_BIRTH row nothing clashes: the static value is the column
    for shard in sorted((fresh.root / "data").rglob("*.parquet")):
        pl.read_parquet(shard).filter(~BIRTH).write_parquet(shard)
    tab = pl.read_parquet(convert_meds(fresh.root, tmp_path / "ok", labels=fresh.tte_labels) / "tabular.parquet")
    assert tab.filter(pl.col("patient_id").str.starts_with("1000@"))["age_years"].to_list() == [5.0, 5.0]


def test_indicator_is_zero_for_subjects_with_other_static_rows(fresh, tmp_path):
    """1.0 = has the code; 0.0 = has other static rows but not this code; null = no static row."""
    def edit(d):
        smoker = d.filter((pl.col("code") == "HEIGHT") & (pl.col("subject_id") == 1000)).with_columns(
            code=pl.lit("SMOKER"), numeric_value=pl.lit(None, pl.Float32))
        no_static = (pl.col("subject_id") == 1003) & pl.col("time").is_null()  # keeps its MEDS_BIRTH (age_years)
        return pl.concat([d, smoker]).filter(~no_static)

    _edit(fresh, edit)
    tab = pl.read_parquet(convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels) / "tabular.parquet")
    subject = pl.col("patient_id").str.split("@").list.first().cast(pl.Int64)
    got = dict(tab.group_by(subject.alias("s")).agg(pl.col("SMOKER").unique()).iter_rows())
    assert got == {1000: [1.0], 1001: [0.0], 1002: [0.0], 1003: [None], 1004: [0.0], 1005: [0.0]}
    assert tab["age_years"].is_not_null().all() and len(tab) == 8


def test_static_text_value_is_warned(fresh, tmp_path):
    def add_text(d):
        bio = d.filter((pl.col("code") == "HEIGHT") & (pl.col("subject_id") == 1003)).with_columns(
            code=pl.lit("BIO//NOTE"), numeric_value=pl.lit(None, pl.Float32), text_value=pl.lit("lives alone"))
        return pl.concat([d, bio])

    path = _edit(fresh, add_text)
    with pytest.warns(UserWarning, match=rf"{_at(path)}: 1 static row\(s\) .*text_value, which is not used "
                                         r"\(code\(s\) \['BIO//NOTE'\], subject\(s\) \[1003\]\)"):
        out = convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)
    tab = pl.read_parquet(out / "tabular.parquet")  # as documented: the code alone, a level of BIO
    assert tab.filter(pl.col("BIO").is_not_null())["patient_id"].str.starts_with("1003@").all()
    assert not pl.read_parquet(out / "notes.parquet")["text"].str.contains("lives alone").any()


def test_event_before_birth(fresh, tmp_path):
    converted = convert_meds(fresh.root, tmp_path / "ok", labels=fresh.tte_labels)  # the pristine copy converts
    assert (converted / "timeseries.parquet").exists()
    early = BIRTH & (pl.col("subject_id") == 1003)  # birth moved past the subject's events, before its prediction
    shard = pl.read_parquet(_shard(fresh))
    events = shard.filter((pl.col("subject_id") == 1003) & ~BIRTH & pl.col("time").is_not_null())["time"]
    pred = pl.read_parquet(fresh.tte_labels).filter(pl.col("subject_id") == 1003)["prediction_time"].min()
    moved = min(pred, events.max()) - timedelta(seconds=1)
    path = _edit(fresh, lambda d: d.with_columns(time=pl.when(early).then(pl.lit(moved)).otherwise(pl.col("time"))))
    with pytest.raises(ValueError, match=rf"{_at(path)}: subject 1003 has MEDS_BIRTH at .*, after one of its events"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)
    assert not (tmp_path / "c").exists()
