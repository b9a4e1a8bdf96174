"""Prognosis.predict_cohort: scoring a cohort folder equals predict() on the raw records."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightning")

from clinfuse.experiments.cohort_records import records_from_cohort  # noqa: E402

from .test_prognosis import trained  # noqa: E402,F401 - the module-scoped trained predictor


def test_equals_predict_on_raw_records_with_contributions(trained, synthetic_cohort):
    dm, prog = trained
    ids = list(dm.cohort.splits["test"])
    frame = prog.predict_cohort(synthetic_cohort, split="test", horizons=(30, 365), contributions=True,
                                batch_size=7, show_progress=False)
    assert frame["patient_id"].tolist() == ids
    want = {r["patient_id"]: r for r in prog.predict(records_from_cohort(synthetic_cohort, ids), horizons=(30, 365))}
    for row in frame.to_dict("records"):
        w = want[row["patient_id"]]
        assert row["modalities_used"] == ",".join(w["modalities_used"])
        assert row["risk"] == pytest.approx(w["risk"], abs=1e-5)
        assert row["median_survival"] == pytest.approx(w["median_survival"], rel=1e-5)
        assert row["survival_at_30"] == pytest.approx(w["survival_at"][30], abs=1e-6)
        assert row["survival_at_365"] == pytest.approx(w["survival_at"][365], abs=1e-6)
        assert row["input_warnings"] == "; ".join(w["input_warnings"])  # the same checks on reader items
        for m in prog.modalities:
            got = row[f"contribution_{m}"]
            assert (np.isnan(got) if m not in w["contributions"] else got == pytest.approx(w["contributions"][m], abs=1e-5))
    # the folder's labels ride along for external validation
    labels = pd.read_parquet(synthetic_cohort / "labels.parquet").set_index("patient_id").loc[ids]
    np.testing.assert_allclose(frame["time"].to_numpy(), labels["time"].to_numpy())


def test_unlabelled_folder_without_some_modalities(trained, synthetic_cohort, tmp_path):
    """New patients: no labels, no splits, no slides. Every patient with any modality is scored;
    the missing modality is absent for all (not zero-filled), as predict() without that field."""
    dm, prog = trained
    new = tmp_path / "new"
    shutil.copytree(synthetic_cohort, new, ignore=shutil.ignore_patterns(".clinfuse_cache", "wsi"))
    for name in ("labels.parquet", "splits.csv", "oracle.parquet"):
        (new / name).unlink(missing_ok=True)
    with pytest.warns(UserWarning, match=r"no file for the model's modality \['wsi'\] \(expected \['wsi/slides.csv'\]\)"):
        frame = prog.predict_cohort(new, show_progress=False)
    assert not frame["modalities_used"].str.contains("wsi").any()
    assert "time" not in frame.columns and frame["patient_id"].is_monotonic_increasing
    pick = frame["patient_id"].tolist()[:5]
    recs = [{k: v for k, v in r.items() if k != "wsi"} for r in records_from_cohort(synthetic_cohort, pick)]
    want = prog.predict(recs, contributions=False)
    np.testing.assert_allclose(frame["risk"].to_numpy()[:5], [w["risk"] for w in want], atol=1e-5)


def test_bad_arguments_are_named(trained, synthetic_cohort, tmp_path):
    _, prog = trained
    with pytest.raises(ValueError, match="does not exist"):
        prog.predict_cohort(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="splits.csv is a file, not a folder"):
        prog.predict_cohort(synthetic_cohort / "splits.csv")
    with pytest.raises(ValueError, match=r"holds none of the model's modalities"):
        prog.predict_cohort(tmp_path)
    with pytest.raises(ValueError, match=r"not in labels\.parquet.*|patient\(s\) \['ghost'\]"):
        prog.predict_cohort(synthetic_cohort, patient_ids=["ghost"])
    with pytest.raises(ValueError, match=r"split='holdout': expected one of"):
        prog.predict_cohort(synthetic_cohort, split="holdout")
    # a splits file the cohort loader would refuse is refused here too, naming the file and patient
    import shutil

    copy = tmp_path / "dup"
    shutil.copytree(synthetic_cohort, copy, ignore=shutil.ignore_patterns("ecg", "wsi", ".clinfuse_cache"))
    splits = pd.read_csv(copy / "splits.csv", dtype=str)
    pd.concat([splits, splits.iloc[:1]]).to_csv(copy / "splits.csv", index=False)
    with pytest.raises(ValueError, match=rf"splits\.csv.*{splits['patient_id'][0]}"):
        prog.predict_cohort(copy, split="test")
    with pytest.raises(ValueError, match="patient_ids or split"):
        prog.predict_cohort(synthetic_cohort, split="test", patient_ids=["x"])


def test_clinfuse_score_writes_the_frame_and_the_c_index(trained, synthetic_cohort, tmp_path, capsys):
    from clinfuse.experiments.cli import main
    from clinfuse.experiments.metrics import harrell_c_index

    _, prog = trained
    model = prog.save(tmp_path / "predictor")
    import sys

    argv = ["clinfuse", "score", "--model", str(model), "--root", str(synthetic_cohort), "--split", "test",
            "--out", str(tmp_path / "out" / "preds.parquet"), "--horizons", "30", "--batch-size", "16"]
    old, sys.argv = sys.argv, argv
    try:
        main()
    finally:
        sys.argv = old
    got = pd.read_parquet(tmp_path / "out" / "preds.parquet")
    want = prog.predict_cohort(synthetic_cohort, split="test", horizons=(30,), show_progress=False)
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-6)
    c = harrell_c_index(want["risk"].to_numpy(), want["time"].to_numpy(), want["event"].to_numpy())
    printed = capsys.readouterr().out
    assert f"scored {len(want)} patients" in printed
    assert f"Harrell C-index against the folder's labels: {c:.4f}" in printed


def test_clinfuse_score_in_bf16_mixed_precision(trained, synthetic_cohort, tmp_path):
    from clinfuse.experiments.prognosis_cohort import score_main

    _, prog = trained
    model = prog.save(tmp_path / "predictor")
    out = tmp_path / "bf16.csv"
    score_main(["--model", str(model), "--root", str(synthetic_cohort), "--split", "test", "--out", str(out),
                "--precision", "bf16-mixed"])
    got = pd.read_csv(out)
    want = prog.predict_cohort(synthetic_cohort, split="test", show_progress=False)
    assert list(got["patient_id"].astype(str)) == list(want["patient_id"].astype(str))
    spread = want["risk"].std()
    assert (got["risk"] - want["risk"]).abs().max() <= 0.05 * spread + 1e-3
    assert (got["risk"] != want["risk"]).any()
    with pytest.raises(SystemExit):  # argparse names the choices
        score_main(["--model", str(model), "--root", str(synthetic_cohort), "--out", str(out), "--precision", "16"])


def _labelled_copy(src, dst, change):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("ecg", "wsi", ".clinfuse_cache"))
    labels = pd.read_parquet(dst / "labels.parquet")
    change(labels)
    labels.to_parquet(dst / "labels.parquet", index=False)
    return labels


@pytest.mark.parametrize("case", ["duplicate", "nan_time", "negative_time"])
def test_bad_labels_are_refused_naming_file_column_and_patient(trained, synthetic_cohort, tmp_path, case):
    _, prog = trained

    def change(df):
        if case == "duplicate":
            df.loc[len(df)] = df.iloc[3]
        else:
            df.loc[3, "time"] = np.nan if case == "nan_time" else -5.0

    labels = _labelled_copy(synthetic_cohort, tmp_path / "c", change)
    pid = labels.loc[3, "patient_id"]
    match = {"duplicate": rf"labels\.parquet.*{pid}", "nan_time": rf"labels\.parquet: column 'time'.*{pid}",
             "negative_time": rf"labels\.parquet: column 'time'.*{pid}"}[case]
    with pytest.raises(ValueError, match=match):  # checked before any modality is read
        prog.predict_cohort(tmp_path / "c", split="test", show_progress=False)


def test_a_split_patient_without_labels_is_named(trained, synthetic_cohort, tmp_path):
    _, prog = trained
    _labelled_copy(synthetic_cohort, tmp_path / "c", lambda df: None)
    with open(tmp_path / "c" / "splits.csv", "a") as f:
        f.write("PX999,test\n")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"splits\.csv: patient\(s\) \['PX999'\] of split 'test' are not in labels"):
        prog.predict_cohort(tmp_path / "c", split="test", show_progress=False)


def test_horizons_past_the_last_event_warn_and_bad_ones_fail(trained, synthetic_cohort):
    _, prog = trained
    end = prog.last_event_time
    assert end == pytest.approx(float(prog.baseline.event_times[-1]))
    with pytest.warns(UserWarning, match=rf"horizons \['{2 * end:g}'\] are past the model's last training event time"):
        frame = prog.predict_cohort(synthetic_cohort, split="test", horizons=(30, end, 2 * end), show_progress=False)
    np.testing.assert_allclose(frame[f"survival_at_{2 * end:g}"], frame[f"survival_at_{end:g}"])  # carried forward
    with pytest.raises(ValueError, match=r"horizons must be finite and >= 0, got \[-30.0\]"):
        prog.predict([{"patient_id": "a", "tabular": {}}], horizons=(-30, 30))


def test_score_refuses_to_overwrite_the_cohort_and_scores_binary_models_by_auroc(synthetic_cohort, tmp_path, train_predictor, capsys):
    from clinfuse.experiments.prognosis_cohort import _agreement, score_main

    _, prog = train_predictor(synthetic_cohort, tmp_path, ["tabular"], task="binary")
    model = prog.save(tmp_path / "binary")
    with pytest.raises(SystemExit):
        score_main(["--model", str(model), "--root", str(synthetic_cohort), "--out", str(synthetic_cohort / "labels.parquet")])
    assert "is an existing file of the cohort folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit):
        score_main(["--model", str(model), "--root", str(synthetic_cohort), "--out", str(tmp_path / "afile" / "p.csv")])
    assert "is a file, not a folder" in capsys.readouterr().err
    score_main(["--model", str(model), "--root", str(synthetic_cohort), "--split", "test", "--out", str(tmp_path / "b.csv")])
    frame = pd.read_csv(tmp_path / "b.csv")
    assert "AUROC against the folder's binary labels" in capsys.readouterr().out and "Harrell" not in _agreement(frame, "binary")
    from sklearn.metrics import roc_auc_score

    assert _agreement(frame, "binary") == f"; AUROC against the folder's binary labels: {roc_auc_score(frame['binary'], frame['risk']):.4f}"


def test_score_of_every_split_reports_the_metric_per_split(synthetic_cohort, tmp_path, train_predictor, capsys):
    from sklearn.metrics import roc_auc_score

    from clinfuse.experiments.prognosis_cohort import score_main

    _, prog = train_predictor(synthetic_cohort, tmp_path, ["tabular"], task="binary")
    model = prog.save(tmp_path / "binary")
    score_main(["--model", str(model), "--root", str(synthetic_cohort), "--out", str(tmp_path / "all.csv")])
    printed = capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "all.csv").merge(pd.read_csv(synthetic_cohort / "splits.csv"), on="patient_id")
    parts = {s: frame[frame["split"] == s] for s in ("train", "val", "test")}
    want = ", ".join(f"{s} (n={len(f)}) {roc_auc_score(f['binary'], f['risk']):.4f}" for s, f in parts.items())
    assert f"; by split: {want} (the training patients flatter the model" in printed
