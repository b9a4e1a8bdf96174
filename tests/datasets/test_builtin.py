"""The built-in breast cancer cohort: layout, splits and values against scikit-survival's loader."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sksurv")

from clinfuse.datasets.builtin import write_breast_cancer_cohort  # noqa: E402
from clinfuse.datasets.cohort import Cohort  # noqa: E402
from clinfuse.datasets.datamodule import ClinicalDataModule  # noqa: E402

N_PATIENTS, N_FOLDS = 198, 5


@pytest.fixture(scope="module")
def sksurv_data():
    from sksurv.datasets import load_breast_cancer

    return load_breast_cancer()


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory):
    return write_breast_cancer_cohort(tmp_path_factory.mktemp("bc") / "fold0", fold=0, n_folds=N_FOLDS, seed=0)


def test_loads_with_datamodule_and_spec_sizes(cohort_root):
    dm = ClinicalDataModule(root=str(cohort_root), batch_size=32)
    spec = dm.spec
    assert set(spec) == {"tabular", "genomics"}
    tab = spec["tabular"]
    assert sorted(tab["numeric_features"] + tab["categorical_features"]) == ["age", "er", "grade", "size"]
    assert tab["numeric_features"] == ["age", "size"]
    assert tab["categorical_features"] == ["er", "grade"]
    # er: positive/negative; grade: 3 known levels (+ missing + unseen)
    assert tab["categorical_cardinalities"] == [4, 5]
    assert len(spec["genomics"]["genes"]) == 76
    assert spec["genomics"]["mutations"] == []
    assert spec["genomics"]["gene_groups"] == {"probes": list(range(76))}
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"]["genomics"]["expression"].shape == (32, 76)
    assert bool(batch["inputs"]["tabular"]["present"].all())
    info = json.loads((cohort_root / "cohort.json").read_text())
    assert info["format_version"] == 1 and info["modalities"] == ["tabular", "genomics"]
    assert not (cohort_root / "oracle.parquet").exists()


def test_every_patient_in_exactly_one_split(cohort_root):
    cohort = Cohort.load(cohort_root)
    splits = pd.read_csv(cohort_root / "splits.csv", dtype=str)
    assert len(splits) == N_PATIENTS and splits["patient_id"].is_unique
    assert sum(len(v) for v in cohort.splits.values()) == N_PATIENTS
    assert set().union(*map(set, cohort.splits.values())) == set(cohort.patient_ids)
    n_test = len(cohort.splits["test"])
    assert abs(n_test - N_PATIENTS / N_FOLDS) <= 1
    assert abs(len(cohort.splits["val"]) - 0.15 * (N_PATIENTS - n_test)) <= 1
    # stratified by event: every split holds events
    events = cohort.labels.set_index("patient_id")["event"]
    for ids in cohort.splits.values():
        assert 0 < events.loc[ids].sum() < len(ids)


def test_test_folds_partition_the_cohort(tmp_path):
    tests = []
    for fold in range(N_FOLDS):
        root = write_breast_cancer_cohort(tmp_path / f"f{fold}", fold=fold, n_folds=N_FOLDS, seed=0)
        s = pd.read_csv(root / "splits.csv", dtype=str)
        tests.append(set(s.loc[s["split"] == "test", "patient_id"]))
    assert sum(len(t) for t in tests) == N_PATIENTS
    assert set().union(*tests) == {f"bc{i:03d}" for i in range(N_PATIENTS)}


def test_seed_changes_folds_and_is_reproducible(tmp_path):
    a = pd.read_csv(write_breast_cancer_cohort(tmp_path / "a", seed=1) / "splits.csv")
    b = pd.read_csv(write_breast_cancer_cohort(tmp_path / "b", seed=1) / "splits.csv")
    c = pd.read_csv(write_breast_cancer_cohort(tmp_path / "c", seed=2) / "splits.csv")
    assert a.equals(b)
    assert not a.equals(c)


def test_values_equal_sksurv_loader(cohort_root, sksurv_data):
    x, y = sksurv_data
    tab = pd.read_parquet(cohort_root / "tabular.parquet").set_index("patient_id")
    gen = pd.read_csv(cohort_root / "genomics.csv", dtype={"patient_id": str}, float_precision="round_trip").set_index("patient_id")
    lab = pd.read_parquet(cohort_root / "labels.parquet").set_index("patient_id")
    probes = [c for c in x.columns if c not in ("age", "er", "grade", "size")]
    assert len(probes) == 76
    assert list(gen.columns) == [f"{p}_rnaseq" for p in probes]
    groups = pd.read_csv(cohort_root / "gene_groups.csv")
    assert groups["gene"].tolist() == probes and set(groups["group"]) == {"probes"}
    for i in (0, 17, 197):
        pid = f"bc{i:03d}"
        assert tab.loc[pid, "age"] == x.loc[i, "age"]
        assert tab.loc[pid, "size"] == x.loc[i, "size"]
        assert tab.loc[pid, "er"] == x.loc[i, "er"]
        assert tab.loc[pid, "grade"] == x.loc[i, "grade"]
        np.testing.assert_array_equal(gen.loc[pid].to_numpy(), x.loc[i, probes].to_numpy(dtype=float))
        assert lab.loc[pid, "time"] == y["t.tdm"][i]
        assert lab.loc[pid, "event"] == int(y["e.tdm"][i])
        assert lab.loc[pid, "binary"] == int(y["e.tdm"][i] and y["t.tdm"][i] <= 5 * 365.25)
    assert (lab["time"] > 0).all()
    # sksurv's "unkown" grade becomes a missing value and multiclass 3
    unknown = np.flatnonzero(x["grade"].astype(str) == "unkown")
    assert len(unknown) == 2
    for i in unknown:
        assert pd.isna(tab.loc[f"bc{i:03d}", "grade"]) and lab.loc[f"bc{i:03d}", "multiclass"] == 3
    order = {"well differentiated": 0, "intermediate": 1, "poorly differentiated": 2}
    known = x["grade"].astype(str) != "unkown"
    expected = x.loc[known, "grade"].astype(str).map(order).to_numpy()
    np.testing.assert_array_equal(lab["multiclass"].to_numpy()[known.to_numpy()], expected)


@pytest.mark.parametrize("fold, n_folds", [(5, 5), (-1, 5), (0, 1), (0, 500)])
def test_bad_fold_arguments_raise(tmp_path, fold, n_folds):
    with pytest.raises(ValueError, match="fold"):
        write_breast_cancer_cohort(tmp_path / "x", fold=fold, n_folds=n_folds)


def test_non_integer_fold_raises(tmp_path):
    with pytest.raises(TypeError, match="fold"):
        write_breast_cancer_cohort(tmp_path / "x", fold=1.0)
