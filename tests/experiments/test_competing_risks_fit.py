"""Competing risks end to end: a cohort with a ``cause`` label, `clinfuse fit` with ``pmf_cr`` /
``deephit_cr``, cause-specific metrics, and the predictor's cumulative incidence."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.datasets.cohort import Cohort
from clinfuse.experiments.cli import cli_main
from clinfuse.experiments.prognosis import Prognosis

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"


def _args(root: Path, tmp_path: Path, loss: str) -> list[str]:
    return ["--config", str(QUICKSTART), "--data.root", str(root), "--data.synth_if_missing=false",
            "--data.modalities=[tabular, timeseries, genomics]", "--data.batch_size=32",
            "--model.survival_loss", loss, "--model.n_time_bins=4", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", str(tmp_path)]


@pytest.mark.parametrize("loss", ["pmf_cr", "deephit_cr"])
def test_fit_logs_cause_specific_c_and_predicts_cumulative_incidence(competing_cohort, tmp_path, monkeypatch, loss):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", *_args(competing_cohort, tmp_path, loss), "--trainer.max_epochs=2"])
    model = cli.model
    assert model.objective.n_causes == 2 and model.objective.n_outputs == 2 * 4 + 1  # linked from the data
    metrics = cli.trainer.callback_metrics
    (run_dir,) = (tmp_path / "figures").iterdir()  # one folder per run (no logger: named by time)
    assert (run_dir / "cumulative_incidence.png").stat().st_size > 1000 and (run_dir / "km_risk_groups.png").exists()
    for name in ("test/c_index", "test/c_index_cause1", "test/c_index_cause2"):
        assert 0.0 <= float(metrics[name]) <= 1.0, name

    prog = Prognosis.from_training(cli.trainer.checkpoint_callback.best_model_path, cli.datamodule)
    from clinfuse.experiments.cohort_records import records_from_cohort

    ids = list(cli.datamodule.cohort.splits["test"])[:3]
    keep = ("patient_id", "tabular", "timeseries", "genomics")
    records = [{k: v for k, v in r.items() if k in keep} for r in records_from_cohort(competing_cohort, ids)]
    preds = prog.predict(records, horizons=(30, 365, 3000))
    for p in preds:
        cif = p["cumulative_incidence"]
        assert cif["times"] == p["survival_curve"]["times"]
        total = np.asarray(cif["cause_1"]) + np.asarray(cif["cause_2"]) + np.asarray(p["survival_curve"]["survival"])
        np.testing.assert_allclose(total, 1.0, atol=1e-5)  # all-cause S + sum of CIFs = 1 at every bin end
        for c in ("cause_1", "cause_2"):
            at = [p["incidence_at"][c][h] for h in (30, 365, 3000)]
            assert np.all(np.diff(at) >= -1e-9) and 0.0 <= at[0] and at[-1] <= 1.0
        s_at = np.array([p["survival_at"][h] for h in (30, 365, 3000)])
        cif_at = np.array([[p["incidence_at"][c][h] for h in (30, 365, 3000)] for c in ("cause_1", "cause_2")])
        np.testing.assert_allclose(s_at + cif_at.sum(0), 1.0, atol=1e-5)

    # scoring the folder gives the same incidences as columns
    frame = prog.predict_cohort(competing_cohort, patient_ids=ids, horizons=(30, 365, 3000), show_progress=False)
    for p in preds:
        row = frame.set_index("patient_id").loc[p["patient_id"]]
        for c in ("cause_1", "cause_2"):
            assert row[f"incidence_{c}_at_365"] == pytest.approx(p["incidence_at"][c][365], abs=1e-6)


def test_a_competing_loss_without_cause_labels_is_refused(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"label\(s\) 'time' and 'event' and 'cause'"):
        cli_main(["fit", *_args(synthetic_cohort, tmp_path, "pmf_cr"), "--trainer.max_epochs=1"])


def test_cause_must_agree_with_event(competing_cohort, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(competing_cohort, root, ignore=shutil.ignore_patterns(".clinfuse_cache", "ecg", "wsi"))
    labels = pd.read_parquet(root / "labels.parquet")
    censored = labels.index[labels["event"] == 0][0]
    labels.loc[censored, "cause"] = 2
    labels.to_parquet(root / "labels.parquet", index=False)
    with pytest.raises(ValueError, match=rf"labels\.parquet: column 'cause'.*{labels.loc[censored, 'patient_id']}"):
        Cohort.load(root, ["tabular"])


def test_synthetic_causes_print_the_cause_specific_oracle(tmp_path, monkeypatch, capsys):
    from clinfuse.datasets.synthetic import generate_cohort

    root = generate_cohort(tmp_path / "cr", n_patients=200, seed=2, n_causes=2, wsi_patches=(10, 20), show_progress=False)
    monkeypatch.chdir(tmp_path)
    cli_main(["fit", *_args(root, tmp_path, "pmf_cr"), "--trainer.max_epochs=2"])
    out = capsys.readouterr().out
    table = out[out.index("model vs oracle"):]
    for name in ("c_index ", "c_index_cause1 ", "c_index_cause2 "):
        row = next(line for line in table.splitlines() if line.startswith(name))
        model, full, observed = (float(x) if x != "-" else None for x in row.split()[1:4])
        assert 0.0 <= model <= 1.0 and 0.5 < full <= 1.0, row
        # the model reads fewer modalities than the cohort: no per-cause oracle(observed) for them
        assert (0.0 < observed <= 1.0) if name == "c_index " else observed is None, row
    assert "-: no oracle(observed) for the modalities this model reads" in table
