"""Tests of the synthetic cohort generator (clinfuse.datasets.synthetic)."""

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import wfdb
from scipy.signal import find_peaks
from scipy.special import expit
from sksurv.metrics import concordance_index_censored

from clinfuse.datasets.synthetic import (
    DEFAULT_MISSINGNESS,
    draw_latent,
    draw_outcomes,
    draw_presence,
    gaussian_posterior,
    generate_cohort,
    make_model,
    oracle_table,
)
from clinfuse.datasets.synthetic.ecg import LEADS, ecg_drivers, write_ecg
from clinfuse.datasets.synthetic.latent import MODALITIES
from clinfuse.datasets.synthetic.notes import SEVERITY, render_notes
from clinfuse.datasets.synthetic.timeseries import render_timeseries

@pytest.fixture(scope="module")
def meta(synthetic_cohort) -> dict:
    return json.loads((synthetic_cohort / "cohort.json").read_text())


@pytest.fixture(scope="module")
def presence(synthetic_cohort) -> pd.DataFrame:
    return pd.read_parquet(synthetic_cohort / "presence.parquet").set_index("patient_id")


@pytest.fixture(scope="module")
def big_cohort(tmp_path_factory) -> Path:
    """1500 patients; ECG and WSI nearly always absent so the write stays cheap."""
    missingness = {"ecg": {"rate": 0.995}, "wsi": {"rate": 0.995}}
    root = tmp_path_factory.mktemp("big") / "cohort"
    return generate_cohort(root, n_patients=1500, seed=11, missingness=missingness, wsi_patches=(5, 10),
                           ecg_seconds=2.0, show_progress=False)  # fmt: skip


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_files_columns_and_dtypes(synthetic_cohort, meta):
    root = synthetic_cohort
    n = meta["n_patients"]
    assert meta["format_version"] == 1 and meta["modalities"] == list(MODALITIES)
    assert meta["ecg"]["leads"] == list(LEADS) and meta["wsi"]["feature_dim"] == 32
    assert set(meta["oracle_metrics"]["test"]) >= {"c_index_risk_full", "c_index_risk_observed", "auroc_prob_full"}

    labels = pd.read_parquet(root / "labels.parquet")
    assert list(labels.columns) == ["patient_id", "binary", "multiclass", "time", "event"]
    assert len(labels) == n and labels["patient_id"].is_unique and labels["patient_id"].iloc[0] == "P00001"
    assert labels["binary"].dtype == np.int64 and set(labels["binary"]) <= {0, 1}
    assert labels["multiclass"].between(0, meta["n_classes"] - 1).all() and labels["event"].isin([0, 1]).all()
    assert labels["time"].dtype == np.float64 and (labels["time"] > 0).all()

    splits = pd.read_csv(root / "splits.csv")
    assert set(splits["split"]) == {"train", "val", "test"} and len(splits) == n
    assert abs((splits["split"] == "train").mean() - 0.7) < 0.08
    oracle = pd.read_parquet(root / "oracle.parquet")
    assert list(oracle.columns) == ["patient_id", "risk_full", "risk_observed", "prob_full", "prob_observed"]
    assert oracle[["prob_full", "prob_observed"]].apply(lambda c: c.between(0, 1)).all().all()

    tab = pd.read_parquet(root / "tabular.parquet")
    assert tab["age"].dtype == np.float64 and tab["sex"].dropna().isin(["F", "M"]).all()
    assert 0.03 < tab["albumin"].isna().mean() < 0.25 and tab["smoking"].isna().any()
    ts = pd.read_parquet(root / "timeseries.parquet")
    assert list(ts.columns) == ["patient_id", "time", "variable", "value"] and ts["time"].between(0, 48).all()
    assert ts.equals(ts.sort_values(["patient_id", "time"], kind="stable").reset_index(drop=True))
    assert ts["variable"].nunique() == 6
    notes = pd.read_parquet(root / "notes.parquet")
    assert list(notes.columns) == ["patient_id", "time", "text"] and notes["time"].between(0, 48).all()
    assert notes["text"].str.split().str.len().between(30, 80).all()
    assert notes.groupby("patient_id").size().between(1, 4).all()

    genomics = pd.read_csv(root / "genomics.csv")
    groups = pd.read_csv(root / "gene_groups.csv")
    rnaseq = [c for c in genomics.columns if c.endswith("_rnaseq")]
    assert [c.removesuffix("_rnaseq") for c in rnaseq] == list(groups["gene"]) and groups["group"].nunique() == 6
    mut = [c for c in genomics.columns if c.endswith("_mut")]
    assert len(mut) == 8 and genomics[mut].isin([0, 1]).all().all()


