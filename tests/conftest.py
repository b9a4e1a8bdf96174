"""Shared fixtures: a small synthetic cohort written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory) -> Path:
    """A 160-patient synthetic cohort with small WSI bags (all six modalities, default missingness)."""
    from clinfuse.datasets.synthetic import generate_cohort

    root = tmp_path_factory.mktemp("cohort") / "synthetic"
    return generate_cohort(root, n_patients=160, seed=3, wsi_patches=(20, 60), show_progress=False)


@pytest.fixture(scope="session")
def competing_cohort(synthetic_cohort, tmp_path_factory) -> Path:
    """The synthetic cohort with a competing-risks ``cause`` label: cause 1 for the events of
    patients with an even id number, 2 for the others (0 = censored)."""
    import shutil

    import numpy as np
    import pandas as pd

    root = tmp_path_factory.mktemp("competing") / "cohort"
    shutil.copytree(synthetic_cohort, root, ignore=shutil.ignore_patterns(".clinfuse_cache"))
    labels = pd.read_parquet(root / "labels.parquet")
    even = labels["patient_id"].str[-1].astype(int) % 2 == 0
    labels["cause"] = np.where(labels["event"] == 1, np.where(even, 1, 2), 0)
    labels.to_parquet(root / "labels.parquet", index=False)
    return root
