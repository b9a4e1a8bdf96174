"""The oracle given any chosen subset of modalities, recomputed from a synthetic cohort's seed.

``oracle.parquet`` holds the Bayes-optimal risk given *all* views (``risk_full`` uses ``z`` itself)
and given the modalities each patient *has* (``risk_observed``). To ask "how well could a model do
with modality ``m`` alone", this module rebuilds the generator's latent model and views exactly as
``generate_cohort`` draws them (same named ``SeedSequence`` streams, same order of draws) and
evaluates the Gaussian posterior mean of ``beta . z`` given only the chosen views (``oracle.py``).
Only the "model" and "latent" streams are needed: every later stream is independent of them.
"""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.datasets.synthetic.generate import STREAMS, patient_ids
from clinfuse.datasets.synthetic.latent import MODALITIES, LatentModel, draw_latent, make_model
from clinfuse.datasets.reader import read_cohort_info
from clinfuse.datasets.synthetic.oracle import gaussian_posterior, oracle_table

def rebuild_latent(seed: int, n_patients: int, n_classes: int = 3) -> tuple[LatentModel, np.ndarray, dict]:
    """The latent model, latent states and views that ``generate_cohort(seed=..., n_patients=...)`` drew.

    Args:
        seed: The generator's seed.
        n_patients: The generator's number of patients.
        n_classes: The generator's number of classes (drawn into the model parameters).

    Returns:
        ``(model, z, views)``: ``z`` of shape ``(n_patients, k)``, ``views`` modality -> ``(n_patients, d_m)``.
    """
    streams = dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS))))
    model = make_model(np.random.default_rng(streams["model"]), n_classes)
    z, views = draw_latent(model, n_patients, np.random.default_rng(streams["latent"]))
    return model, z, views


def subset_risk(model: LatentModel, views: dict, observed: Iterable[str]) -> np.ndarray:
    """Posterior mean risk ``beta . E[z | v_m, m in observed]`` for every patient.

    Args:
        model: The model parameters.
        views: Modality -> views, shape ``(n, d_m)``.
        observed: Modalities conditioned on (empty: the prior, risk 0).

    Returns:
        Risks, shape ``(n,)``.

    Raises:
        ValueError: For an unknown modality.
    """
    observed = tuple(observed)
    unknown = sorted(set(observed) - set(MODALITIES))
    if unknown:
        raise ValueError(f"subset_risk: unknown modalities {unknown}; expected a subset of {MODALITIES}")
    mu, _ = gaussian_posterior(model, views, observed)
    return mu @ model.beta


def subset_risk_table(root, subsets: dict[str, Iterable[str]]) -> pd.DataFrame:
    """Oracle risks of a generated cohort folder given chosen modality subsets.

    Args:
        root: A folder written by ``generate_cohort`` (its ``cohort.json`` gives seed, size, classes).
        subsets: Column name -> modalities conditioned on, e.g. ``{"ecg": ["ecg"]}``.

    Returns:
        DataFrame with ``patient_id`` and one risk column per entry of ``subsets``. The risks use
        the views whether or not the patient's files hold the modality (presence is ignored).

    Raises:
        ValueError: When ``cohort.json`` is missing or is not a synthetic cohort's.
    """
    path = Path(root) / "cohort.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found; subset_risk_table needs a folder written by generate_cohort")
    meta = read_cohort_info(path)
    if meta.get("name") != "synthetic" or "seed" not in meta:
        raise ValueError(f"{path}: not a synthetic cohort (name {meta.get('name')!r}); its oracle cannot be rebuilt")
    model, _, views = rebuild_latent(int(meta["seed"]), int(meta["n_patients"]), int(meta.get("n_classes", 3)))
    table = {"patient_id": list(patient_ids(int(meta["n_patients"])))}
    for name, observed in subsets.items():
        table[name] = subset_risk(model, views, observed)
    return pd.DataFrame(table)


def oracle_for_modalities(root, modalities: Iterable[str]) -> pd.DataFrame:
    """``oracle.parquet`` as if the cohort held only ``modalities``: ``risk_observed`` and
    ``prob_observed`` condition on the views of those of ``modalities`` each patient has
    (``presence.parquet``); the ``*_full`` columns are unchanged. With every modality it equals the
    generator's own ``oracle.parquet`` (checked by tests/datasets/test_oracle_subsets.py).

    Raises:
        ValueError: not a synthetic cohort folder (see :func:`subset_risk_table`), no
            ``presence.parquet``, or an unknown modality.
    """
    root = Path(root)
    path = root / "cohort.json"
    meta = read_cohort_info(path) if path.is_file() else {}
    if meta.get("name") != "synthetic" or "seed" not in meta:
        raise ValueError(f"{path}: not a synthetic cohort; its oracle cannot be rebuilt")
    wanted = set(modalities)
    unknown = sorted(wanted - set(MODALITIES))
    if unknown:
        raise ValueError(f"oracle_for_modalities: unknown modalities {unknown}; expected a subset of {MODALITIES}")
    if not (root / "presence.parquet").is_file():
        raise ValueError(f"{root / 'presence.parquet'}: not found; it records which patient has which modality")
    n = int(meta["n_patients"])
    model, z, views = rebuild_latent(int(meta["seed"]), n, int(meta.get("n_classes", 3)))
    ids = list(patient_ids(n))
    has = pd.read_parquet(root / "presence.parquet").set_index("patient_id").reindex(ids)
    presence = {m: (has[m].fillna(False).to_numpy(bool) if m in has else np.zeros(n, bool)) & (m in wanted)
                for m in MODALITIES}
    return oracle_table(model, z, views, presence, ids)
