"""MEDS converter in bounded memory: many sorting passes == one pass, on sorted, unsorted and
split-subject shards; row order contract; validation before anything is written; spill cleanup."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from clinfuse.datasets.meds import convert_meds
from clinfuse.datasets.meds_fixture import write_meds_fixture

FILES = ("labels.parquet", "tabular.parquet", "timeseries.parquet", "notes.parquet")
TINY_MB = 0.001  # a pass budget of ~330 bytes: one pass per bucket, hundreds of passes


@pytest.fixture
def meds(tmp_path):
    return write_meds_fixture(tmp_path / "src", n_subjects=40, seed=7, n_events_per_subject=12, n_train_shards=3)


def _shards(meds):
    return sorted((meds.root / "data").rglob("*.parquet"))


def _assert_same(a, b):
    """Two cohort folders hold the same files: values, dtypes (polars and pandas) and order
    (``cohort.json`` but the input fingerprint)."""
    for name in FILES:
        assert (a / name).exists() == (b / name).exists(), name
        if not (a / name).exists():
            continue
        x, y = pl.read_parquet(a / name), pl.read_parquet(b / name)
        assert x.schema == y.schema and x.equals(y), name
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
    assert (a / "splits.csv").read_text() == (b / "splits.csv").read_text()
    info = [json.loads((d / "cohort.json").read_text()) for d in (a, b)]
    for i in info:
        i.pop("source")
    assert info[0] == info[1]


def _assert_order(path):
    """Rows sorted by patient_id (string order), then time: each sample contiguous and time-sorted."""
    df = pl.read_parquet(path).with_columns(pl.col("patient_id").cast(pl.String))
    assert df.equals(df.sort("patient_id", "time", maintain_order=True))


def _spill_dirs(tmp_path) -> int:
    return len(list(tmp_path.glob(".*spill*")))


def _shuffle_shards(meds, seed=0):
    rng = np.random.default_rng(seed)
    for path in _shards(meds):
        df = pl.read_parquet(path)
        df[rng.permutation(len(df))].write_parquet(path, row_group_size=50)


def _split_subject_across_shards(meds) -> int:
    """Move every other timed row of the first subject of train/0 into train/1 (after its rows)."""
    a, b = meds.root / "data" / "train" / "0.parquet", meds.root / "data" / "train" / "1.parquet"
    da, db = pl.read_parquet(a), pl.read_parquet(b)
    subject = da["subject_id"][0]
    mine = pl.col("subject_id") == subject
    moved = da.with_row_index().filter(mine & pl.col("time").is_not_null() & (pl.col("index") % 2 == 0)).drop("index")
    da.with_row_index().filter(~(mine & pl.col("time").is_not_null() & (pl.col("index") % 2 == 0))).drop("index").write_parquet(a)
    pl.concat([db, moved]).write_parquet(b)
    return int(subject)


@pytest.mark.parametrize("lookback", [None, 30.0])
def test_many_passes_equal_one_pass(meds, tmp_path, lookback):
    one = convert_meds(meds.root, tmp_path / "one", labels=meds.tte_labels, max_hours_before=lookback)
    many = convert_meds(meds.root, tmp_path / "many", labels=meds.tte_labels, max_hours_before=lookback,
                        memory_mb=TINY_MB)
    _assert_same(one, many)
    for name in ("timeseries.parquet", "notes.parquet"):
        _assert_order(many / name)
        # several row groups, and the patient_id dictionary of each holds only its own ids
        assert pq.ParquetFile(many / name).metadata.num_row_groups >= 1
    assert pd.read_parquet(many / "timeseries.parquet")["patient_id"].dtype == "category"
    assert _spill_dirs(tmp_path) == 0  # the spill folder is gone


def test_unsorted_shards_and_split_subject(meds, tmp_path):
    """Unsorted shards (many row groups) and a subject whose rows lie in two shards give the same
    events as the sorted dataset, in the same order (ties: the shards' row order)."""
    sorted_out = convert_meds(meds.root, tmp_path / "sorted", labels=meds.tte_labels, memory_mb=TINY_MB)
    _shuffle_shards(meds)
    shuffled = convert_meds(meds.root, tmp_path / "shuffled", labels=meds.tte_labels, memory_mb=TINY_MB)
    one = convert_meds(meds.root, tmp_path / "shuffled1", labels=meds.tte_labels)
    _assert_same(one, shuffled)
    for name in ("timeseries.parquet", "notes.parquet"):
        _assert_order(shuffled / name)
        # no ties in the fixture's timed rows of one sample, so the order is fully determined
        assert pl.read_parquet(sorted_out / name).equals(pl.read_parquet(shuffled / name))
    subject = _split_subject_across_shards(meds)
    split = convert_meds(meds.root, tmp_path / "split", labels=meds.tte_labels, memory_mb=TINY_MB)
    _assert_same(convert_meds(meds.root, tmp_path / "split1", labels=meds.tte_labels), split)
    ts = pl.read_parquet(split / "timeseries.parquet").with_columns(pl.col("patient_id").cast(pl.String))
    mine = ts.filter(pl.col("patient_id").str.starts_with(f"{subject}@"))
    assert len(mine) and mine.equals(
        pl.read_parquet(sorted_out / "timeseries.parquet").with_columns(pl.col("patient_id").cast(pl.String))
        .filter(pl.col("patient_id").str.starts_with(f"{subject}@")))


def test_ties_keep_shard_row_order(meds, tmp_path):
    """Equal times of one sample keep the shards' row order, across shards and across passes."""
    a, b = meds.root / "data" / "train" / "0.parquet", meds.root / "data" / "train" / "1.parquet"
    da = pl.read_parquet(a)
    subject = int(da["subject_id"][0])
    t0 = da.filter((pl.col("subject_id") == subject) & (pl.col("code") == "ADMISSION"))["time"][0]
    extra = pl.DataFrame({"subject_id": [subject] * 4, "time": [t0] * 4, "code": ["LAB//X"] * 4,
                          "numeric_value": [4.0, 3.0, 2.0, 1.0], "text_value": [None] * 4},
                         schema=da.schema)
    pl.concat([da, extra[:2]]).write_parquet(a)  # values 4, 3 in train/0 ...
    pl.concat([pl.read_parquet(b), extra[2:]]).write_parquet(b)  # ... then 2, 1 in train/1 (sorted after)
    for mb in (None, TINY_MB):
        out = convert_meds(meds.root, tmp_path / f"c{mb}", labels=meds.tte_labels, **({} if mb is None else {"memory_mb": mb}))
        ts = pd.read_parquet(out / "timeseries.parquet")
        got = ts[ts["patient_id"].astype(str).str.startswith(f"{subject}@") & (ts["variable"] == "LAB//X")]
        n_samples = got["patient_id"].nunique()
        assert n_samples >= 1 and got["value"].tolist() == [4.0, 3.0, 2.0, 1.0] * n_samples


def test_time_in_milliseconds(meds, tmp_path):
    ref = convert_meds(meds.root, tmp_path / "us", labels=meds.tte_labels)
    for path in _shards(meds):
        pl.read_parquet(path).with_columns(pl.col("time").cast(pl.Datetime("ms"))).write_parquet(path)
    _assert_same(ref, convert_meds(meds.root, tmp_path / "ms", labels=meds.tte_labels, memory_mb=TINY_MB))


def test_null_code_named_and_old_cohort_kept(meds, tmp_path):
    """Bad values are found during the one scan, before ``out`` is touched: a previous cohort stays."""
    out = convert_meds(meds.root, tmp_path / "c", labels=meds.tte_labels)
    before = (out / "timeseries.parquet").read_bytes()
    path = meds.root / "data" / "tuning" / "0.parquet"
    df = pl.read_parquet(path)
    who = int(df["subject_id"][5])
    df.with_columns(pl.when(pl.int_range(pl.len()).is_in([5, 6])).then(None).otherwise(pl.col("code")).alias("code")
                    ).write_parquet(path)
    with pytest.raises(ValueError, match=rf"tuning/0\.parquet: column 'code' is null in 2 row\(s\) \(subject\(s\) \[{who}"):
        convert_meds(meds.root, out, labels=meds.tte_labels)
    assert (out / "timeseries.parquet").read_bytes() == before and (out / "cohort.json").exists()
    assert _spill_dirs(tmp_path) == 0


def test_null_subject_id(meds, tmp_path):
    path = meds.root / "data" / "held_out" / "0.parquet"
    df = pl.read_parquet(path)
    df.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(None).otherwise(pl.col("subject_id")).alias("subject_id")
                    ).write_parquet(path)
    with pytest.raises(ValueError, match=r"held_out/0\.parquet: column 'subject_id' is null in 3 row\(s\)"):
        convert_meds(meds.root, tmp_path / "c", labels=meds.tte_labels)


def test_bad_memory_budget(meds, tmp_path):
    with pytest.raises(ValueError, match="memory_mb"):
        convert_meds(meds.root, tmp_path / "c", labels=meds.tte_labels, memory_mb=0)


def test_non_cohort_folder_refused_before_scan(meds, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="non-empty folder that is not a cohort"):
        convert_meds(meds.root, tmp_path / "c", labels=meds.tte_labels)
    assert _spill_dirs(tmp_path) == 0
