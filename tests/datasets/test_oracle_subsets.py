"""The subset oracle rebuilds the generator's latent draws and conditions on chosen views only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinfuse.datasets.synthetic import generate_cohort
from clinfuse.datasets.synthetic.latent import MODALITIES
from clinfuse.datasets.synthetic.oracle_subsets import rebuild_latent, subset_risk, subset_risk_table

SMALL = dict(wsi_patches=(2, 4), ecg_seconds=1.0, ecg_fs=100, show_progress=False)


@pytest.fixture(scope="module")
def complete_cohort(tmp_path_factory):
    """30 patients, every modality present for everyone (rate 0)."""
    full = {m: {"mechanism": "mcar", "rate": 0.0} for m in MODALITIES}
    root = tmp_path_factory.mktemp("subsets") / "c"
    return generate_cohort(root, n_patients=30, seed=7, missingness=full, **SMALL)


def test_rebuilt_latent_gives_the_files_risk_full(complete_cohort):
    oracle = pd.read_parquet(complete_cohort / "oracle.parquet")
    model, z, _ = rebuild_latent(seed=7, n_patients=30)
    np.testing.assert_allclose(z @ model.beta, oracle["risk_full"].to_numpy(), rtol=0, atol=1e-12)


def test_all_modalities_posterior_equals_risk_observed_when_nothing_is_missing(complete_cohort):
    oracle = pd.read_parquet(complete_cohort / "oracle.parquet")
    table = subset_risk_table(complete_cohort, {"all": MODALITIES, "none": ()})
    assert list(table["patient_id"]) == list(oracle["patient_id"])
    np.testing.assert_allclose(table["all"].to_numpy(), oracle["risk_observed"].to_numpy(), rtol=0, atol=1e-12)
    assert (table["none"] == 0).all()  # the prior mean
    # conditioning on every view is informative but not the truth
    assert not np.allclose(table["all"].to_numpy(), oracle["risk_full"].to_numpy())


def test_per_patient_observed_subsets_reproduce_risk_observed(tmp_path):
    root = generate_cohort(tmp_path / "c", n_patients=40, seed=2, **SMALL)  # default missingness
    oracle = pd.read_parquet(root / "oracle.parquet")
    presence = pd.read_parquet(root / "presence.parquet")
    model, _, views = rebuild_latent(seed=2, n_patients=40)
    for i in range(40):
        observed = [m for m in MODALITIES if presence.loc[i, m]]
        one = {m: v[i : i + 1] for m, v in views.items()}
        assert subset_risk(model, one, observed)[0] == pytest.approx(oracle.loc[i, "risk_observed"], abs=1e-12)


@pytest.mark.parametrize("modality", MODALITIES)
def test_single_modality_matches_covariance_form_conditioning(modality):
    model, z, views = rebuild_latent(seed=4, n_patients=25)
    a, s = model.views[modality], model.noise[modality]
    # independent reference: E[z | v] = Cov(z, v) Cov(v)^-1 v with Cov(z, v) = A^T, Cov(v) = A A^T + s^2 I
    expected = views[modality] @ np.linalg.solve(a @ a.T + s**2 * np.eye(a.shape[0]), a) @ model.beta
    np.testing.assert_allclose(subset_risk(model, views, [modality]), expected, rtol=1e-9, atol=1e-12)


def test_errors_name_the_problem(tmp_path):
    model, _, views = rebuild_latent(seed=0, n_patients=5)
    with pytest.raises(ValueError, match="unknown modalities"):
        subset_risk(model, views, ["xray"])
    with pytest.raises(ValueError, match="cohort.json"):
        subset_risk_table(tmp_path, {"ecg": ["ecg"]})


def test_oracle_for_the_modalities_a_model_reads(tmp_path):
    from clinfuse.datasets.synthetic.oracle_subsets import oracle_for_modalities

    root = generate_cohort(tmp_path / "c", n_patients=40, seed=2, **SMALL)  # default missingness
    stored = pd.read_parquet(root / "oracle.parquet")
    every = oracle_for_modalities(root, MODALITIES)  # all modalities: the generator's own table
    for col in ("risk_full", "risk_observed", "prob_full", "prob_observed"):
        np.testing.assert_allclose(every[col], stored[col], rtol=1e-12, atol=1e-12)
    two = oracle_for_modalities(root, ["tabular", "ecg"])
    presence = pd.read_parquet(root / "presence.parquet")
    model, _, views = rebuild_latent(seed=2, n_patients=40)
    for i in range(40):  # by hand: each patient's own modalities among the two
        observed = [m for m in ("tabular", "ecg") if presence.loc[i, m]]
        one = {m: v[i : i + 1] for m, v in views.items()}
        assert two.loc[i, "risk_observed"] == pytest.approx(subset_risk(model, one, observed)[0], abs=1e-12)
    np.testing.assert_allclose(two["risk_full"], stored["risk_full"])
    with pytest.raises(ValueError, match="unknown modalities"):
        oracle_for_modalities(root, ["xray"])