def test_presence_matches_files(synthetic_cohort, presence):
    root = synthetic_cohort
    holders = {
        "tabular": pd.read_parquet(root / "tabular.parquet")["patient_id"],
        "timeseries": pd.read_parquet(root / "timeseries.parquet")["patient_id"],
        "notes": pd.read_parquet(root / "notes.parquet")["patient_id"],
        "genomics": pd.read_csv(root / "genomics.csv")["patient_id"],
        "ecg": pd.read_csv(root / "ecg" / "records.csv")["patient_id"],
        "wsi": pd.read_csv(root / "wsi" / "slides.csv")["patient_id"],
    }
    for modality, ids in holders.items():
        expected = set(presence.index[presence[modality]])
        assert set(ids) == expected, modality
        assert 0 < len(expected) < len(presence), modality
    records = pd.read_csv(root / "ecg" / "records.csv")
    assert {p.stem for p in (root / "ecg").glob("*.hea")} == set(records["record"])
    assert {p.stem for p in (root / "ecg").glob("*.dat")} == set(records["record"])
    assert records["time"].between(0, 48).all()
    slides = pd.read_csv(root / "wsi" / "slides.csv")
    assert {p.name for p in (root / "wsi").glob("*.h5")} == set(slides["path"]) and slides["slide_id"].is_unique


def test_same_seed_same_files_other_seed_differs(tmp_path):
    kwargs = dict(n_patients=20, wsi_patches=(5, 30), ecg_seconds=3.0, show_progress=False)
    first = _files(generate_cohort(tmp_path / "a", seed=1, **kwargs))
    again = _files(generate_cohort(tmp_path / "b", seed=1, **kwargs))
    other = _files(generate_cohort(tmp_path / "c", seed=2, **kwargs))
    assert first == again
    shared = set(first) & set(other)
    assert all(first[name] != other[name] for name in shared - {"gene_groups.csv"})


def test_cohort_where_nobody_has_a_modality(tmp_path):
    nobody = {m: {"mechanism": "mcar", "rate": 0.999} for m in MODALITIES}
    root = generate_cohort(tmp_path / "c", n_patients=10, seed=0, missingness=nobody, show_progress=False)
    assert not pd.read_parquet(root / "presence.parquet")[list(MODALITIES)].any().any()
    for name in ("tabular", "timeseries", "notes"):
        schema = pq.read_schema(root / f"{name}.parquet")
        assert pq.read_metadata(root / f"{name}.parquet").num_rows == 0
        assert schema.field("patient_id").type == pa.string(), name  # typed even when empty
    assert pq.read_schema(root / "tabular.parquet").field("sex").type == pa.string()
    assert len(pd.read_csv(root / "genomics.csv")) == 0 and len(pd.read_csv(root / "ecg" / "records.csv")) == 0
    assert not list((root / "ecg").glob("*.dat")) and not list((root / "wsi").glob("*.h5"))
    assert (pd.read_parquet(root / "oracle.parquet")["risk_observed"] == 0).all()  # the prior


def test_regenerating_into_a_cohort_replaces_it(tmp_path):
    kwargs = dict(wsi_patches=(5, 10), ecg_seconds=2.0, show_progress=False)
    generate_cohort(tmp_path / "c", n_patients=40, seed=0, **kwargs)
    root = generate_cohort(tmp_path / "c", n_patients=12, seed=5, **kwargs)
    assert len(list((root / "ecg").glob("*.hea"))) == len(pd.read_csv(root / "ecg" / "records.csv"))
    assert len(list((root / "wsi").glob("*.h5"))) == len(pd.read_csv(root / "wsi" / "slides.csv"))


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5])
def test_mcar_rates_near_target(rate):
    assert DEFAULT_MISSINGNESS["ecg"] == {"mechanism": "mcar", "rate": 0.3}  # documented default
    rng = np.random.default_rng(0)
    n = 2000
    spec = {m: {"mechanism": "mcar", "rate": rate} for m in MODALITIES}
    flags = draw_presence(spec, rng.standard_normal(n), rng.standard_normal(n), rng)
    tolerance = 4 * np.sqrt(rate * (1 - rate) / n)
    for modality in MODALITIES:
        assert abs((~flags[modality]).mean() - rate) < tolerance, modality


@pytest.mark.parametrize("mechanism", ["mar", "mnar"])
def test_informative_missingness_follows_its_driver(mechanism):
    rng = np.random.default_rng(1)
    model = make_model(rng)
    z, _ = draw_latent(model, 2000, rng)
    eta = z @ model.beta
    age = 60 + 12 * rng.standard_normal(2000)  # independent of eta
    flags = draw_presence({"notes": {"mechanism": mechanism, "rate": 0.3}}, age, eta, rng)
    missing = ~flags["notes"]
    driver, other = (age, eta) if mechanism == "mar" else (eta, age)
    assert abs(missing.mean() - 0.3) < 0.04
    assert np.corrcoef(missing, driver)[0, 1] > 0.2
    assert abs(np.corrcoef(missing, other)[0, 1]) < 0.08


