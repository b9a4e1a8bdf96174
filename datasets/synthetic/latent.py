"""The generative model behind the synthetic cohort.

Every patient has a latent state ``z ~ N(0, I_k)`` with ``k = LATENT_DIM = 8``. Each modality ``m``
sees ``z`` only through a noisy linear-Gaussian *view*::

    v_m = A_m z + eps_m,      eps_m ~ N(0, s_m^2 I),      A_m of shape (d_m, k)

``A_m`` has dense rows of unit norm (so every view component mixes most of ``z`` and the
modalities are partly redundant); ``d_m`` is 4-6 (``VIEW_DIMS``) and the noise ``s_m``
(``VIEW_NOISE``) differs per modality. The raw files of modality ``m`` are rendered from ``v_m``
alone (plus rendering noise), never from ``z`` directly, so the information a modality carries
about ``z`` is exactly what its view carries.

Outcomes depend on ``z`` directly:

* survival: Weibull proportional hazards with log-risk ``eta = beta . z``; the event time in days
  (counted from the 48 h prediction time) is ``T = (-log U / (lam * exp(eta)))^(1/rho)``; it is
  censored by an independent exponential time and administratively at 5 years;
* binary: ``y ~ Bernoulli(sigmoid(gamma . z + b))`` with ``b`` set for a ~30 % prevalence;
* multiclass: ``c ~ Categorical(softmax(W z))``.

Because everything is linear-Gaussian, the best possible prediction from any subset ``O`` of the
views is available in closed form (see ``oracle.py``): the posterior of ``z`` given
``{v_m : m in O}`` is Gaussian with precision ``I + sum_m A_m^T A_m / s_m^2``.

All parameters (``A_m``, ``beta``, ``gamma``, ``b``, ``W``) are drawn from the generator's seed.
"""

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

LATENT_DIM = 8
MODALITIES = ("tabular", "timeseries", "ecg", "notes", "wsi", "genomics")
VIEW_DIMS = {"tabular": 6, "timeseries": 5, "ecg": 4, "notes": 4, "wsi": 4, "genomics": 6}
VIEW_NOISE = {"tabular": 0.5, "timeseries": 0.6, "ecg": 0.7, "notes": 0.8, "wsi": 0.9, "genomics": 0.6}

RISK_SCALE = 1.25  # ||beta||: sets the oracle C-index near 0.77
PROB_SCALE = 1.6  # ||gamma||
PREVALENCE = 0.30
WEIBULL_RHO = 1.2
WEIBULL_LAM = 1.6e-4  # per day**rho at eta = 0
CENSOR_MEAN_DAYS = 3000.0
ADMIN_CENSOR_DAYS = 5 * 365.25


@dataclass(frozen=True)
class LatentModel:
    """Parameters of the generative model (see the module docstring).

    Attributes:
        views: Modality -> view matrix ``A_m`` of shape ``(d_m, k)``.
        noise: Modality -> view noise standard deviation ``s_m``.
        beta: Survival log-risk weights, shape ``(k,)``.
        gamma: Binary-outcome logit weights, shape ``(k,)``.
        bias: Binary-outcome logit intercept ``b``.
        class_weights: Multiclass logit weights ``W``, shape ``(n_classes, k)``.
    """

    views: dict
    noise: dict
    beta: np.ndarray
    gamma: np.ndarray
    bias: float
    class_weights: np.ndarray

    @property
    def latent_dim(self) -> int:
        """Dimension ``k`` of the latent state."""
        return self.beta.shape[0]

    def view_std(self, modality: str) -> float:
        """Marginal standard deviation of every component of ``v_m`` (rows of ``A_m`` have unit norm)."""
        return float(np.sqrt(1.0 + self.noise[modality] ** 2))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _solve_bias(scale: float, prevalence: float) -> float:
    """Intercept ``b`` with ``E[sigmoid(b + scale * N(0, 1))] = prevalence`` (Gauss-Hermite + bisection)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    weights = weights / weights.sum()
    lo, hi = -20.0, 20.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if np.sum(weights * expit(mid + scale * nodes)) < prevalence:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def make_model(rng: np.random.Generator, n_classes: int = 3) -> LatentModel:
    """Draw the model parameters.

    Args:
        rng: Source of randomness (the generator's "model" stream).
        n_classes: Number of classes of the multiclass label.

    Returns:
        The parameters, fixed for the whole cohort.
    """
    k = LATENT_DIM
    views = {m: _unit(rng.standard_normal((VIEW_DIMS[m], k))) for m in MODALITIES}
    beta = RISK_SCALE * _unit(rng.standard_normal(k))
    # The binary outcome shares part of its direction with the survival risk, as in real cohorts.
    other = _unit(rng.standard_normal(k))
    gamma = PROB_SCALE * _unit(0.6 * beta / RISK_SCALE + 0.8 * other)
    class_weights = 1.5 * _unit(rng.standard_normal((n_classes, k)))
    return LatentModel(
        views=views,
        noise=dict(VIEW_NOISE),
        beta=beta,
        gamma=gamma,
        bias=_solve_bias(PROB_SCALE, PREVALENCE),
        class_weights=class_weights,
    )


def draw_latent(model: LatentModel, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Draw latent states and every modality's view for ``n`` patients.

    Args:
        model: The model parameters.
        n: Number of patients.
        rng: Source of randomness (the generator's "latent" stream).

    Returns:
        ``z`` of shape ``(n, k)`` and a dict modality -> ``v_m`` of shape ``(n, d_m)``.
    """
    z = rng.standard_normal((n, model.latent_dim))
    views = {}
    for m in MODALITIES:
        a = model.views[m]
        views[m] = z @ a.T + model.noise[m] * rng.standard_normal((n, a.shape[0]))
    return z, views


def draw_outcomes(model: LatentModel, z: np.ndarray, rng: np.random.Generator) -> dict:
    """Draw the labels from the latent states.

    Args:
        model: The model parameters.
        z: Latent states, shape ``(n, k)``.
        rng: Source of randomness (the generator's "outcomes" stream).

    Returns:
        Dict with ``binary``, ``multiclass``, ``event`` (int arrays) and ``time`` (float days > 0).
    """
    n = z.shape[0]
    eta = z @ model.beta
    u = rng.uniform(size=n)
    t_event = (-np.log1p(-u) / (WEIBULL_LAM * np.exp(eta))) ** (1.0 / WEIBULL_RHO)
    t_censor = np.minimum(rng.exponential(CENSOR_MEAN_DAYS, size=n), ADMIN_CENSOR_DAYS)
    event = (t_event <= t_censor).astype(np.int64)
    time = np.maximum(np.where(event == 1, t_event, t_censor), 1e-3)

    binary = (rng.uniform(size=n) < expit(z @ model.gamma + model.bias)).astype(np.int64)
    logits = z @ model.class_weights.T  # (n, C)
    gumbel = -np.log(-np.log(rng.uniform(size=logits.shape)))
    multiclass = np.argmax(logits + gumbel, axis=1).astype(np.int64)
    return {"binary": binary, "multiclass": multiclass, "time": time, "event": event}
