"""Optional label columns: any subset of binary / multiclass / time+event, extra label_<name> columns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.dataset import ClinicalDataset, Collator


def _drop_n_classes(root):
    info = json.loads((root / "cohort.json").read_text())
    info.pop("n_classes")
    (root / "cohort.json").write_text(json.dumps(info))


def test_binary_only_cohort_batches_only_binary(tiny):
    tiny.labels[["patient_id", "binary"]].to_parquet(tiny.root / "labels.parquet", index=False)
    _drop_n_classes(tiny.root)
    cohort = Cohort.load(tiny.root, ["tabular"]).fit()
    assert cohort.label_names == ["binary"] and cohort.n_classes == 0
    ds = ClinicalDataset(cohort, "val")
    batch = Collator(cohort.readers)([ds[i] for i in range(len(ds))])
    assert list(batch["labels"]) == ["binary"]
    assert batch["labels"]["binary"].dtype == torch.float32
    assert batch["labels"]["binary"].tolist() == [0.0, 1.0]  # p08, p09: i % 2


def test_survival_with_extra_float_label(tiny):
    df = tiny.labels[["patient_id", "time", "event"]].copy()
    df["label_los"] = np.arange(12, dtype=np.float64) / 4.0
    df["note"] = "free text"  # non-numeric extras stay in Cohort.labels only
    df.to_parquet(tiny.root / "labels.parquet", index=False)
    cohort = Cohort.load(tiny.root, ["tabular"]).fit()
    assert list(cohort.labels.columns) == ["patient_id", "time", "event", "label_los", "note"]
    ds = ClinicalDataset(cohort, "test")  # p10, p11
    batch = Collator(cohort.readers)([ds[0], ds[1]])
    assert set(batch["labels"]) == {"time", "event", "label_los"}
    assert batch["labels"]["time"].tolist() == [11.0, 12.0]
    assert batch["labels"]["event"].tolist() == [1.0, 0.0]
    assert batch["labels"]["label_los"].tolist() == [2.5, 2.75]


def test_multiclass_only_counts_classes(tiny):
    tiny.labels[["patient_id", "multiclass"]].to_parquet(tiny.root / "labels.parquet", index=False)
    _drop_n_classes(tiny.root)
    cohort = Cohort.load(tiny.root, ["tabular"])
    assert cohort.n_classes == 3  # max(i % 3) + 1


@pytest.mark.parametrize(
    "columns, match",
    [(["patient_id", "time"], r"labels\.parquet.*'time'.*without 'event'"),
     (["patient_id", "binary", "event"], r"labels\.parquet.*'event'.*without 'time'"),
     (["patient_id"], r"labels\.parquet.*no label column")],
)
def test_label_column_sets_rejected(tiny, columns, match):
    tiny.labels[columns].to_parquet(tiny.root / "labels.parquet", index=False)
    with pytest.raises(ValueError, match=match):
        Cohort.load(tiny.root)


def test_present_labels_stay_strict(tiny):
    df = tiny.labels[["patient_id", "binary"]].astype({"binary": float})
    df.loc[df["patient_id"] == "p03", "binary"] = 0.5
    df.to_parquet(tiny.root / "labels.parquet", index=False)
    with pytest.raises(ValueError, match=r"labels\.parquet.*'binary'.*p03"):
        Cohort.load(tiny.root)


def test_collator_rejects_mixed_label_sets(tiny):
    cohort = Cohort.load(tiny.root, ["tabular"]).fit()
    ds = ClinicalDataset(cohort, "train")
    a, b = ds[0], ds[1]
    b["labels"].pop("time")
    with pytest.raises(ValueError, match=r"p01.*labels"):
        Collator(cohort.readers)([a, b])