def test_mar_missingness_in_a_cohort_follows_age(big_cohort):
    tab = pd.read_parquet(big_cohort / "tabular.parquet").set_index("patient_id")
    present = pd.read_parquet(big_cohort / "presence.parquet").set_index("patient_id").loc[tab.index]
    age = tab["age"].to_numpy()
    keep = ~np.isnan(age)
    assert np.corrcoef(~present["genomics"].to_numpy()[keep], age[keep])[0, 1] > 0.2  # genomics: MAR


def test_oracle_c_index_in_range_and_above_observed(big_cohort):
    labels = pd.read_parquet(big_cohort / "labels.parquet")
    oracle = pd.read_parquet(big_cohort / "oracle.parquet")
    event, time = labels["event"].to_numpy().astype(bool), labels["time"].to_numpy()
    c_full = concordance_index_censored(event, time, oracle["risk_full"].to_numpy())[0]
    c_observed = concordance_index_censored(event, time, oracle["risk_observed"].to_numpy())[0]
    assert 0.73 <= c_full <= 0.82
    assert c_observed < c_full - 0.01
    assert 0.45 <= event.mean() <= 0.65 and 0.22 <= labels["binary"].mean() <= 0.38

    meta = json.loads((big_cohort / "cohort.json").read_text())
    test = pd.read_csv(big_cohort / "splits.csv")["split"].to_numpy() == "test"
    c_test = concordance_index_censored(event[test], time[test], oracle["risk_full"].to_numpy()[test])[0]
    assert meta["oracle_metrics"]["test"]["c_index_risk_full"] == pytest.approx(c_test)


def test_gaussian_posterior_matches_brute_force():
    rng = np.random.default_rng(7)
    model = make_model(rng)
    z, views = draw_latent(model, 5, rng)
    observed = ("tabular", "ecg", "wsi")
    mu, cov = gaussian_posterior(model, views, observed)

    # Joint Gaussian of (z, v_O) for patient 0, conditioned in covariance form.
    a = np.vstack([model.views[m] for m in observed])
    noise = np.concatenate([np.full(model.views[m].shape[0], model.noise[m] ** 2) for m in observed])
    sigma_vv = a @ a.T + np.diag(noise)
    v = np.concatenate([views[m][0] for m in observed])
    gain = a.T @ np.linalg.inv(sigma_vv)
    np.testing.assert_allclose(mu[0], gain @ v, atol=1e-10)
    np.testing.assert_allclose(cov, np.eye(model.latent_dim) - gain @ a, atol=1e-10)

    flags = {m: np.array([m in observed] + [False] * 4) for m in MODALITIES}
    table = oracle_table(model, z, views, flags, [f"P{i}" for i in range(5)])
    assert table["risk_observed"][0] == pytest.approx(model.beta @ gain @ v)
    # E[sigmoid] by 1-d quadrature over the posterior of gamma . z: the probit trick is within 0.02.
    m, s = model.gamma @ gain @ v + model.bias, np.sqrt(model.gamma @ cov @ model.gamma)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    exact = np.sum(weights * expit(m + s * nodes)) / weights.sum()
    assert table["prob_observed"][0] == pytest.approx(exact, abs=0.02)
    assert table["risk_observed"][1] == 0.0  # no modality: the prior


def test_ecg_record_reads_back(synthetic_cohort, meta):
    record_name = pd.read_csv(synthetic_cohort / "ecg" / "records.csv")["record"].iloc[0]
    record = wfdb.rdrecord(str(synthetic_cohort / "ecg" / record_name))
    assert record.fs == meta["ecg"]["fs"] == 500
    assert record.sig_name == list(LEADS) and record.units == ["mV"] * 12 and record.fmt == ["16"] * 12
    assert record.p_signal.shape == (int(500 * meta["ecg"]["seconds"]), 12)
    assert 0.5 < np.ptp(record.p_signal[:, 1]) < 5.0  # lead II: a QRS of about a millivolt


