"""Competing causes for the synthetic cohort (``generate_cohort(n_causes=R)``, ``R >= 2``).

The all-cause outcome is the single-cause cohort's, unchanged: event time ``T`` with hazard
``h(t | z) = lam rho t^(rho-1) exp(beta . z)`` (``latent.py``). An observed event is then given a
cause ``c ~ Categorical(softmax(kappa z))`` with ``kappa`` of shape ``(R, k)`` (rows of norm
``CAUSE_SCALE``), independent of the time given ``z``. This is a proper competing-risks model with
cause-specific hazards ``h_r(t | z) = pi_r(z) h(t | z)``, and it keeps ``time``, ``event`` and the
all-cause oracle of ``oracle.py`` exactly as in the single-cause cohort.

Cumulative incidence of cause ``r`` at ``tau``: ``CIF_r(tau | z) = pi_r(z) (1 - exp(-lam e^(beta.z) tau^rho))``.
The oracle ranks cause ``r`` by it: ``cif_cause<r>_full`` with the true ``z``, and
``cif_cause<r>_observed`` = its posterior mean given the patient's observed views (Monte Carlo over
``CAUSE_SAMPLES`` draws of the Gaussian posterior of ``oracle.py``). Every draw comes from the
generator's "causes" stream, so the other files do not change with ``n_causes``.
"""

import numpy as np
from scipy.special import softmax

from clinfuse.datasets.synthetic.latent import MODALITIES, WEIBULL_LAM, WEIBULL_RHO, LatentModel
from clinfuse.datasets.synthetic.oracle import gaussian_posterior

CAUSE_SCALE = 1.5  # ||kappa_r||: how strongly z decides the cause
CAUSE_HORIZON_DAYS = 365.0  # tau of the oracle's cumulative incidence
CAUSE_SAMPLES = 256  # posterior draws per patient for cif_cause<r>_observed
MAX_CAUSES = 5


def cause_weights(n_causes: int, latent_dim: int, rng: np.random.Generator) -> np.ndarray:
    """``kappa``: ``(R, k)`` rows of norm ``CAUSE_SCALE``."""
    kappa = rng.standard_normal((n_causes, latent_dim))
    return CAUSE_SCALE * kappa / np.linalg.norm(kappa, axis=1, keepdims=True)


def draw_causes(kappa: np.ndarray, z: np.ndarray, event: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``cause``: 0 where ``event`` is 0, else ``1..R`` drawn from ``softmax(kappa z)``."""
    probs = softmax(z @ kappa.T, axis=1)  # (n, R)
    u = rng.uniform(size=(len(z), 1))
    drawn = 1 + (u > np.cumsum(probs, axis=1)).sum(axis=1)
    return np.where(np.asarray(event) == 1, np.minimum(drawn, kappa.shape[0]), 0).astype(np.int64)


def incidence(model: LatentModel, kappa: np.ndarray, z: np.ndarray, tau: float = CAUSE_HORIZON_DAYS) -> np.ndarray:
    """``CIF_r(tau | z)`` for every row of ``z`` (..., k) -> (..., R)."""
    event_by_tau = 1.0 - np.exp(-WEIBULL_LAM * np.exp(z @ model.beta) * tau**WEIBULL_RHO)
    return softmax(z @ kappa.T, axis=-1) * event_by_tau[..., None]


def cause_oracle(model: LatentModel, kappa: np.ndarray, z: np.ndarray, views: dict, presence: dict,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``cif_cause<r>_full`` and ``cif_cause<r>_observed`` columns (module docstring)."""
    n, k = z.shape
    full = incidence(model, kappa, z)
    observed = np.zeros_like(full)
    flags = np.stack([np.asarray(presence[m], dtype=bool) for m in MODALITIES], axis=1)
    codes = flags @ (1 << np.arange(len(MODALITIES)))
    for code in np.unique(codes):  # one posterior covariance per missingness pattern
        rows = np.flatnonzero(codes == code)
        seen = tuple(m for i, m in enumerate(MODALITIES) if code >> i & 1)
        mu, cov = gaussian_posterior(model, {m: views[m][rows] for m in MODALITIES}, seen)
        chol = np.linalg.cholesky(cov)
        draws = mu[:, None, :] + rng.standard_normal((len(rows), CAUSE_SAMPLES, k)) @ chol.T  # (rows, S, k)
        observed[rows] = incidence(model, kappa, draws).mean(axis=1)
    out = {}
    for r in range(kappa.shape[0]):
        out[f"cif_cause{r + 1}_full"] = full[:, r]
        out[f"cif_cause{r + 1}_observed"] = observed[:, r]
    return out
