"""Synthetic multimodal cohort with controllable missingness and known Bayes-optimal predictions."""

from clinfuse.datasets.synthetic.generate import generate_cohort, patient_ids
from clinfuse.datasets.synthetic.latent import LatentModel, draw_latent, draw_outcomes, make_model
from clinfuse.datasets.synthetic.missingness import DEFAULT_MISSINGNESS, draw_presence, resolve_missingness
from clinfuse.datasets.synthetic.oracle import gaussian_posterior, oracle_table

__all__ = [
    "DEFAULT_MISSINGNESS",
    "LatentModel",
    "draw_latent",
    "draw_outcomes",
    "draw_presence",
    "gaussian_posterior",
    "generate_cohort",
    "make_model",
    "oracle_table",
    "patient_ids",
    "resolve_missingness",
]
