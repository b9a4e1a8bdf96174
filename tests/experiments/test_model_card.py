"""The model card written with a predictor: training summary, test metric, inputs, no patient data."""

from __future__ import annotations

import json

import pytest

from clinfuse.experiments.metrics import harrell_c_index


def test_card_and_summary_round_trip(trained_prognosis, synthetic_cohort, tmp_path):
    prog, _ = trained_prognosis
    folder = prog.save(tmp_path / "p")
    card = (folder / "model_card.md").read_text()
    summary = json.loads((folder / "meta.json").read_text())["summary"]
    # the test metric is the model's C-index on the test split, as predict_cohort scores it
    frame = prog.predict_cohort(synthetic_cohort, split="test", show_progress=False)
    want = harrell_c_index(frame["risk"].to_numpy(), frame["time"].to_numpy(), frame["event"].to_numpy())
    assert summary["test"]["c_index"] == pytest.approx(want, abs=1e-6)
    assert summary["test"]["n"] == len(frame) and sum(summary["splits"].values()) == 160
    assert f"Harrell C-index {summary['test']['c_index']:.4f}" in card
    for text in ("## Training data", "## Inputs and their training ranges", "## Limitations",
                 "tabular `TabularMLPEncoder`", "creatinine", "timeseries: times in hours"):
        assert text in card, text
    assert not [pid for pid in frame["patient_id"] if pid in card]  # no patient id in the card
    from clinfuse.experiments.prognosis import Prognosis

    again = Prognosis.load(folder)
    assert again.summary == summary
