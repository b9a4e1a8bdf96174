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
