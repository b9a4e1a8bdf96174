"""`clinfuse evaluate`: the report's numbers equal the metrics computed directly, files written."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from clinfuse.experiments.metrics import harrell_c_index


def test_report_equals_direct_metrics_and_files_exist(trained_prognosis, synthetic_cohort, tmp_path, capsys):
    from clinfuse.experiments.cli import main
    from clinfuse.experiments.external_validation import validate_cohort

    prog, _ = trained_prognosis
    result = validate_cohort(prog, synthetic_cohort, tmp_path / "v", split="test", n_boot=50, show_progress=False)
    rows = pd.read_csv(tmp_path / "v" / "predictions.csv", dtype={"patient_id": str})
    assert result["report"]["harrell"] == pytest.approx(harrell_c_index(rows["risk"], rows["time"], rows["event"]))
    assert result["n"] == len(rows) and result["events"] == int(rows["event"].sum())
    for name in ("report.md", "km_risk_groups.png", "calibration.png"):
        assert (tmp_path / "v" / name).stat().st_size > 100, name
    # the survival curves behind IBS are the predictor's own: S at a horizon equals predict_cohort's column
    frame = prog.predict_cohort(synthetic_cohort, split="test", horizons=(365.0,), show_progress=False)
    raw = []
    prog.predict_cohort(synthetic_cohort, split="test", show_progress=False, raw_outputs=raw)
    import torch

    np.testing.assert_allclose(prog.survival_matrix(torch.cat(raw), [365.0])[:, 0], frame["survival_at_365"], atol=1e-6)

    old, sys.argv = sys.argv, ["clinfuse", "evaluate", "--model", str(prog.save(tmp_path / "p")), "--root",
                               str(synthetic_cohort), "--out", str(tmp_path / "cli"), "--split", "test", "--n-boot", "30"]
    try:
        main()
    finally:
        sys.argv = old
    out = capsys.readouterr().out
    assert "# External validation" in out and "| Harrell C-index |" in out and "written to" in out
    assert f"{len(rows)} patients" in out


def test_unlabelled_folder_and_non_survival_model_are_refused(trained_prognosis, synthetic_cohort, tmp_path):
    import shutil

    from clinfuse.experiments.external_validation import validate_cohort

    prog, _ = trained_prognosis
    bare = tmp_path / "bare"
    shutil.copytree(synthetic_cohort, bare, ignore=shutil.ignore_patterns(".clinfuse_cache", "ecg", "wsi"))
    (bare / "labels.parquet").unlink()
    (bare / "splits.csv").unlink()
    with pytest.raises(ValueError, match="needs time and event labels"):
        validate_cohort(prog, bare, tmp_path / "v", show_progress=False)


def test_binary_model_report(synthetic_cohort, tmp_path, train_predictor):
    from sklearn.metrics import roc_auc_score

    from clinfuse.experiments.binary_validation import calibration_fit, reliability_table
    from clinfuse.experiments.external_validation import validate_cohort

    _, prog = train_predictor(synthetic_cohort, tmp_path, ["tabular", "genomics"], epochs=2, d_model=16, task="binary")
    result = validate_cohort(prog, synthetic_cohort, tmp_path / "v", n_boot=40, show_progress=False)
    rows = pd.read_csv(tmp_path / "v" / "predictions.csv")
    assert result["report"]["auroc"][0] == pytest.approx(roc_auc_score(rows["binary"], rows["probability"]))
    assert (tmp_path / "v" / "calibration.png").stat().st_size > 1000
    assert "| AUROC |" in (tmp_path / "v" / "report.md").read_text()
    # the recalibration of perfectly calibrated draws gives intercept ~0 and slope ~1
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    a, b = calibration_fit(p, rng.uniform(size=p.size) < p)
    assert abs(a) < 0.05 and abs(b - 1) < 0.05
    table = reliability_table(p, rng.uniform(size=p.size) < p)
    assert len(table) == 10 and (table["observed_lower"] <= table["observed"]).all()
    # calibration-in-the-large: the a solving sum(y - expit(a + logit p)) = 0; over-prediction gives a < 0
    from scipy.special import expit, logit

    from clinfuse.experiments.binary_validation import calibration_in_the_large

    y = rng.uniform(size=p.size) < p * 0.8  # events at 80% of the predicted rate
    a = calibration_in_the_large(p, y)
    assert a < -0.1 and abs(np.sum(y - expit(a + logit(p)))) < 1e-6
    assert "| calibration-in-the-large" in (tmp_path / "v" / "report.md").read_text()
    assert np.abs(table["observed"] - table["predicted"]).max() < 0.05


def test_competing_risks_report_has_cause_specific_c(competing_cohort, tmp_path, train_predictor):
    from clinfuse.experiments.external_validation import validate_cohort

    _, prog = train_predictor(competing_cohort, tmp_path, ["tabular", "genomics"], d_model=16,
                              survival_loss="pmf_cr", n_time_bins=4)
    result = validate_cohort(prog, competing_cohort, tmp_path / "v", n_boot=30, show_progress=False)
    rows = pd.read_csv(tmp_path / "v" / "predictions.csv")
    import torch

    raw = []
    prog.predict_cohort(competing_cohort, show_progress=False, raw_outputs=raw)
    lost = prog.model.objective.cumulative_incidence(torch.cat(raw)).sum(-1).numpy()
    want = harrell_c_index(lost[:, 0], rows["time"].to_numpy(), (rows["cause"] == 1).to_numpy())
    assert result["causes"]["cause 1"][0] == pytest.approx(want)
    report = (tmp_path / "v" / "report.md").read_text()
    assert "| cause 2 |" in report and "cumulative_incidence.png" in report


def test_report_by_subgroup(trained_prognosis, synthetic_cohort, tmp_path):
    from clinfuse.experiments.subgroups import tabular_groups
    from clinfuse.experiments.external_validation import validate_cohort

    prog, _ = trained_prognosis
    validate_cohort(prog, synthetic_cohort, tmp_path / "v", split="test", n_boot=30, show_progress=False, by="sex")
    report = (tmp_path / "v" / "report.md").read_text()
    rows = pd.read_csv(tmp_path / "v" / "predictions.csv", dtype={"patient_id": str})
    groups = tabular_groups(synthetic_cohort, "sex", rows["patient_id"])
    female = (groups == "F").to_numpy()
    want = harrell_c_index(rows["risk"][female], rows["time"][female], rows["event"][female])
    line = next(x for x in report.splitlines() if x.startswith("| F |"))
    assert "## By sex" in report and f"| {want:.4f} |" in line
    with pytest.raises(ValueError, match="column"):
        validate_cohort(prog, synthetic_cohort, tmp_path / "w", split="test", n_boot=10, show_progress=False, by="no_such")