def test_ecg_heart_rate_tracks_its_view_component(tmp_path):
    rng = np.random.default_rng(4)
    u = rng.standard_normal((30, 4))
    ids = [f"P{i:05d}" for i in range(30)]
    write_ecg(tmp_path, u, ids, np.ones(30, bool), np.random.SeedSequence(0), 250, 10.0, False)
    measured = []
    for pid in ids:
        lead_ii = wfdb.rdrecord(str(tmp_path / f"{pid}_ecg0"), channel_names=["II"]).p_signal[:, 0]
        peaks, _ = find_peaks(lead_ii, height=0.6, distance=int(0.3 * 250))
        measured.append(60.0 / np.median(np.diff(peaks) / 250))
    measured = np.array(measured)
    assert np.corrcoef(measured, u[:, 0])[0, 1] > 0.9
    assert np.median(np.abs(measured - ecg_drivers(u)["heart_rate"])) < 4.0


def test_wsi_h5_shapes(synthetic_cohort, meta):
    slides = pd.read_csv(synthetic_cohort / "wsi" / "slides.csv")
    low, high = meta["wsi"]["patches"]
    for path in slides["path"].iloc[:10]:
        with h5py.File(synthetic_cohort / "wsi" / path, "r") as f:
            features, coords = f["features"][:], f["coords"][:]
        assert features.dtype == np.float32 and coords.dtype == np.int32
        assert low <= features.shape[0] <= high and features.shape[1] == meta["wsi"]["feature_dim"]
        assert coords.shape == (features.shape[0], 2) and len(np.unique(coords, axis=0)) == len(coords)


def test_renderers_carry_their_view():
    rng = np.random.default_rng(5)
    u = rng.standard_normal((400, 5))
    ids = np.array([f"P{i:05d}" for i in range(400)], dtype=object)
    ts = render_timeseries(u, ids, np.ones(400, bool), rng)
    hr = ts[ts["variable"] == "heart_rate"].groupby("patient_id")["value"].mean().reindex(ids)
    assert np.corrcoef(hr, u[:, 0])[0, 1] > 0.7
    notes = render_notes(u, ids, np.ones(400, bool), rng)
    severity = notes["text"].str.extract(f"({'|'.join(SEVERITY)})")[0].map(SEVERITY.index)
    assert np.corrcoef(severity, pd.Series(u[:, 0], index=ids)[notes["patient_id"]])[0, 1] > 0.7


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"missingness": {"mri": {"mechanism": "mcar", "rate": 0.1}}}, "mri"),
        ({"missingness": {"ecg": {"mechanism": "sometimes", "rate": 0.1}}}, "sometimes"),
        ({"missingness": {"wsi": {"mechanism": "mcar", "rate": 1.0}}}, "rate"),
        ({"missingness": {"notes": {"rate": -0.1}}}, "notes"),
        ({"missingness": [("wsi", 0.3)]}, "missingness must be a dict"),
        ({"n_patients": 5}, "n_patients"),
        ({"n_classes": 1}, "n_classes"),
        ({"wsi_patches": (50, 10)}, "wsi_patches"),
        ({"ecg_fs": 0}, "ecg_fs"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
    ],
)
def test_bad_arguments_raise_naming_them(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_cohort(tmp_path / "out", **{"n_patients": 20, "show_progress": False, **kwargs})
    assert not (tmp_path / "out").exists()


def test_non_empty_foreign_folder_is_refused(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="out_dir"):
        generate_cohort(tmp_path, n_patients=20, show_progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_outcome_model_alone_hits_its_targets():
    rng = np.random.default_rng(2)
    model = make_model(rng, n_classes=4)
    z, _ = draw_latent(model, 6000, rng)
    outcomes = draw_outcomes(model, z, rng)
    c = concordance_index_censored(outcomes["event"].astype(bool), outcomes["time"], z @ model.beta)[0]
    assert 0.75 <= c <= 0.80
    assert 0.5 <= outcomes["event"].mean() <= 0.6 and abs(outcomes["binary"].mean() - 0.3) < 0.03
    assert set(outcomes["multiclass"]) == {0, 1, 2, 3}


def test_stratified_split_keeps_the_fractions_within_every_stratum():
    from clinfuse.datasets.synthetic.splits import stratified_split

    strata = np.repeat([0, 1, 2, 3], [700, 200, 80, 20])
    shuffled = strata[np.random.default_rng(0).permutation(len(strata))]
    split = stratified_split(shuffled, (0.7, 0.15, 0.15), np.random.default_rng(1))
    for s, size in zip(range(4), (700, 200, 80, 20)):
        got = split[shuffled == s]
        for name, frac in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
            assert abs((got == name).sum() - frac * size) <= 1, (s, name)
    again = stratified_split(shuffled, (0.7, 0.15, 0.15), np.random.default_rng(1))
    assert (again == split).all()
    other = stratified_split(shuffled, (0.7, 0.15, 0.15), np.random.default_rng(2))
    assert (other != split).any()  # random within strata
