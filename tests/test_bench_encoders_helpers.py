"""The cohort edits and the --variant parsing of benchmarks/bench_encoders.py (they decide what a
benchmark row measures)."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.encoders.ft_tabular import FTTransformerEncoder


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_encoders.py"
    spec = importlib.util.spec_from_file_location("bench_encoders", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_off_unlabelled_moves_test_patients_out_of_every_table(bench, synthetic_cohort, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(synthetic_cohort, root)
    before = pd.read_csv(root / "splits.csv", dtype=str)
    events = pd.read_parquet(root / "timeseries.parquet")
    out = bench.split_off_unlabelled(root, 10)
    after = pd.read_csv(root / "splits.csv", dtype=str)
    moved = set(before["patient_id"]) - set(after["patient_id"])
    assert len(moved) == 10 and moved <= set(before.loc[before["split"] == "test", "patient_id"])
    assert after.merge(before, on="patient_id")["split_x"].eq(after.merge(before, on="patient_id")["split_y"]).all()
    for name in bench.PATIENT_TABLES:
        if (root / name).exists():
            table = pd.read_parquet(root / name) if name.endswith(".parquet") else pd.read_csv(root / name, dtype=str)
            assert not set(table["patient_id"].astype(str)) & moved, name
    unl = pd.read_parquet(out / "timeseries.parquet")
    assert set(unl["patient_id"]) <= moved
    pd.testing.assert_frame_equal(unl.reset_index(drop=True),
                                  events[events["patient_id"].isin(moved)].reset_index(drop=True))
    dm = ClinicalDataModule(str(root))  # the edited folder is still a valid cohort
    dm.setup("fit")
    assert len(dm.cohort.splits["test"]) == (before["split"] == "test").sum() - 10
    with pytest.raises(ValueError, match="only .* test patients"):
        bench.split_off_unlabelled(root, 10_000)


def test_noise_labs_are_uninformative_numeric_columns_with_missing_panels(bench, synthetic_cohort, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(synthetic_cohort, root)
    table = pd.read_parquet(root / "tabular.parquet")
    bench.add_noise_labs(root, 20)
    wide = pd.read_parquet(root / "tabular.parquet")
    pd.testing.assert_frame_equal(wide[table.columns], table)
    labs = wide[[f"lab_{i:03d}" for i in range(20)]]
    assert labs.dtypes.eq("float64").all()
    assert 0.2 < labs.isna().to_numpy().mean() < 0.5  # panels missing at 0.3 plus cells at 0.05
    within = labs[["lab_000", "lab_001"]].corr().iloc[0, 1]
    assert within > 0.3  # one panel shares a factor
    dm = ClinicalDataModule(str(root), modalities=["tabular"])
    dm.setup("fit")
    assert "lab_019" in dm.spec["tabular"]["numeric_features"]


@pytest.mark.parametrize("how", ["mcar", "abnormal"])
def test_blank_labs_blanks_only_lab_cells_and_abnormal_keeps_the_extremes(bench, synthetic_cohort, tmp_path, how):
    root = tmp_path / "cohort"
    shutil.copytree(synthetic_cohort, root)
    table = pd.read_parquet(root / "tabular.parquet")
    bench.blank_labs(root, how)
    out = pd.read_parquet(root / "tabular.parquet")
    untouched = [c for c in table.columns if c not in bench.LAB_COLUMNS]
    assert "age" in untouched
    pd.testing.assert_frame_equal(out[untouched], table[untouched])
    labs = list(bench.LAB_COLUMNS)
    kept = out[labs].notna().to_numpy()
    was = table[labs].notna().to_numpy()
    assert not (kept & ~was).any()  # nothing filled in
    np.testing.assert_array_equal(out[labs].to_numpy()[kept], table[labs].to_numpy()[kept])  # kept cells unchanged
    assert 0.3 < kept.sum() / was.sum() < 0.55
    z = (table["sodium"] - table["sodium"].mean()).abs() / table["sodium"].std()
    seen = out["sodium"].notna()
    gap = z[seen].mean() - z[~seen & table["sodium"].notna()].mean()
    if how == "abnormal":
        assert gap > 0.3  # the kept values are the abnormal ones
    else:
        assert abs(gap) < 0.2
    with pytest.raises(ValueError, match="--blank-labs"):
        bench.blank_labs(root, "mnar")


def test_variants_bind_init_arguments_and_round_trip_through_the_row_name(bench):
    name, kwargs = bench.parse_variant("FTTransformerEncoder:numeric_embedding=periodic,frequency_scale=1.0")
    assert (name, kwargs) == ("FTTransformerEncoder", {"numeric_embedding": "periodic", "frequency_scale": 1.0})
    row = bench.variant_name(name, kwargs)
    assert row == "FTTransformerEncoder(numeric_embedding=periodic,frequency_scale=1.0)"
    assert bench.parse_variant(row) == (name, kwargs)
    enc = bench.encoder_factory(row)(16, FTTransformerEncoder.example_spec())
    assert enc.numeric_embedding == "periodic"
    assert enc.frequencies.std().item() > 0.3  # drawn at scale 1.0, not the default 0.1
    with pytest.raises(ValueError, match="expected Class:key=value"):
        bench.parse_variant("FTTransformerEncoder:periodic")


def test_pooled_draws_are_the_inverse_variance_mean_and_widen_when_draws_disagree(bench, monkeypatch):
    given = {"a": (0.0185, 0.0075), "b": (0.0148, 0.0080), "c": (0.0047, 0.0050)}
    monkeypatch.setattr(bench, "delta_stats", lambda default, alt, labels: {
        "delta": given[labels][0], "se": given[labels][1], "low": 0.0, "high": 0.0, "p_value": 0.5, "seeds": 10})
    rows = [{"modality": "timeseries", "encoder": e, "seed": 0, "error": ""}
            for e in ("TimeSeriesTripletEncoder", "STraTSEncoder")]
    out = bench.pool_draws([(k, rows, k) for k in given], {"timeseries": "TimeSeriesTripletEncoder"})
    d, se = np.array([v[0] for v in given.values()]), np.array([v[1] for v in given.values()])
    w = 1 / se**2
    fixed, fixed_se = (w * d).sum() / w.sum(), w.sum() ** -0.5  # by hand
    line = next(x for x in out.splitlines() if x.startswith("| pooled, fixed effect"))
    assert f"{fixed:+.4f} | {fixed_se:.4f}" in line
    q = (w * (d - fixed) ** 2).sum()
    assert f"Cochran's Q {q:.2f} on 2 df" in out
    # draws that disagree well beyond their se: random effects give a wider interval than fixed
    given.update(a=(0.05, 0.003), b=(0.0, 0.003), c=(0.02, 0.003))
    out = bench.pool_draws([(k, rows, k) for k in given], {"timeseries": "TimeSeriesTripletEncoder"})
    se_of = {x.split("|")[1].strip(): float(x.split("|")[3]) for x in out.splitlines() if x.startswith("| pooled")}
    assert se_of["pooled, random effects (PM)"] > 3 * se_of["pooled, fixed effect"]


def test_a_reference_row_replaces_the_default_only_for_its_modality(bench):
    rows = [{"modality": "timeseries", "encoder": e, "seed": s, "error": "", "test_c_index": c,
             "train_pps": 1.0, "peak_rss_mb": 1.0, "n_params": 1}
            for e, cs in (("TimeSeriesTripletEncoder", (0.55, 0.57)), ("STraTSEncoder+forecast", (0.60, 0.62)),
                          ("STraTSEncoder+forecast+unlabelled", (0.65, 0.69)))
            for s, c in enumerate(cs)]
    refs = bench.references(rows, "STraTSEncoder+forecast")
    assert refs["timeseries"] == "STraTSEncoder+forecast"
    assert refs["tabular"] == bench.references(rows)["tabular"] == "TabularMLPEncoder"
    table = bench.summarize(rows, {"timeseries": 0.7}, refs)
    deltas = {x.split("|")[2].strip(): x.split("|")[4].strip() for x in table.splitlines()
              if x.startswith("| timeseries") and x.count("|") == 11}
    assert deltas == {"TimeSeriesTripletEncoder": "-0.0500", "STraTSEncoder+forecast+unlabelled": "+0.0600"}
    assert "STraTSEncoder+forecast (reference)" in table
    with pytest.raises(ValueError, match="not a row of these results"):
        bench.references(rows, "STraTSEncoder")


def test_redundant_labs_are_noisy_copies_of_each_lab_measured_for_some_patients(bench, synthetic_cohort, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(synthetic_cohort, root)
    table = pd.read_parquet(root / "tabular.parquet")
    bench.redundant_labs(root, copies=3, noise=1.0, keep=0.5)
    out = pd.read_parquet(root / "tabular.parquet")
    untouched = [c for c in table.columns if c not in bench.LAB_COLUMNS]
    pd.testing.assert_frame_equal(out[untouched], table[untouched])
    assert not set(bench.LAB_COLUMNS) & set(out.columns)  # each lab replaced by its copies
    copies = [f"sodium_m{k}" for k in (1, 2, 3)]
    assert set(copies) <= set(out.columns) and "sodium_m4" not in out.columns
    was = table["sodium"].notna()
    assert out.loc[~was, copies].isna().all().all()  # a blank lab is blank in every copy
    seen = out.loc[was, copies].notna().to_numpy().mean()
    assert 0.4 < seen < 0.6
    # each copy measures the lab with noise of the lab's own sd: correlation ~ 1 / sqrt(2)
    for c in copies:
        r = table["sodium"].corr(out[c])
        assert 0.6 < r < 0.8
    r_log = np.log(table["creatinine"]).corr(np.log(out["creatinine_m1"]))  # log-scale labs copied on the log
    assert 0.6 < r_log < 0.8
    assert (out["creatinine_m1"].dropna() > 0).all()
    dm = ClinicalDataModule(str(root), modalities=["tabular"])
    dm.setup("fit")
    assert "sodium_m3" in dm.spec["tabular"]["numeric_features"]
    with pytest.raises(ValueError, match="--redundant-labs"):
        bench.redundant_labs(root, copies=0)


def test_reference_reads_of_redundant_copies_by_hand(bench, synthetic_cohort, tmp_path):
    """bench_tabular_reference.py's feature sets for a --redundant-labs cohort, one patient by hand."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tabular_reference.py"
    spec = importlib.util.spec_from_file_location("bench_tabular_reference", path)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    root = tmp_path / "cohort"
    shutil.copytree(synthetic_cohort, root)
    bench.redundant_labs(root, copies=3, noise=2.0, keep=0.6)
    table = pd.read_parquet(root / "tabular.parquet")
    train = np.ones(len(table), bool)
    cols = ["sodium_m1", "sodium_m2", "sodium_m3"]
    z = (table[cols] - table[cols].mean()) / table[cols].std() * np.sqrt(1 + 2.0**2)  # each on the lab's scale
    i = int(np.flatnonzero(z.notna().sum(1).to_numpy() == 2)[0])  # a patient with two of three copies
    seen = z.iloc[i].dropna().to_numpy()
    expected = {"sum": seen.sum(), "mean": seen.mean(), "pattern-optimal": seen.sum() / (2 + 2.0**2)}
    for kind, value in expected.items():
        x = ref.redundant_features(table, train, kind, noise=2.0)
        assert x.loc[i, "sodium"] == pytest.approx(value, rel=1e-9)
        assert x.loc[i, "sodium_none"] == 0.0
        assert "sodium_m1" not in x.columns
    copies = ref.redundant_features(table, train, "copies", noise=2.0)
    assert {"sodium_m1", "sodium_m1_missing", "sodium_m3"} <= set(copies.columns)
    assert copies["sodium_m1"].notna().all()  # missing cells are 0 with a flag
