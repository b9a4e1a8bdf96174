"""The prognosis API: raw records -> the same predictions as the data module's test loader."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

lightning = pytest.importorskip("lightning")

from clinfuse.datasets.datamodule import ClinicalDataModule  # noqa: E402
from clinfuse.datasets.dataset import ClinicalDataset, Collator  # noqa: E402
from clinfuse.experiments import Prognosis  # noqa: E402
from clinfuse.experiments.module import ClinFuseModule  # noqa: E402
from clinfuse.experiments.prognosis_inputs import finish_items  # noqa: E402
from clinfuse.experiments.prognosis import PrognosisPyfunc  # noqa: E402
from clinfuse.fusion.multimodn import MultiModNFusion  # noqa: E402
from clinfuse.experiments.cohort_records import records_from_cohort  # noqa: E402


def _train(root, tmp_path, fusion=None, task="survival"):
    torch.manual_seed(0)
    dm = ClinicalDataModule(str(root), batch_size=32, max_patches=32)
    model = ClinFuseModule(spec=dm.spec, d_model=16, fusion=fusion, task=task)
    trainer = lightning.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, limit_train_batches=2, limit_val_batches=0, default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return dm, Prognosis.from_training(ckpt, dm)


@pytest.fixture(scope="module")
def trained(synthetic_cohort, tmp_path_factory):
    return _train(synthetic_cohort, tmp_path_factory.mktemp("prog"))


@pytest.fixture(scope="module")
def trained_multimodn(synthetic_cohort, tmp_path_factory):
    return _train(synthetic_cohort, tmp_path_factory.mktemp("prog_mmn"), fusion=MultiModNFusion)


def raw_record(root, pid):
    """One patient's raw inputs, read straight from the cohort folder's files."""
    return records_from_cohort(root, [pid])[0]


def loader_outputs(dm, model, drop=None, n=None):
    """patient id -> model output on the data module's test loader (``drop``: modality made absent;
    ``n``: only one batch of the first ``n`` test patients)."""
    out = {}
    batches = dm.test_dataloader()
    if n is not None:
        data = ClinicalDataset(dm.cohort, "test")
        batches = [Collator(dm.cohort.readers)([data[i] for i in range(n)])]
    with torch.no_grad():
        for batch in batches:
            inputs = {m: dict(x) for m, x in batch["inputs"].items()}
            if drop is not None:
                inputs[drop]["present"] = torch.zeros_like(inputs[drop]["present"])
            res = model(inputs)[0]
            out.update(zip(batch["patient_id"], res.tolist()))
    return out


@pytest.fixture(scope="module")
def test_records(trained, synthetic_cohort):
    dm, _ = trained
    return [raw_record(synthetic_cohort, pid) for pid in dm.cohort.splits["test"]]


def test_raw_records_match_test_loader(trained, test_records):
    dm, prog = trained
    expected = loader_outputs(dm, prog.model)
    preds = prog.predict(test_records)
    assert [p["patient_id"] for p in preds] == [r["patient_id"] for r in test_records]
    got = np.array([p["risk"] for p in preds])
    want = np.array([expected[p["patient_id"]] for p in preds])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    presence = dm.cohort.presence()
    for p in preds:
        assert p["modalities_used"] == [m for m in dm.modality_names if presence.loc[p["patient_id"], m]]


def test_contributions_match_leave_one_out(trained, test_records):
    dm, prog = trained
    full = loader_outputs(dm, prog.model, n=6)
    preds = prog.predict(test_records[:6])
    for m in dm.modality_names:
        without = loader_outputs(dm, prog.model, drop=m, n=6)
        for p in preds:
            if m in p["modalities_used"]:
                pid = p["patient_id"]
                assert p["contributions"][m] == pytest.approx(full[pid] - without[pid], rel=1e-4, abs=1e-5)
            else:
                assert m not in p["contributions"]


def test_survival_fields(trained, test_records):
    _, prog = trained
    for p in prog.predict(test_records[:5], horizons=(1, 30, 365)):
        s = np.array(p["survival_curve"]["survival"])
        t = np.array(p["survival_curve"]["times"])
        assert np.all(np.diff(s) <= 1e-12) and np.all((s >= 0) & (s <= 1))
        med = p["median_survival"]
        if math.isfinite(med):
            k = int(np.searchsorted(t, med))
            assert t[k] == med and s[k] <= 0.5 and (k == 0 or s[k - 1] > 0.5)
        else:
            assert s[-1] > 0.5
        assert list(p["survival_at"]) == [1, 30, 365]
        assert p["survival_at"][1] >= p["survival_at"][30] >= p["survival_at"][365]


def test_tabular_only_patient(trained, test_records):
    _, prog = trained
    rec = {"patient_id": "new", "tabular": test_records[0]["tabular"]}
    (p,) = prog.predict([rec])
    assert p["modalities_used"] == ["tabular"] and math.isfinite(p["risk"])
    assert list(p["contributions"]) == ["tabular"]


def test_bad_patients_get_errors_others_succeed(trained, test_records):
    _, prog = trained
    good = test_records[:2]
    nan_tab = {"patient_id": "bad_nan", "tabular": {**test_records[0]["tabular"], "age": float("nan")}}
    unknown = {"patient_id": "bad_key", "tabular": test_records[0]["tabular"], "xray": [1, 2]}
    no_ecg = {"patient_id": "bad_ecg", "ecg": "/nonexistent/record"}
    preds = prog.predict([nan_tab, good[0], unknown, no_ecg, good[1]])
    assert "bad_nan" in preds[0]["error"] and "tabular.age" in preds[0]["error"]
    assert "bad_key" in preds[2]["error"] and "xray" in preds[2]["error"]
    assert "bad_ecg" in preds[3]["error"] and "ecg" in preds[3]["error"]
    alone = prog.predict(good)
    for got, want in zip([preds[1], preds[4]], alone):
        assert "error" not in got and got["risk"] == pytest.approx(want["risk"], rel=1e-5, abs=1e-6)


def test_unknown_category_maps_to_unseen_with_warning(trained, test_records):
    _, prog = trained
    tab = dict(test_records[0]["tabular"])
    cat = prog.states["tabular"]["fitted"]["categorical_features"][0]
    (p,) = prog.predict([{"patient_id": "x", "tabular": {**tab, cat: "never-seen-level"}}])
    assert math.isfinite(p["risk"])
    assert [w for w in p["input_warnings"] if w.startswith(f"tabular.{cat}: a level not seen in training")]
    for missing in (None, float("nan"), np.float32("nan"), pd.NA):  # missing, not unseen
        (q,) = prog.predict([{"patient_id": "x", "tabular": {**tab, cat: missing}}])
        assert not [w for w in q["input_warnings"] if w.startswith(f"tabular.{cat}")]


def test_save_load_round_trip(trained, test_records, tmp_path):
    _, prog = trained
    folder = prog.save(tmp_path / "predictor")
    assert {"model.ckpt", "preprocessing.json", "baseline.json", "meta.json"} <= {f.name for f in folder.iterdir()}
    loaded = Prognosis.load(folder)
    a, b = prog.predict(test_records[:4]), loaded.predict(test_records[:4])
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_multimodn_trajectory(trained_multimodn, test_records):
    dm, prog = trained_multimodn
    expected = loader_outputs(dm, prog.model, n=4)
    for p in prog.predict(test_records[:4]):
        assert p["risk"] == pytest.approx(expected[p["patient_id"]], rel=1e-4, abs=1e-5)
        steps = p["trajectory"]
        assert [s["step"] for s in steps] == ["initial", *p["modalities_used"]]
        assert steps[-1]["risk"] == pytest.approx(p["risk"], rel=1e-5, abs=1e-6)


def test_binary_task_gives_probabilities(synthetic_cohort, test_records, tmp_path):
    dm, prog = _train(synthetic_cohort, tmp_path, task="binary")
    expected = loader_outputs(dm, prog.model, n=3)
    for p in prog.predict(test_records[:3]):
        assert p["probability"] == pytest.approx(torch.sigmoid(torch.tensor(expected[p["patient_id"]])).item(), rel=1e-4)
        assert "survival_curve" not in p and "median_survival" not in p
    assert not (prog.save(tmp_path / "pred") / "baseline.json").exists()


def _wire(records):
    rows = []
    for r in records:
        rows.append({"patient_id": r["patient_id"], **{m: json.dumps(v) for m, v in r.items() if m != "patient_id"}})
    return pd.DataFrame(rows)


def test_mlflow_pyfunc_matches_predict(trained, test_records, tmp_path):
    import mlflow

    _, prog = trained
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("prognosis-test")
    import logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("mlflow.pyfunc").addHandler(handler)
    try:
        with mlflow.start_run():
            info = prog.log_to_mlflow()
        logging.getLogger("mlflow.pyfunc").removeHandler(handler)
        assert not [m for m in seen if "CloudPickle" in m or "Validating input example" in m], seen
        records = [test_records[0], {"patient_id": "tab_only", "tabular": test_records[1]["tabular"]}]
        out = mlflow.pyfunc.load_model(info.model_uri).predict(_wire(records))
        want = prog.predict(records)
        assert list(out["patient_id"]) == [r["patient_id"] for r in records]
        for got, w in zip(out["prediction"], want):
            got = json.loads(got)
            assert got["risk"] == pytest.approx(w["risk"], rel=1e-6)
            assert got["contributions"] == pytest.approx(w["contributions"], rel=1e-6)
            assert got["survival_curve"]["survival"] == pytest.approx(w["survival_curve"]["survival"])
        assert Prognosis.load(info.model_uri).predict(records)[0]["risk"] == pytest.approx(want[0]["risk"])
        # the stored request example is tabular means / first levels, and it predicts without error
        from mlflow.models import Model

        example = Model.load(info.model_uri).load_input_example(mlflow.artifacts.download_artifacts(info.model_uri))
        values = json.loads(example["tabular"][0])
        fitted = prog.states["tabular"]["fitted"]
        assert values[fitted["numeric_features"][0]] == pytest.approx(fitted["mean"][0], abs=1e-3)
        assert example["patient_id"].tolist() == ["example"]
        pred = mlflow.pyfunc.load_model(info.model_uri).predict(example)
        assert pred["error"].isna().all() and json.loads(pred["prediction"][0])["modalities_used"] == ["tabular"]
        # inference params reach the model (MLflow drops params a model was logged without)
        params = {"horizons": [100.0, 200.0], "contributions": False, "feature_contributions": True}
        out = mlflow.pyfunc.load_model(info.model_uri).predict(_wire(records), params=params)
        got = json.loads(out["prediction"][0])
        want = prog.predict(records[:1], horizons=(100.0, 200.0), contributions=False, feature_contributions=True)[0]
        assert list(got["survival_at"]) == ["100.0", "200.0"] and "contributions" not in got
        assert got["feature_contributions"]["tabular"] == pytest.approx(want["feature_contributions"]["tabular"], abs=1e-6)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
@pytest.mark.parametrize("workers,cells", [(1, "strings"), (2, "strings"), (1, "objects")])
def test_mlflow_models_serve(trained, test_records, tmp_path, serve, workers, cells):
    """workers 2: the README's recipe for 2 cores, one torch thread each. cells "objects": each
    modality sent as a JSON value, not a JSON string (parsed once, by the server)."""
    import sys
    from pathlib import Path

    import mlflow
    import requests

    _, prog = trained
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("prognosis-serve")
    try:
        with mlflow.start_run():
            info = prog.log_to_mlflow()
    finally:
        mlflow.set_tracking_uri(None)
    exe = Path(sys.executable).parent / "mlflow"
    # the scoring server execs `uvicorn` from PATH: the fixture puts this interpreter's scripts first
    base = serve(lambda port: [str(exe), "models", "serve", "-m", info.model_uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)], "/ping",
                 env={"MLFLOW_TRACKING_URI": uri, **({"OMP_NUM_THREADS": "1"} if workers > 1 else {})})
    records = [test_records[0], {"patient_id": "tab_only", "tabular": test_records[1]["tabular"]}]
    if cells == "objects":  # and a patient whose ECG and slides are file paths: plain strings there
        records.append(next(r for r in test_records if isinstance(r.get("ecg"), str) and isinstance(r.get("wsi"), (str, list))))
    wire = [{k: v for k, v in row.items() if isinstance(v, str)} for row in _wire(records).to_dict("records")]
    if cells == "objects":
        wire = [{k: v if k == "patient_id" else json.loads(v) for k, v in row.items()} for row in wire]
        assert isinstance(wire[2]["ecg"], str) and not wire[2]["ecg"].startswith('"')
    body = {"dataframe_records": wire, "params": {"horizons": [365.0]}}  # absent modality = key left out
    resp = requests.post(f"{base}/invocations", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    rows = resp.json()["predictions"]
    want = prog.predict(records)
    assert [r["patient_id"] for r in rows] == [r["patient_id"] for r in records]
    assert [r["error"] for r in rows] == [None] * len(records)
    for row, w in zip(rows, want):
        got = json.loads(row["prediction"])
        assert got["risk"] == pytest.approx(w["risk"], rel=1e-6)
        assert got["modalities_used"] == w["modalities_used"]
    assert json.loads(rows[1]["prediction"])["modalities_used"] == ["tabular"]
    assert list(json.loads(rows[0]["prediction"])["survival_at"]) == ["365.0"]  # the request's params were used


def test_base64_ecg_over_the_wire_gives_the_wfdb_paths_prediction(trained, test_records):
    import wfdb

    from clinfuse.experiments import encode_ecg

    _, prog = trained
    rec = next(r for r in test_records if "ecg" in r)
    w = wfdb.rdrecord(str(rec["ecg"]))
    compact = {**rec, "ecg": encode_ecg(w.p_signal.T, w.fs, w.sig_name, dtype="float64")}
    py = PrognosisPyfunc()
    py.prognosis = prog
    got = json.loads(py.predict(None, _wire([compact]))["prediction"][0])
    want = prog.predict([rec])[0]
    assert got["risk"] == pytest.approx(want["risk"], rel=1e-6)
    assert got["contributions"]["ecg"] == pytest.approx(want["contributions"]["ecg"], rel=1e-5, abs=1e-7)


def test_an_ecg_resampled_by_the_client_to_the_models_rate_gives_the_full_rate_prediction(trained, test_records):
    import wfdb

    from clinfuse.experiments import encode_ecg

    _, prog = trained
    rate = float(prog.states["ecg"]["config"]["fs"])
    recs = [r for r in test_records if "ecg" in r][:6]
    full, small, sizes = [], [], []
    for rec in recs:
        w = wfdb.rdrecord(str(rec["ecg"]))
        assert w.fs != rate  # the cohort records at 500 Hz, the model reads 100 Hz
        wire_full = encode_ecg(w.p_signal.T, w.fs, w.sig_name)
        wire_small = encode_ecg(w.p_signal.T, w.fs, w.sig_name, resample_to=rate)
        assert wire_small["fs"] == rate and wire_small["shape"][1] == -(-w.p_signal.shape[0] * rate // w.fs)
        sizes.append(len(wire_small["signal_b64"]) / len(wire_full["signal_b64"]))
        full.append({**rec, "ecg": wire_full})
        small.append({**rec, "ecg": wire_small})
    assert max(sizes) < 0.21
    items_full = [prog._items(r)[1] for r in full]
    items_small = [prog._items(r)[1] for r in small]
    finish_items(prog.states, items_full)
    finish_items(prog.states, items_small)
    for a, b in zip(items_full, items_small):
        np.testing.assert_array_equal(a["ecg"]["lead_mask"], b["ecg"]["lead_mask"])
        np.testing.assert_allclose(a["ecg"]["signal"], b["ecg"]["signal"], rtol=1e-5, atol=1e-6)
    want = prog.predict(full, contributions=False)
    got = prog.predict(small, contributions=False)
    assert [g["risk"] for g in got] == pytest.approx([w["risk"] for w in want], rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="sampling rates must be within"):
        encode_ecg(np.zeros((1, 10)), 500, ["I"], resample_to=0)


def test_ecg_in_microvolts_is_flagged_and_still_predicted(trained, test_records):
    import wfdb

    _, prog = trained
    rec = next(r for r in test_records if "ecg" in r)
    w = wfdb.rdrecord(str(rec["ecg"]))
    as_mv = {**rec, "ecg": {"signal": w.p_signal.T, "fs": w.fs, "leads": w.sig_name}}
    as_uv = {**rec, "patient_id": "uv", "ecg": {"signal": w.p_signal.T * 1000, "fs": w.fs, "leads": w.sig_name}}
    ok, flagged = prog.predict([as_mv, as_uv])
    assert not [m for m in ok["input_warnings"] if m.startswith("ecg")]
    (msg,) = [m for m in flagged["input_warnings"] if m.startswith("ecg")]
    assert "the signal must be in mV" in msg and np.isfinite(flagged["risk"])


def test_slide_features_from_another_extractor_are_flagged(trained, test_records, tmp_path):
    import h5py

    from clinfuse.datasets.wsi import read_slide_features

    _, prog = trained
    rec = next(r for r in test_records if "wsi" in r)
    paths = rec["wsi"] if isinstance(rec["wsi"], list) else [rec["wsi"]]
    feats = np.concatenate([read_slide_features(p) for p in paths])
    other = tmp_path / "other_encoder.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("features", data=(feats * 0.05 + 30.0).astype(np.float32))  # same width, other scale
    ok, flagged = prog.predict([rec, {**rec, "patient_id": "other", "wsi": str(other)}])
    assert not [m for m in ok["input_warnings"] if m.startswith("wsi")]
    (msg,) = [m for m in flagged["input_warnings"] if m.startswith("wsi")]
    assert "another patch feature extractor" in msg and np.isfinite(flagged["risk"])


def test_in_memory_slides_over_the_wire_give_the_files_prediction(trained, test_records):
    from clinfuse.datasets.wsi import read_slide_features
    from clinfuse.experiments import encode_wsi

    _, prog = trained
    rec = next(r for r in test_records if "wsi" in r)
    paths = rec["wsi"] if isinstance(rec["wsi"], list) else [rec["wsi"]]
    feats = [read_slide_features(p) for p in paths]
    as_arrays = {**rec, "wsi": [{"features": f.tolist()} for f in feats]}  # same patient: same patch subset
    as_b64 = {**rec, "wsi": [encode_wsi(f) for f in feats]}
    py = PrognosisPyfunc()
    py.prognosis = prog
    got = [json.loads(py.predict(None, _wire([r]))["prediction"][0]) for r in (as_arrays, as_b64)]
    want = prog.predict([rec])[0]
    for g in got:
        assert g["risk"] == pytest.approx(want["risk"], rel=1e-6)
        assert g["contributions"]["wsi"] == pytest.approx(want["contributions"]["wsi"], rel=1e-5, abs=1e-7)
        assert "wsi" in g["modalities_used"]


def test_predict_runs_in_batches_with_the_same_answers(trained, test_records, monkeypatch):
    _, prog = trained
    records = test_records[:7] + [{"patient_id": "bad", "tabular": {"no_such_column": 1}}] + test_records[7:10]
    whole = prog.predict(records, feature_contributions=True)
    sizes = []
    run = prog._predict_batch

    def spy(batch, used, *args, **kwargs):
        sizes.append(len(used))
        return run(batch, used, *args, **kwargs)

    monkeypatch.setattr(prog, "_predict_batch", spy)
    small = prog.predict(records, feature_contributions=True, batch_size=3, show_progress=True)
    assert sizes == [3, 3, 2, 2]  # 11 records in batches of 3; the bad record (index 7) leaves its batch one short
    assert [r["patient_id"] for r in small] == [r["patient_id"] for r in records]
    assert "no_such_column" in small[7]["error"]
    for a, b in zip(whole, small):
        if "error" in a:
            assert a == b
            continue
        assert b["risk"] == pytest.approx(a["risk"], rel=1e-5, abs=1e-6)
        assert b["survival_at"] == pytest.approx(a["survival_at"], abs=1e-6)
        assert b["contributions"] == pytest.approx(a["contributions"], rel=1e-4, abs=1e-6)
        assert b["feature_contributions"]["tabular"] == pytest.approx(a["feature_contributions"]["tabular"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_predict_rejects_a_bad_batch_size(trained, test_records, bad):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        trained[1].predict(test_records[:2], batch_size=bad)


def test_predict_on_one_dict_says_to_wrap_it(trained, test_records):
    with pytest.raises(ValueError, match="wrap it in a list"):
        trained[1].predict(test_records[0])


def test_an_input_that_overflows_the_model_fails_alone(trained, test_records):
    _, prog = trained
    rec = next(r for r in test_records if "tabular" in r)
    col = prog.states["tabular"]["fitted"]["numeric_features"][0]
    huge = {**rec, "patient_id": "huge", "tabular": {**rec["tabular"], col: 3e38}}  # within float32, not the model
    bad, good = prog.predict([huge, rec])
    assert "the model's output is not finite" in bad["error"] and bad["error"].startswith("patient huge")
    assert any(w.startswith(f"tabular.{col}") for w in bad["input_warnings"])
    assert good["risk"] == pytest.approx(prog.predict([rec])[0]["risk"], rel=1e-5)


def test_parser_notices_reach_input_warnings(trained, test_records):
    import wfdb

    _, prog = trained
    rec = next(r for r in test_records if "timeseries" in r and "ecg" in r)
    events = list(rec["timeseries"]) + [{"time": 1.0, "variable": "HR_renamed", "value": 80.0}]
    w = wfdb.rdrecord(str(rec["ecg"]))
    short = {"signal": w.p_signal.T[:, : w.p_signal.shape[0] // 4], "fs": w.fs, "leads": w.sig_name}
    (got,) = prog.predict([{**rec, "timeseries": events, "ecg": short}])
    assert "timeseries: dropping events of variables unseen in training: ['HR_renamed']" in got["input_warnings"]
    assert [m for m in got["input_warnings"] if m.startswith("ecg: 2.5 s recorded, the model reads 10 s windows")]
    (full,) = prog.predict([rec])
    assert not [m for m in full["input_warnings"] if m.startswith(("ecg:", "timeseries:"))]


def test_implausible_ecg_rates_and_horizon_strings_are_named(trained, test_records):
    import wfdb

    _, prog = trained
    rec = next(r for r in test_records if "ecg" in r)
    w = wfdb.rdrecord(str(rec["ecg"]))
    for fs in (5e6, 1e-3):
        bad, good = prog.predict([{**rec, "patient_id": "fs", "ecg": {"signal": w.p_signal.T, "fs": fs, "leads": w.sig_name}}, rec])
        assert f"sampling rate {fs:g} Hz is outside 1-100000 Hz" in bad["error"] and "risk" in good
    with pytest.raises(ValueError, match="horizons must be a list of numbers, got the string '365'"):
        prog.predict([rec], horizons="365")
    (once,) = prog.predict([rec], horizons=[30, 30.0, 365])
    assert list(once["survival_at"]) == [30.0, 365.0]


def test_pyfunc_row_without_patient_id_gets_its_own_error(trained, test_records):
    _, prog = trained
    py = PrognosisPyfunc()
    py.prognosis = prog
    frame = _wire([test_records[0], test_records[1]])
    frame.loc[0, "patient_id"] = None
    rows = py.predict(None, frame)
    assert "field 'patient_id': a non-empty string is required" in rows["error"].iloc[0]
    assert rows["prediction"].iloc[0] is None and rows["patient_id"].iloc[0] is None
    assert "risk" in json.loads(rows["prediction"].iloc[1]) and rows["patient_id"].iloc[1] == test_records[1]["patient_id"]


def test_loading_a_run_uri_without_a_store_says_so(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with pytest.raises(ValueError, match=r"runs:/abc/prognosis: no MLflow store at .*mlflow.db; run from the folder"):
            Prognosis.load("runs:/abc/prognosis")
        assert not (tmp_path / "mlflow.db").exists()  # nothing created
    finally:
        mlflow.set_tracking_uri(None)


def test_from_training_refuses_a_datamodule_other_than_the_checkpoints(trained, synthetic_cohort, tmp_path):
    import shutil

    from clinfuse.datasets.datamodule import ClinicalDataModule

    dm, prog = trained
    ckpt = prog.checkpoint_path
    again = Prognosis.from_training(ckpt, ClinicalDataModule(str(synthetic_cohort), batch_size=32, max_patches=32))
    assert again.baseline.state_dict() == prog.baseline.state_dict()  # the same data module: accepted, same baseline
    with pytest.raises(ValueError, match=r"trained on modalities \[.*'wsi'\], the datamodule loads \['tabular'\]"):
        Prognosis.from_training(ckpt, ClinicalDataModule(str(synthetic_cohort), modalities=["tabular"]))
    other = tmp_path / "other_split"  # the same patients, another split: other training statistics
    shutil.copytree(synthetic_cohort, other, ignore=shutil.ignore_patterns(".clinfuse_cache"))
    splits = pd.read_csv(other / "splits.csv")
    splits.loc[splits.index[splits["split"] == "train"][:40], "split"] = "test"
    splits.to_csv(other / "splits.csv", index=False)
    with pytest.raises(ValueError, match=r"training statistic .* differs from the one the model was trained with"):
        Prognosis.from_training(ckpt, ClinicalDataModule(str(other), batch_size=32, max_patches=32))
    with pytest.raises(TypeError, match="datamodule must be the ClinicalDataModule"):
        Prognosis.from_training(ckpt, str(synthetic_cohort))
    (tmp_path / "x.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"x\.ckpt: not a readable checkpoint"):
        Prognosis.from_training(tmp_path / "x.ckpt", dm)


def test_predict_refuses_misused_arguments_and_notes_wordless_notes(trained, test_records):
    _, prog = trained
    rec = test_records[1]
    with pytest.raises(ValueError, match="got a DataFrame: .*records_from_frame"):
        prog.predict(pd.DataFrame([{"patient_id": "a"}]))
    with pytest.raises(ValueError, match="records must be a list of patient dicts, got NoneType"):
        prog.predict(None)
    with pytest.raises(ValueError, match="contributions must be True or False, got 'no'"):
        prog.predict([rec], contributions="no")
    with pytest.raises(ValueError, match="feature_contributions must be True or False"):
        prog.predict([rec], feature_contributions="false")
    with pytest.raises(ValueError, match=r"horizons must be numbers, got \[True\]"):
        prog.predict([rec], horizons=[True])
    with pytest.raises(ValueError, match="max_input_sd must be a number > 0"):
        prog.max_input_sd = -1
    only_empty = {"patient_id": "e", "tabular": rec["tabular"], "notes": [{"time": 1.0, "text": "  "}]}
    (pred,) = prog.predict([only_empty], contributions=False)
    assert "notes" not in pred["modalities_used"]
    assert any(w.startswith("notes: 1 note(s) without any word ignored; the patient's notes count as absent")
               for w in pred["input_warnings"])


@pytest.mark.parametrize("damage, match", [
    (lambda f: (f / "meta.json").write_text("{not json"), r"meta\.json: not valid JSON"),
    (lambda f: (f / "preprocessing.json").write_text("{}"), r"preprocessing\.json: no 'modalities' preprocessing state"),
    (lambda f: (f / "preprocessing.json").write_text("[1, 2]"), r"preprocessing\.json: expected a JSON object, got list"),
    (lambda f: (f / "baseline.json").unlink(), r"meta\.json says the predictor has a Breslow baseline, baseline\.json is missing"),
    (lambda f: (f / "model.ckpt").write_bytes(b"garbage"), r"model\.ckpt: not a readable ClinFuseModule checkpoint"),
])
def test_load_of_a_damaged_folder_names_the_file(trained, tmp_path, damage, match):
    _, prog = trained
    folder = prog.save(tmp_path / "p")
    assert Prognosis.load(folder).modalities == prog.modalities
    damage(folder)
    with pytest.raises(ValueError, match=match):
        Prognosis.load(folder)


def test_bf16_mixed_precision_predicts_close_to_float32(trained, test_records, synthetic_cohort, tmp_path):
    """precision="bf16-mixed": encoders and fusion under bfloat16 autocast, the outputs read in
    float32: the same fields, values within bfloat16 rounding of float32's, and not identical
    (so the autocast really ran)."""
    _, prog = trained
    folder = prog.save(tmp_path / "predictor")
    fast = Prognosis.load(folder, precision="bf16-mixed")
    assert fast.precision == "bf16-mixed" and prog.precision == "32-true"
    records = test_records[:12]
    want = prog.predict(records, feature_contributions=True)
    got = fast.predict(records, feature_contributions=True)
    assert [g.keys() for g in got] == [w.keys() for w in want]
    risks = np.array([[g["risk"], w["risk"]] for g, w in zip(got, want)])
    spread = risks[:, 1].std()
    assert np.abs(risks[:, 0] - risks[:, 1]).max() <= 0.05 * spread + 1e-3
    assert np.corrcoef(risks.T)[0, 1] > 0.99
    assert (risks[:, 0] != risks[:, 1]).any(), "bf16-mixed gave float32's exact risks: autocast did not run"
    for g, w in zip(got, want):
        assert g["modalities_used"] == w["modalities_used"]
        assert isinstance(g["risk"], float) and math.isfinite(g["median_survival"]) == math.isfinite(w["median_survival"])
        np.testing.assert_allclose(g["survival_curve"]["survival"], w["survival_curve"]["survival"], atol=0.01)
        for m in w["contributions"]:
            assert g["contributions"][m] == pytest.approx(w["contributions"][m], abs=0.05 * spread + 1e-3)
    # predict_cohort runs the same batches in the same precision
    frame = fast.predict_cohort(synthetic_cohort, split="test", show_progress=False)
    assert frame.set_index("patient_id").loc[[r["patient_id"] for r in records], "risk"].to_numpy() == pytest.approx(risks[:, 0], abs=1e-5)


def test_precision_choices_are_checked(trained, tmp_path, monkeypatch):
    from clinfuse.experiments import inference_precision
    from clinfuse.experiments.prognosis_mlflow import serving_precision

    _, prog = trained
    folder = prog.save(tmp_path / "predictor")
    with pytest.raises(ValueError, match=r"precision must be one of \['32-true', 'bf16-mixed'\], got '16'"):
        Prognosis.load(folder, precision="16")
    loaded = Prognosis.load(folder)
    with pytest.raises(ValueError, match="got 'bf16'"):
        loaded.precision = "bf16"
    assert loaded.precision == "32-true"
    monkeypatch.setattr(inference_precision, "native_bf16_cpu", lambda: False)
    with pytest.warns(UserWarning, match="neither AMX nor AVX512-BF16"):
        loaded.precision = "bf16-mixed"
    monkeypatch.setattr(inference_precision, "native_bf16_cpu", lambda: True)
    # serving: the environment variable wins over the logged model_config; bad values name their source
    monkeypatch.delenv("CLINFUSE_PRECISION", raising=False)
    assert serving_precision(None) == "32-true"
    assert serving_precision({"precision": "bf16-mixed"}) == "bf16-mixed"
    monkeypatch.setenv("CLINFUSE_PRECISION", "32-true")
    assert serving_precision({"precision": "bf16-mixed"}) == "32-true"
    monkeypatch.setenv("CLINFUSE_PRECISION", "fp16")
    with pytest.raises(ValueError, match="CLINFUSE_PRECISION: precision must be one of"):
        serving_precision(None)
    monkeypatch.delenv("CLINFUSE_PRECISION")
    with pytest.raises(ValueError, match=r"model_config\['precision'\]"):
        serving_precision({"precision": 16})
    with pytest.raises(ValueError, match="precision must be one of"):
        prog.log_to_mlflow(model_config={"precision": "half"})  # refused before anything is logged


def test_pyfunc_loads_in_the_logged_precision(trained, tmp_path, monkeypatch):
    from types import SimpleNamespace

    _, prog = trained
    folder = prog.save(tmp_path / "predictor")
    monkeypatch.delenv("CLINFUSE_PRECISION", raising=False)
    py = PrognosisPyfunc()
    py.load_context(SimpleNamespace(artifacts={"prognosis": str(folder)}, model_config={"precision": "bf16-mixed"}))
    assert py.prognosis.precision == "bf16-mixed"
    monkeypatch.setenv("CLINFUSE_PRECISION", "32-true")
    py.load_context(SimpleNamespace(artifacts={"prognosis": str(folder)}, model_config={"precision": "bf16-mixed"}))
    assert py.prognosis.precision == "32-true"


def test_bf16_mixed_multimodn_trajectory(trained_multimodn, test_records, tmp_path):
    """MultiModN's per-step predictions are read in the same precision as the risk: the trajectory ends at it."""
    _, prog = trained_multimodn
    fast = Prognosis.load(prog.save(tmp_path / "mmn"), precision="bf16-mixed")
    want, got = prog.predict(test_records[:4]), fast.predict(test_records[:4])
    for g, w in zip(got, want):
        assert [s["step"] for s in g["trajectory"]] == [s["step"] for s in w["trajectory"]]
        assert [s["risk"] for s in g["trajectory"]] == pytest.approx([s["risk"] for s in w["trajectory"]], abs=0.05)
        assert g["trajectory"][-1]["risk"] == pytest.approx(g["risk"], rel=1e-6, abs=1e-7)  # same precision as the risk
