"""Every notebook in notebooks/ executes top to bottom (small settings)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("CLINFUSE_NB_PATIENTS", "160")
    monkeypatch.setenv("CLINFUSE_NB_EPOCHS", "1")
    monkeypatch.setenv("CLINFUSE_NB_WORKDIR", str(tmp_path))  # the notebooks' files, removed with tmp_path
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Traceback" not in outputs
    assert f"outputs of this run: {tmp_path}" in outputs
    if path.name == "quickstart.ipynb":
        assert "model vs oracle" in outputs and "log-rank p:" in outputs
    if path.name == "survival_prognosis.ipynb":
        assert "log-rank p (predicted-risk tertiles" in outputs and "Harrell C-index" in outputs
        assert "contributions {" in outputs and "tabular only" in outputs
        assert "feature contributions (largest first): {'" in outputs
        assert "input_warnings: ['tabular.creatinine: 97 is +" in outputs
        assert "past the model's" not in outputs  # HORIZONS stay before the last training event
    if path.name == "competing_risks.ipynb":
        assert "causes: {0:" in outputs and "c_index_cause1" in outputs and "incidence at 1 and 2 years:" in outputs
    if path.name == "robustness.ipynb":
        assert "C-index by MCAR rate" in outputs and "gap to the oracle" in outputs
        assert "smallest mean gap to the oracle:" in outputs
