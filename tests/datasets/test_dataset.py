"""Cohort loading/validation, the torch Dataset and the collate function on the tiny cohort."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.dataset import ClinicalDataset, Collator, collate_batch

MODALITIES = ["tabular", "timeseries", "ecg", "notes", "wsi", "genomics"]


@pytest.fixture
def cohort(tiny):
    return Cohort.load(tiny.root).fit()


def batch_of(cohort, ids):
    """Collate the given patients, whatever their split (eval-mode items)."""
    by_split = {s: ClinicalDataset(cohort, s) for s in cohort.splits}
    items = [ds[ds.patient_ids.index(p)] for p in ids for ds in by_split.values() if p in ds.patient_ids]
    return collate_batch(items, cohort)


def test_cohort_splits_labels_presence(tiny, cohort):
    assert cohort.modalities == MODALITIES and cohort.n_classes == 3
    assert cohort.splits == {"train": tiny.train, "val": tiny.val, "test": tiny.test}
    sets = [set(v) for v in cohort.splits.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(cohort.patient_ids)
    presence = cohort.presence()
    assert not presence.loc[tiny.no_modality].any()
    assert presence["tabular"].sum() == len(tiny.tabular) and presence["ecg"].sum() == 3
    assert presence.loc["p09"].tolist() == [False, True, False, False, False, False]
    assert cohort.oracle is not None and len(cohort.oracle) == 12


def test_batch_matches_format_and_labels(tiny, cohort, assert_batch_format):
    ds = ClinicalDataset(cohort, "train")
    assert len(ds) == 8 and ds.training
    batch = Collator(cohort.readers)([ds[i] for i in range(len(ds))])
    assert_batch_format(batch, cohort.spec(), 3)
    assert batch["patient_id"] == tiny.train
    expected = tiny.labels.set_index("patient_id").loc[tiny.train]
    np.testing.assert_array_equal(batch["labels"]["time"].numpy(), expected["time"].to_numpy(np.float32))
    np.testing.assert_array_equal(batch["labels"]["multiclass"].numpy(), expected["multiclass"].to_numpy())
    np.testing.assert_array_equal(batch["labels"]["event"].numpy(), expected["event"].to_numpy(np.float32))
    row = tiny.train.index(tiny.no_modality)  # the patient with no modality is in the batch
    assert not any(batch["inputs"][m]["present"][row] for m in MODALITIES)
    presence = cohort.presence().loc[tiny.train]
    for m in MODALITIES:
        assert batch["inputs"][m]["present"].tolist() == presence[m].tolist()


def test_absent_patients_are_padding(cohort, assert_batch_format):
    batch = batch_of(cohort, ["p06", "p09"])  # p09 has time series only
    assert_batch_format(batch, cohort.spec(), 3)
    ins = batch["inputs"]
    assert ins["timeseries"]["present"].tolist() == [False, True]
    for m in ("tabular", "ecg", "notes", "wsi", "genomics"):
        assert not ins[m]["present"].any()
        assert all(not v.any() for v in ins[m].values()), m
    assert ins["wsi"]["features"].shape == (2, 1, 4) and ins["notes"]["token_ids"].shape == (2, 1, 1)
    assert not ins["timeseries"]["mask"][0].any() and ins["timeseries"]["mask"][1].all()


def test_present_patient_values_reach_the_batch(cohort):
    batch = batch_of(cohort, ["p01", "p00"])
    p00 = cohort.readers["wsi"].get("p00")["features"]
    np.testing.assert_array_equal(batch["inputs"]["wsi"]["features"][1, : len(p00)].numpy(), p00)
    assert batch["inputs"]["wsi"]["mask"].sum(1).tolist() == [0, 12]
    ts = cohort.readers["timeseries"].get("p01")
    np.testing.assert_array_equal(batch["inputs"]["timeseries"]["values"][0, : len(ts["values"])].numpy(), ts["values"])


def test_state_dict_round_trip(tiny, cohort):
    state = json.loads(json.dumps(cohort.state_dict()))  # plain JSON
    restored = Cohort.load(tiny.root).load_state_dict(state)
    assert restored.spec() == cohort.spec()
    for m in MODALITIES:
        for pid in cohort.patient_ids:
            a, b = cohort.readers[m].get(pid), restored.readers[m].get(pid)
            assert (a is None) == (b is None)
            if a is not None:
                assert all(np.array_equal(a[k], b[k]) for k in a), (m, pid)


@pytest.mark.parametrize(
    "column, value, match",
    [("time", 0.0, r"labels\.parquet.*'time'.*> 0.*p04"), ("time", -2.0, r"labels\.parquet.*'time'.*p04"),
     ("binary", 2, r"labels\.parquet.*'binary'.*p04"), ("multiclass", 3, r"labels\.parquet.*'multiclass'.*p04"),
     ("event", np.nan, r"labels\.parquet.*'event'.*p04")],
)
def test_bad_labels(tiny, column, value, match):
    df = tiny.labels.astype({column: float})
    df.loc[df["patient_id"] == "p04", column] = value
    df.to_parquet(tiny.root / "labels.parquet", index=False)
    with pytest.raises(ValueError, match=match):
        Cohort.load(tiny.root)


def test_bad_labels_columns_and_duplicates(tiny):
    pd.concat([tiny.labels, tiny.labels.iloc[[2]]]).to_parquet(tiny.root / "labels.parquet", index=False)
    with pytest.raises(ValueError, match=r"labels\.parquet.*duplicate.*p02"):
        Cohort.load(tiny.root)
    tiny.labels.drop(columns="event").to_parquet(tiny.root / "labels.parquet", index=False)
    with pytest.raises(ValueError, match=r"labels\.parquet.*'event'"):
        Cohort.load(tiny.root)


def test_bad_splits(tiny):
    tiny.splits.iloc[1:].to_csv(tiny.root / "splits.csv", index=False)
    with pytest.raises(ValueError, match=r"splits\.csv.*p00.*no split"):
        Cohort.load(tiny.root)
    tiny.splits.replace({"split": {"val": "holdout"}}).to_csv(tiny.root / "splits.csv", index=False)
    with pytest.raises(ValueError, match=r"splits\.csv.*holdout"):
        Cohort.load(tiny.root)


def test_missing_folder_and_unavailable_modality(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"clinfuse synth --out .*nowhere"):
        Cohort.load(tmp_path / "nowhere")
    shutil.rmtree(tiny.root / "wsi")
    assert Cohort.available_modalities(tiny.root) == ["tabular", "timeseries", "ecg", "notes", "genomics"]
    with pytest.raises(ValueError, match=r"'wsi'.*slides\.csv.*available.*'genomics'"):
        Cohort.load(tiny.root, ["tabular", "wsi"])
    with pytest.raises(ValueError, match=r"unknown modality 'xray'"):
        Cohort.load(tiny.root, ["xray"])
    assert Cohort.load(tiny.root).modalities == ["tabular", "timeseries", "ecg", "notes", "genomics"]


def test_reader_rows_of_unlabelled_patient(tiny):
    df = tiny.genomics.copy()
    df.loc[0, "patient_id"] = "stranger"
    df.to_csv(tiny.root / "genomics.csv", index=False)
    with pytest.raises(ValueError, match=r"genomics\.csv.*stranger.*labels"):
        Cohort.load(tiny.root, ["genomics"])


def test_unfitted_reader_refuses(tiny):
    cohort = Cohort.load(tiny.root, ["tabular"])
    with pytest.raises(ValueError, match="fit"):
        cohort.readers["tabular"].get("p00")
