"""`clinfuse robustness`: models per head, subsets / MCAR / shift evaluations, CSV, plots, MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from lifelines.utils import concordance_index

from clinfuse.experiments.module import ClinFuseModule
from clinfuse.experiments.robustness import (
    TrainingShift,
    build_datamodule,
    parse_args,
    robustness_main,
    shift_removal,
)
from clinfuse.experiments.robustness_eval import all_subsets, predict, random_removal, subset_removal

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
HEADS = ["masked_mean", "cascaded"]
MODALITIES = ["tabular", "timeseries", "genomics"]  # canonical order of the loaded modalities


def _overrides(cohort: Path) -> list[str]:
    return ["--data.root", str(cohort), "--data.synth_if_missing=false", "--data.batch_size=32",
            f"--data.modalities=[{', '.join(MODALITIES)}]", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--data.max_events=64"]


@pytest.fixture(scope="module")
def study(synthetic_cohort, tmp_path_factory):
    """One tiny study (2 heads, 1 epoch) run through ``robustness_main`` with MLflow in a temp cwd."""
    work = tmp_path_factory.mktemp("robustness")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        argv = ["--config", str(QUICKSTART), "--heads", ",".join(HEADS), "--epochs", "1",
                "--rates", "0,1", "--out", str(work / "out"), *_overrides(synthetic_cohort)]
        results = robustness_main(argv)
    dm = build_datamodule([str(QUICKSTART)], _overrides(synthetic_cohort))
    return {"work": work, "out": work / "out", "results": results, "dm": dm, "cohort": synthetic_cohort}


def _ckpt(out: Path, head: str) -> Path:
    (path,) = (out / "checkpoints" / head / "checkpoints").glob("*.ckpt")
    return path


def test_csv_has_every_subset_for_every_head(study):
    csv = pd.read_csv(study["out"] / "robustness.csv", keep_default_na=False, na_values=[""])
    assert len(csv) == len(study["results"])
    subsets = csv[csv["kind"] == "subset"]
    expected = {(h, "+".join(s)) for h in HEADS for s in all_subsets(MODALITIES)}
    assert set(zip(subsets["head"], subsets["condition"])) == expected and len(subsets) == len(expected) == 14
    assert set(csv["kind"]) == {"subset", "mcar", "mar", "mnar"}
    n_test = len(study["dm"].cohort.splits["test"])
    assert (csv["n_patients"] == n_test).all() and (csv["n_with_data"] <= n_test).all()
    assert csv["value"].between(0, 1).all()
    # the synthetic cohort has an oracle given any subset: finite, and one value per evaluation
    assert csv["oracle"].between(0, 1).all()
    assert (csv.groupby(["kind", "condition"])["oracle"].nunique() == 1).all()


def test_removing_a_modality_by_subset_equals_a_batch_that_never_had_it(study):
    dm = study["dm"]
    model = ClinFuseModule.load_from_checkpoint(_ckpt(study["out"], "cascaded"), map_location="cpu").eval()
    batches = list(dm.split_dataloader("test"))
    presence = dm.cohort.presence().loc[list(dm.cohort.splits["test"])]
    keep = ("tabular", "genomics")
    got = predict(model, batches, subset_removal(presence, keep))
    by_hand, full = [], []
    with torch.no_grad():
        for batch in batches:  # the model never sees the time series at all
            out, _ = model({m: x for m, x in batch["inputs"].items() if m in keep})
            by_hand.append(model.risk(out))
            full.append(model.risk(model(batch["inputs"])[0]))
    by_hand, full = torch.cat(by_hand).numpy(), torch.cat(full).numpy()
    np.testing.assert_allclose(got["score"].to_numpy(), by_hand, rtol=1e-5, atol=1e-6)
    assert got["patient_id"].tolist() == list(presence.index)
    assert not np.allclose(by_hand, full)  # the time series did matter for patients who have it
    # the CSV value is Harrell's C of those predictions (lifelines as the independent reference)
    labels = dm.cohort.labels.set_index("patient_id").loc[got["patient_id"]]
    reference = concordance_index(labels["time"], -by_hand, labels["event"])
    row = study["results"].query("head == 'cascaded' and kind == 'subset' and condition == 'tabular+genomics'")
    assert row["value"].item() == pytest.approx(reference, abs=1e-6)


def test_mcar_rate_zero_equals_the_full_set(study):
    r = study["results"]
    full = r[(r["kind"] == "subset") & (r["condition"] == "+".join(MODALITIES))].set_index("head")
    zero = r[(r["kind"] == "mcar") & (r["condition"] == "0")].set_index("head")
    pd.testing.assert_series_equal(zero.loc[HEADS, "value"], full.loc[HEADS, "value"])
    assert zero["oracle"].iloc[0] == pytest.approx(full["oracle"].iloc[0])


def test_rate_one_keeps_exactly_one_of_each_patients_modalities(study):
    dm = study["dm"]
    presence = dm.cohort.presence().loc[list(dm.cohort.splits["test"])]
    drops = random_removal(presence, "mcar", 1.0, np.random.default_rng(0))
    kept = presence & ~drops
    has_any = presence.any(axis=1)
    assert (kept.sum(axis=1)[has_any] == 1).all() and not kept[~has_any].any(axis=None)
    assert not (kept & ~presence).any(axis=None)  # only modalities the patient had
    assert (kept.sum(axis=0) > 0).sum() >= 2  # the kept one is drawn, not always the same
    # without the rule nothing is left; the study's "mcar: 1" row counts the patients with data
    assert not (presence & ~random_removal(presence, "mcar", 1.0, np.random.default_rng(0), keep_one=False)).any(axis=None)
    row = study["results"].query("kind == 'mcar' and condition == '1'")
    assert (row["n_with_data"] == int(has_any.sum())).all()
    assert (random_removal(presence, "mcar", 0.0, np.random.default_rng(0)) == False).all(axis=None)  # noqa: E712


def test_mnar_shift_reverses_between_train_and_test(study):
    dm = study["dm"]
    a, _ = parse_args(["--config", str(QUICKSTART)])
    ids = list(dm.cohort.splits["train"])
    event = dm.cohort.labels.set_index("patient_id").loc[ids, "event"].astype(bool).to_numpy()
    presence = dm.cohort.presence().loc[ids]
    rate = {}
    for direction in (+1, -1):
        lost = (shift_removal("mnar", direction, dm, ids, "survival", a) & presence).sum(axis=1) / presence.sum(axis=1)
        rate[direction] = (lost[event].mean(), lost[~event].mean())
    assert rate[+1][0] > rate[+1][1] + 0.2  # training: positives (events) lose modalities
    assert rate[-1][1] > rate[-1][0] + 0.2  # test: negatives do


def test_training_shift_marks_removed_modalities_absent(study):
    dm = study["dm"]
    batch = next(iter(dm.split_dataloader("train")))
    ids = batch["patient_id"]
    removal = pd.DataFrame(False, index=pd.Index(ids), columns=MODALITIES)
    removal.loc[ids[::2], "tabular"] = True
    before = batch["inputs"]["tabular"]["present"].clone()
    TrainingShift(removal).on_train_batch_start(None, None, batch, 0)
    expected = before & ~torch.as_tensor(removal["tabular"].to_numpy())
    assert torch.equal(batch["inputs"]["tabular"]["present"], expected) and not torch.equal(expected, before)


def test_plots_are_written(study):
    for name in ("subset_heatmap.png", "mcar_lines.png", "oracle_gap.png"):
        path = study["out"] / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_mlflow_run_has_the_csv_and_plots(study):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{study['work'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name("clinfuse")
    (run,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'robustness'")
    names = {f.path for f in client.list_artifacts(run.info.run_id)}
    names |= {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert {"robustness.csv", "plots/subset_heatmap.png", "plots/mcar_lines.png", "plots/oracle_gap.png"} <= names
    assert run.data.params["heads"] == ",".join(HEADS)


def test_checkpoints_are_scored_like_the_trained_models(study, tmp_path):
    path = _ckpt(study["out"], "masked_mean")
    argv = ["--config", str(QUICKSTART), "--ckpt", str(path), "--rates", "0,1", "--out", str(tmp_path),
            "--no-mlflow", *_overrides(study["cohort"])]
    again = robustness_main(argv)
    assert set(again["head"]) == {"MaskedMeanFusion"} and not (tmp_path / "mlflow.db").exists()
    before = study["results"].query("head == 'masked_mean'").set_index(["kind", "condition"])["value"]
    after = again.set_index(["kind", "condition"])["value"]
    pd.testing.assert_series_equal(after.loc[before.index], before)  # same removals, same scores


def test_several_draws_give_a_mean_and_sd_and_keep_draw_zero(study, tmp_path):
    from clinfuse.experiments.robustness_plots import markdown_table, oracle_gaps

    path = _ckpt(study["out"], "masked_mean")
    argv = ["--config", str(QUICKSTART), "--ckpt", str(path), "--rates", "0,1", "--draws", "3", "--out", str(tmp_path),
            "--no-mlflow", *_overrides(study["cohort"])]
    r = robustness_main(argv)
    counts = r.groupby(["kind", "condition"]).size()
    assert counts[("mcar", "0")] == 1 and counts[("subset", "+".join(MODALITIES))] == 1  # nothing random there
    assert counts[("mcar", "1")] == 3 and counts[("mnar", "0.5")] == 3 and counts[("mar", "0.5")] == 3
    # draw 0 is the removal a one-draw study uses, so its scores are the study's
    before = study["results"].query("head == 'masked_mean'").set_index(["kind", "condition"])["value"]
    first = r[r["draw"] == 0].set_index(["kind", "condition"])["value"]
    pd.testing.assert_series_equal(first.loc[before.index], before)
    # at rate 1 each patient keeps one modality chosen at random: the draws differ, for model and oracle
    at_one = r[(r["kind"] == "mcar") & (r["condition"] == "1")]
    assert at_one["value"].nunique() == 3 and at_one["oracle"].nunique() == 3
    table = markdown_table(r)
    assert f"| mcar: 1 | {at_one['value'].mean():.3f} ± {at_one['value'].std():.3f} |" in table
    assert "mean ± sd over 3 draws" in table
    assert f"| mcar: 0 | {r.loc[(r['kind'] == 'mcar') & (r['condition'] == '0'), 'value'].iloc[0]:.3f} |" in table
    # the mcar gap averages the rates, each rate once (its mean over draws)
    mcar = r[r["kind"] == "mcar"]
    per_rate = (mcar["oracle"] - mcar["value"]).groupby(mcar["condition"]).mean()
    assert oracle_gaps(r).loc["MaskedMeanFusion", "mcar"] == pytest.approx(per_rate.mean())
    assert (tmp_path / "mcar_lines.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--heads", "masked_mean,bogus"], "bogus"),
        (["--rates", "0,1.5"], "1.5"),
        (["--rates", "-0.1"], "-0.1"),
        (["--ckpt", "/nowhere/model.ckpt"], "/nowhere/model.ckpt"),
        (["--draws", "0"], "--draws must be >= 1, got 0"),
    ],
)
def test_bad_input_fails_with_a_clear_error(extra, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        robustness_main(["--config", str(QUICKSTART), "--out", str(tmp_path), *extra])


@pytest.mark.slow
def test_shift_train_adds_one_model_per_head_and_shift(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--config", str(QUICKSTART), "--heads", "masked_mean", "--epochs", "1", "--rates", "0",
            "--shift-train", "--out", str(tmp_path / "out"), "--no-mlflow", *_overrides(synthetic_cohort)]
    r = robustness_main(argv)
    assert set(r["trained_on"]) == {"cohort", "mar_shift", "mnar_shift"}
    for shift in ("mar", "mnar"):  # a shift-trained model: the full set and its own shift only
        rows = r[r["trained_on"] == f"{shift}_shift"]
        assert set(rows["kind"]) == {"subset", shift} and len(rows) == 2
        assert (tmp_path / "out" / "checkpoints" / f"masked_mean-{shift}_shift").is_dir()


@pytest.mark.parametrize(
    ("given", "expected"),
    [(["--rates", "0.2", "0.4"], [0.2, 0.4]), (["--rates", "0,0.2", "0.6"], [0.0, 0.2, 0.6]),
     (["--rates", "0.2,", "0.4"], [0.2, 0.4]), ([], [0.0, 0.2, 0.4, 0.6])],
)
def test_rates_may_be_comma_or_space_separated(given, expected):
    a, extra = parse_args(["--config", str(QUICKSTART), *given, "--data.batch_size=8"])
    assert a.rates == expected and extra == ["--data.batch_size=8"]


def test_rates_that_are_not_numbers_are_named():
    with pytest.raises(ValueError, match="--rates must be numbers.*'0.2 high'"):
        parse_args(["--config", str(QUICKSTART), "--rates", "0.2", "high"])


@pytest.mark.parametrize(
    ("column", "match"),
    [("sex", r"--mar-column 'sex': column 'sex' of .*tabular.parquet is not numeric"),
     ("nosuch", r"--mar-column 'nosuch': .*tabular.parquet has no column 'nosuch'")],
)
def test_named_mar_column_that_cannot_drive_the_shift_fails_before_training(column, match, synthetic_cohort,
                                                                           tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--config", str(QUICKSTART), "--heads", "masked_mean", "--mar-column", column, "--out", str(tmp_path / "out"),
            "--no-mlflow", *_overrides(synthetic_cohort)]
    with pytest.raises(ValueError, match=match) as err:
        robustness_main(argv)
    assert str(synthetic_cohort / "tabular.parquet") in str(err.value)
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing was trained


def test_default_mar_column_may_be_absent_but_a_named_one_may_not(tmp_path):
    from types import SimpleNamespace

    from clinfuse.experiments.robustness import check_mar_column, mar_column_problem, shift_driver

    pd.DataFrame({"patient_id": ["p1", "p2"], "bmi": [20.0, 31.0], "sex": ["F", "M"]}).to_parquet(
        tmp_path / "tabular.parquet", index=False)
    dm = SimpleNamespace(cohort=SimpleNamespace(root=str(tmp_path)))
    default, _ = parse_args(["--config", str(QUICKSTART)])
    assert default.mar_column == "age" and not default.mar_column_given
    check_mar_column(dm, default)  # no age column: no mar shift, no error (the study prints why)
    assert "no column 'age'" in mar_column_problem(tmp_path, "age")
    assert shift_driver("mar", dm, ["p1", "p2"], "survival", "age") is None
    named, _ = parse_args(["--config", str(QUICKSTART), "--mar-column", "age"])
    with pytest.raises(ValueError, match="--mar-column 'age'"):
        check_mar_column(dm, named)
    bmi, _ = parse_args(["--config", str(QUICKSTART), "--mar-column", "bmi"])
    check_mar_column(dm, bmi)
    np.testing.assert_array_equal(shift_driver("mar", dm, ["p2", "p1"], "survival", "bmi"), [31.0, 20.0])
