"""Synthetic competing causes (generate_cohort(n_causes=R)): the all-cause data unchanged, causes
drawn as documented, and the cause-specific oracle checked by hand and by a larger Monte Carlo."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import softmax

from clinfuse.datasets.synthetic import generate_cohort
from clinfuse.datasets.synthetic.causes import cause_weights, incidence
from clinfuse.datasets.synthetic.generate import STREAMS
from clinfuse.datasets.synthetic.oracle import gaussian_posterior
from clinfuse.datasets.synthetic.oracle_subsets import rebuild_latent

N, SEED = 400, 7


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    kw = dict(n_patients=N, seed=SEED, wsi_patches=(10, 20), show_progress=False)
    one = generate_cohort(tmp_path_factory.mktemp("one") / "c", **kw)
    three = generate_cohort(tmp_path_factory.mktemp("three") / "c", n_causes=3, **kw)
    return one, three


def test_everything_but_the_cause_is_the_single_cause_cohort(pair):
    one, three = pair
    a, b = pd.read_parquet(one / "labels.parquet"), pd.read_parquet(three / "labels.parquet")
    pd.testing.assert_frame_equal(a, b.drop(columns="cause"))
    oa, ob = pd.read_parquet(one / "oracle.parquet"), pd.read_parquet(three / "oracle.parquet")
    pd.testing.assert_frame_equal(oa, ob[oa.columns])
    for name in ("tabular.parquet", "timeseries.parquet", "notes.parquet", "genomics.csv", "splits.csv", "presence.parquet"):
        assert (one / name).read_bytes() == (three / name).read_bytes(), name
    assert json.loads((three / "cohort.json").read_text())["n_causes"] == 3


def _latent_and_kappa(n_causes):
    model, z, views = rebuild_latent(SEED, N)
    stream = np.random.SeedSequence(SEED).spawn(len(STREAMS))[STREAMS.index("causes")]
    kappa = cause_weights(n_causes, model.latent_dim, np.random.default_rng(stream))
    return model, z, views, kappa


def test_causes_follow_softmax_of_the_latent_state(pair):
    _, three = pair
    labels = pd.read_parquet(three / "labels.parquet")
    assert ((labels["cause"] > 0) == (labels["event"] == 1)).all() and set(labels["cause"]) <= {0, 1, 2, 3}
    model, z, _, kappa = _latent_and_kappa(3)
    probs = softmax(z @ kappa.T, axis=1)[labels["event"].to_numpy() == 1]  # (events, 3)
    share = np.bincount(labels["cause"][labels["event"] == 1], minlength=4)[1:] / len(probs)
    np.testing.assert_allclose(share, probs.mean(0), atol=0.06)  # ~200 events: binomial sd ~0.035
    # the model's kappa really decides: each cause is most frequent where its probability is highest
    top = probs.argmax(1) + 1
    causes = labels["cause"][labels["event"] == 1].to_numpy()
    assert (causes == top).mean() > 0.45


def test_full_oracle_by_hand_and_observed_against_a_larger_monte_carlo(pair):
    _, three = pair
    oracle = pd.read_parquet(three / "oracle.parquet")
    presence = pd.read_parquet(three / "presence.parquet")
    model, z, views, kappa = _latent_and_kappa(3)
    lam_tau = 1.6e-4 * 365.0**1.2  # WEIBULL_LAM tau^rho of latent.py
    by_hand = softmax(z @ kappa.T, axis=1) * (1 - np.exp(-lam_tau * np.exp(z @ model.beta)))[:, None]
    np.testing.assert_allclose(oracle[[f"cif_cause{r}_full" for r in (1, 2, 3)]].to_numpy(), by_hand, rtol=1e-10)
    i = 0
    seen = tuple(m for m in presence.columns if m != "patient_id" and presence[m][i])
    mu, cov = gaussian_posterior(model, {m: v[i : i + 1] for m, v in views.items()}, seen)
    draws = np.random.default_rng(0).multivariate_normal(mu[0], cov, size=40000)
    want = incidence(model, kappa, draws).mean(0)
    got = oracle.loc[i, ["cif_cause1_observed", "cif_cause2_observed", "cif_cause3_observed"]].to_numpy(float)
    np.testing.assert_allclose(got, want, atol=0.02)  # 256 draws in the generator
    info = json.loads((three / "cohort.json").read_text())["oracle_metrics"]["test"]
    assert 0.5 < info["c_index_cif_cause1_full"] <= 1.0 and "c_index_cif_cause3_observed" in info


def test_bad_n_causes_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"n_causes must be an integer in \[1, 5\]"):
        generate_cohort(tmp_path / "c", n_patients=20, n_causes=0, show_progress=False)


def test_cause_reaches_the_batch_as_long_as_docs_formats_says(pair):
    from clinfuse.datasets.datamodule import ClinicalDataModule

    _, three = pair
    dm = ClinicalDataModule(root=str(three), modalities=["tabular"], batch_size=64)
    dm.setup("fit")
    labels = next(iter(dm.train_dataloader()))["labels"]
    assert labels["cause"].dtype == torch.long and labels["event"].dtype == torch.float32
    assert torch.equal(labels["cause"] > 0, labels["event"] > 0)
