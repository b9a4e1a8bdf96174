"""The printed model-vs-oracle table says what its columns are, and no ratio where it means nothing."""

from __future__ import annotations

from clinfuse.experiments.oracle import format_comparison


def test_ratio_by_hand_and_notes():
    text = format_comparison({"test/c_index": 0.7}, {"c_index_full": 0.8, "c_index_observed": 0.75}, "survival",
                             ["tabular", "ecg"], ["tabular", "ecg"])
    row = next(line for line in text.splitlines() if line.startswith("c_index"))
    assert row.split() == ["c_index", "0.7000", "0.8000", "0.7500", "0.875"]
    assert "Bayes-optimal" in text and "Chance is 0.5" in text and "reads" not in text


def test_fewer_loaded_modalities_are_named_and_auprc_has_no_ratio():
    oracle = {"auroc_full": 0.9, "auroc_observed": 0.8, "auprc_full": 0.7, "auprc_observed": 0.6}
    text = format_comparison({"test/auroc": 0.72, "test/auprc": 0.5}, oracle, "binary", ["tabular"], ["tabular", "wsi"])
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("auroc", "auprc"))}
    assert rows["auroc"][-1] == "0.800" and rows["auprc"][-1] == "-"
    assert "this model reads ['tabular'] only; oracle(observed) uses every modality of the cohort (['tabular', 'wsi'])" in text
