"""Built-in sksurv survival cohorts: values against scikit-survival's loaders, caching, configs by name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sksurv")

import sksurv.datasets  # noqa: E402

from clinfuse.datasets.builtin_tabular import (  # noqa: E402
    BUILTIN_COHORTS,
    SOURCES,
    builtin_cohort,
    write_tabular_survival_cohort,
)

REPO = Path(__file__).resolve().parents[2]
# independent of SOURCES: (loader, event field, time field, #patients, #covariates in sksurv, leaky column)
EXPECTED = {
    "whas500": ("load_whas500", "fstat", "lenfol", 500, 14, "los"),
    "gbsg2": ("load_gbsg2", "cens", "time", 686, 8, None),
    "veterans": ("load_veterans_lung_cancer", "Status", "Survival_in_days", 137, 6, None),
    "flchain": ("load_flchain", "death", "futime", 7874, 9, "chapter"),
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def written(request, tmp_path_factory):
    name = request.param
    out = write_tabular_survival_cohort(name, tmp_path_factory.mktemp(name), fold=1, n_folds=5, seed=0)
    x, y = getattr(sksurv.datasets, EXPECTED[name][0])()
    return name, out, x, y


def test_labels_match_sksurv_arrays(written):
    name, out, x, y = written
    _, event_field, time_field, n, n_cov, _ = EXPECTED[name]
    labels = pd.read_parquet(out / "labels.parquet")
    assert len(labels) == n == len(y) and labels["patient_id"].is_unique
    assert labels["event"].sum() == y[event_field].sum()
    np.testing.assert_array_equal(labels["event"], y[event_field].astype(int))
    expected_time = np.where(y[time_field] == 0, 0.5, y[time_field])  # all four count days already
    np.testing.assert_allclose(labels["time"], expected_time)
    assert (labels["time"] > 0).all()
    if name == "flchain":
        assert (y[time_field] == 0).sum() == 3 and y[event_field][y[time_field] == 0].all()
    assert "multiclass" not in labels


def test_binary_only_where_determined(written):
    name, out, _, y = written
    _, event_field, time_field, *_ = EXPECTED[name]
    labels = pd.read_parquet(out / "labels.parquet")
    event, t = y[event_field], y[time_field]
    if name == "whas500":
        assert not (~event & (t < 365)).any()  # nobody censored before the 1-year horizon
        np.testing.assert_array_equal(labels["binary"], (event & (t <= 365)).astype(int))
    else:
        assert (~event & (t < 365)).any() and "binary" not in labels  # early censoring: no honest binary


def test_covariates_match_sksurv_without_leaky_columns(written):
    name, out, x, _ = written
    *_, n_cov, leak = EXPECTED[name]
    assert x.shape[1] == n_cov
    table = pd.read_parquet(out / "tabular.parquet").set_index("patient_id")
    expected_cols = [c for c in x.columns if c != leak]
    assert sorted(table.columns) == sorted(expected_cols)
    for col in expected_cols:
        if str(x[col].dtype) == "category":
            assert col in SOURCES[name].categorical
            expected = x[col].astype(object).where(x[col].notna(), None).tolist()
            assert table[col].astype(object).where(table[col].notna(), None).tolist() == expected
        else:
            np.testing.assert_array_equal(table[col].to_numpy(), x[col].to_numpy(float))


def test_splits_are_a_stratified_fold(written):
    name, out, _, _ = written
    splits = pd.read_csv(out / "splits.csv", dtype=str)
    n = EXPECTED[name][3]
    assert len(splits) == n and splits["patient_id"].is_unique
    assert abs((splits["split"] == "test").sum() - n / 5) <= 1


def test_whas500_los_leaks_the_outcome():
    # why `los` is dropped: every in-hospital death has los == lenfol
    x, y = sksurv.datasets.load_whas500()
    same = x["los"].to_numpy() == y["lenfol"]
    assert same.sum() == 40 and y["fstat"][same].all()


def test_builtin_cohort_caches_under_clinfuse_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINFUSE_CACHE", str(tmp_path))
    out = builtin_cohort("veterans", fold=2, n_folds=4, seed=3)
    assert out == tmp_path / "builtin" / "veterans-f2of4-s3"
    before = os.stat(out / "labels.parquet").st_mtime_ns
    assert builtin_cohort("veterans", fold=2, n_folds=4, seed=3) == out
    assert os.stat(out / "labels.parquet").st_mtime_ns == before
    assert not [p for p in (tmp_path / "builtin").iterdir() if p.name.startswith(".")]  # no temp folders left


def test_builtin_breast_cancer_by_name(tmp_path):
    out = builtin_cohort("breast_cancer", tmp_path / "bc")
    info = pd.read_json(out / "cohort.json", typ="series")
    assert info["source"]["format"] == "sksurv" and "GSE7390" in info["dataset"]
    assert len(pd.read_parquet(out / "labels.parquet")) == 198


def test_unknown_builtin_name_lists_the_cohorts():
    with pytest.raises(ValueError, match="whas500.*gbsg2.*veterans.*flchain.*cgvhd"):
        builtin_cohort("whas501")
    assert set(BUILTIN_COHORTS) == {"breast_cancer", *EXPECTED, "cgvhd"}


def test_cgvhd_competing_risks_labels_match_sksurv(tmp_path):
    out = write_tabular_survival_cohort("cgvhd", tmp_path / "cgvhd", fold=0, n_folds=5, seed=0)
    x, y = sksurv.datasets.load_cgvhd()
    labels = pd.read_parquet(out / "labels.parquet")
    np.testing.assert_array_equal(labels["cause"], y["status"])  # 0 censored, 1 cGvHD, 2 relapse, 3 death
    np.testing.assert_array_equal(labels["event"], (y["status"] > 0).astype(int))
    np.testing.assert_allclose(labels["time"], y["ftime"] * 365.25)  # years -> days
    table = pd.read_parquet(out / "tabular.parquet")
    assert sorted(table.columns) == ["age", "dx", "extent", "patient_id", "tx"] and len(table) == len(x) == 100
    info = pd.read_json(out / "cohort.json", typ="series")
    assert info["labels"]["cause"] == "0 censored, 1 cGvHD, 2 relapse, 3 death"
    from clinfuse.datasets.cohort import Cohort

    assert Cohort.load(out, ["tabular"]).labels["cause"].max() == 3  # loads with the cause checks


def test_datamodule_accepts_builtin_root(tmp_path, monkeypatch):
    from clinfuse.datasets.datamodule import ClinicalDataModule

    monkeypatch.setenv("CLINFUSE_CACHE", str(tmp_path))
    dm = ClinicalDataModule(root="builtin:veterans", batch_size=16, synth_if_missing=True)
    spec = dm.spec
    assert list(spec) == ["tabular"]
    assert spec["tabular"]["categorical_features"] == ["Celltype", "Prior_therapy", "Treatment"]
    assert spec["tabular"]["categorical_cardinalities"] == [6, 4, 4]  # levels + missing + unseen
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"]["tabular"]["numeric"].shape == (16, 3)
    assert not Path("builtin:veterans").exists()  # nothing synthesised at the literal path


@pytest.mark.parametrize(
    "name", ["veterans", *(pytest.param(n, marks=pytest.mark.slow) for n in BUILTIN_COHORTS if n != "veterans")]
)
def test_data_config_trains_one_batch(name, tmp_path, monkeypatch):
    from clinfuse.experiments.cli import cli_main

    monkeypatch.setenv("CLINFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    configs = [REPO / "experiments" / "quickstart.yaml", REPO / "experiments" / "configs" / "data" / f"{name}.yaml"]
    args = [a for c in configs for a in ("--config", str(c))]
    cli = cli_main(["fit", *args, "--data.batch_size=32", "--trainer.fast_dev_run=1", "--trainer.logger=false"])
    assert cli.trainer.state.finished
    assert cli.datamodule.cohort.root == tmp_path / "cache" / "builtin" / f"{name}-f0of5-s0"
