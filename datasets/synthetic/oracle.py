"""The Bayes-optimal ("oracle") predictions of the synthetic cohort.

``risk_full = beta . z`` and ``prob_full = sigmoid(gamma . z + b)`` use the true latent state.
``risk_observed`` and ``prob_observed`` use only the views of the modalities a patient actually has:
with the prior ``z ~ N(0, I)`` and ``v_m = A_m z + N(0, s_m^2 I)`` the posterior is Gaussian,

    S  = (I + sum_{m in O} A_m^T A_m / s_m^2)^-1,      mu = S sum_{m in O} A_m^T v_m / s_m^2,

so ``risk_observed = beta . mu`` and ``prob_observed = E[sigmoid(gamma . z + b)]`` is approximated by
the probit trick ``sigmoid(m / sqrt(1 + pi s2 / 8))`` with ``m = gamma . mu + b``,
``s2 = gamma^T S gamma``. A patient with no modality gets the prior (``mu = 0``, ``S = I``).
Patients are grouped by missingness pattern (at most 2^6 = 64), one matrix inverse per pattern.

"Bayes-optimal" is given the observed *values*: the posterior does not condition on the missingness
pattern itself. Under the default MNAR notes (and MAR modalities driven by a sometimes-missing age)
the pattern carries some information about the risk, so a ranking that also used it could score
slightly higher than ``risk_observed``.
"""

import numpy as np
import pandas as pd
from scipy.special import expit

from clinfuse.datasets.synthetic.latent import MODALITIES, LatentModel


def gaussian_posterior(model: LatentModel, views: dict, observed: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of ``z`` given the views of the ``observed`` modalities, for patients sharing that set.

    Args:
        model: The model parameters.
        views: Modality -> views, shape ``(n, d_m)``; must hold every ``observed`` modality and at
            least one entry (``n`` is read from it).
        observed: Modalities whose views are conditioned on (may be empty: the prior is returned).

    Returns:
        ``mu`` of shape ``(n, k)`` and the shared covariance ``S`` of shape ``(k, k)``.
    """
    k = model.latent_dim
    precision = np.eye(k)
    info = np.zeros((next(iter(views.values())).shape[0], k))
    for m in observed:
        a, s2 = model.views[m], model.noise[m] ** 2
        precision = precision + a.T @ a / s2
        info = info + views[m] @ a / s2  # (n, k)
    cov = np.linalg.inv(precision)
    cov = 0.5 * (cov + cov.T)
    return info @ cov, cov


def probit_sigmoid_mean(mean: np.ndarray, var: np.ndarray | float) -> np.ndarray:
    """``E[sigmoid(x)]`` for ``x ~ N(mean, var)`` by the probit approximation."""
    return expit(mean / np.sqrt(1.0 + np.pi * np.asarray(var) / 8.0))


def oracle_table(model: LatentModel, z: np.ndarray, views: dict, presence: dict, patient_ids) -> pd.DataFrame:
    """Oracle risks and probabilities for every patient.

    Args:
        model: The model parameters.
        z: Latent states, shape ``(n, k)``.
        views: Modality -> views, shape ``(n, d_m)``.
        presence: Modality -> bool array ``(n,)``, True where the patient has the modality.
        patient_ids: ``n`` patient ids.

    Returns:
        DataFrame with ``patient_id, risk_full, risk_observed, prob_full, prob_observed``.
    """
    n = z.shape[0]
    flags = np.stack([np.asarray(presence[m], dtype=bool) for m in MODALITIES], axis=1)  # (n, M)
    codes = flags @ (1 << np.arange(len(MODALITIES)))
    risk_obs = np.zeros(n)
    prob_obs = np.zeros(n)
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        observed = tuple(m for i, m in enumerate(MODALITIES) if code >> i & 1)
        mu, cov = gaussian_posterior(model, {m: views[m][rows] for m in MODALITIES}, observed)
        risk_obs[rows] = mu @ model.beta
        var = model.gamma @ cov @ model.gamma
        prob_obs[rows] = probit_sigmoid_mean(mu @ model.gamma + model.bias, var)
    return pd.DataFrame(
        {
            "patient_id": list(patient_ids),
            "risk_full": z @ model.beta,
            "risk_observed": risk_obs,
            "prob_full": expit(z @ model.gamma + model.bias),
            "prob_observed": prob_obs,
        }
    )


def oracle_metrics(labels: pd.DataFrame, oracle: pd.DataFrame, mask: np.ndarray) -> dict:
    """Harrell C-index (scikit-survival) and AUROC (scikit-learn) of the oracle on a subset.

    Args:
        labels: The labels table (``binary``, ``time``, ``event``), aligned with ``oracle``.
        oracle: The table from ``oracle_table``.
        mask: Bool array selecting the patients (e.g. the test split).

    Returns:
        Dict with ``n_patients``, ``c_index_risk_full``, ``c_index_risk_observed``,
        ``auroc_prob_full``, ``auroc_prob_observed``; a metric is None when undefined
        (no event, no comparable pair, or a single class).
    """
    from sklearn.metrics import roc_auc_score
    from sksurv.metrics import concordance_index_censored

    lab, orc = labels[mask], oracle[mask]
    event = lab["event"].to_numpy().astype(bool)
    time = lab["time"].to_numpy()
    binary = lab["binary"].to_numpy()
    out = {"n_patients": int(mask.sum())}
    for col in ("risk_full", "risk_observed"):
        try:
            out[f"c_index_{col}"] = float(concordance_index_censored(event, time, orc[col].to_numpy())[0])
        except (ValueError, ZeroDivisionError):
            out[f"c_index_{col}"] = None
    for col in ("prob_full", "prob_observed"):
        ok = np.unique(binary).size == 2
        out[f"auroc_{col}"] = float(roc_auc_score(binary, orc[col].to_numpy())) if ok else None
    if "cause" in lab.columns:  # competing causes: cause-specific C, the other causes counted as censored
        for col in (c for c in orc.columns if c.startswith("cif_cause")):
            r = int(col[len("cif_cause"):].split("_")[0])
            try:
                c = concordance_index_censored(lab["cause"].to_numpy() == r, time, orc[col].to_numpy())[0]
                out[f"c_index_{col}"] = float(c)
            except (ValueError, ZeroDivisionError):
                out[f"c_index_{col}"] = None
    return out
