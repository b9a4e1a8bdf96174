"""Deploying a predictor: a self-contained model file, saving again, what a REST client is told,
answers that do not depend on the patient id, MLflow folders and request forms."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.datasets.wsi import eval_subset, read_slide_features
from clinfuse.experiments.cohort_records import records_from_cohort
from clinfuse.experiments.prognosis import PREDICTOR_CHECKPOINT_KEYS, Prognosis, PrognosisPyfunc
from clinfuse.experiments.prognosis_mlflow import records_from_frame


@pytest.fixture(scope="module")
def slides(synthetic_cohort, tmp_path_factory, train_predictor):
    """A tabular + slide model whose bags (20-60 patches) are cut to 8 patches in evaluation."""
    work = tmp_path_factory.mktemp("deploy")
    dm, prog = train_predictor(synthetic_cohort, work, ["tabular", "wsi"], data={"max_patches": 8})
    return work, dm, prog


def _records(root, dm, n=6):
    ids = [p for p in dm.cohort.splits["test"] if dm.cohort.readers["wsi"].get(p, training=False) is not None][:n]
    return [{k: v for k, v in r.items() if k in ("patient_id", "tabular", "wsi")} for r in records_from_cohort(root, ids)]


def test_saved_checkpoint_holds_what_prediction_needs_and_no_training_paths(slides, synthetic_cohort, tmp_path):
    work, dm, prog = slides
    folder = prog.save(tmp_path / "model")
    ckpt = torch.load(folder / "model.ckpt", map_location="cpu", weights_only=False)
    assert tuple(sorted(ckpt)) == tuple(sorted(PREDICTOR_CHECKPOINT_KEYS))  # no optimizer, loops, callbacks, data paths
    raw = (folder / "model.ckpt").read_bytes()
    assert str(synthetic_cohort).encode() not in raw and str(work).encode() not in raw
    before = torch.load(work / "model.ckpt", map_location="cpu", weights_only=False)
    assert str(synthetic_cohort).encode() in pickle.dumps(before)  # the training checkpoint does name them
    records = _records(synthetic_cohort, dm)
    again = Prognosis.load(folder).predict(records, contributions=False)
    assert [r["risk"] for r in again] == pytest.approx([r["risk"] for r in prog.predict(records, contributions=False)])


def test_a_loaded_or_unpickled_predictor_saves_again_after_its_folder_is_gone(slides, synthetic_cohort, tmp_path):
    _, dm, prog = slides
    source = prog.save(tmp_path / "source")
    loaded = Prognosis.load(source)
    copied = pickle.loads(pickle.dumps(loaded))
    shutil.rmtree(source)
    records = _records(synthetic_cohort, dm, 3)
    expected = [r["risk"] for r in prog.predict(records, contributions=False)]
    for k, p in enumerate((loaded, copied)):
        out = Prognosis.load(p.save(tmp_path / f"again{k}"))
        assert [r["risk"] for r in out.predict(records, contributions=False)] == pytest.approx(expected)
    loaded.save(tmp_path / "again0")  # over the folder it was loaded from: written from memory, safe
    assert Prognosis.load(tmp_path / "again0").predict(records, contributions=False)[0]["risk"] == pytest.approx(expected[0])


def test_the_same_slides_under_another_patient_id_give_the_same_answer(slides, synthetic_cohort):
    _, dm, prog = slides
    record = _records(synthetic_cohort, dm, 1)[0]
    renamed = [{**record, "patient_id": pid} for pid in (record["patient_id"], "pseudonym-7f3a", "MRN 123456")]
    # one call each: rows of one batch may differ in the last float bit (BLAS kernels for edge rows)
    risks = [prog.predict([r], contributions=False)[0]["risk"] for r in renamed]
    assert risks[0] == risks[1] == risks[2]
    together = [r["risk"] for r in prog.predict(renamed, contributions=False)]
    assert together == pytest.approx(risks, rel=1e-5)
    # and the cohort path reads the same subset as the record path
    scored = prog.predict_cohort(synthetic_cohort, split="test").set_index("patient_id")
    assert scored.loc[record["patient_id"], "risk"] == pytest.approx(risks[0], abs=1e-6)


def test_eval_subset_is_fixed_by_the_bag_and_keeps_its_order():
    bag = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    a, b = eval_subset(bag, 10), eval_subset(bag.copy(), 10)
    assert a.shape == (10, 4) and np.array_equal(a, b)
    rows = [int(np.flatnonzero((bag == r).all(1))[0]) for r in a]
    assert rows == sorted(rows)  # a subset, in the bag's order
    assert not np.array_equal(eval_subset(bag[::-1].copy(), 10), a)  # another bag, another subset
    assert eval_subset(bag, 100) is bag


def test_rest_answers_carry_the_past_horizon_and_no_data_notices(slides, synthetic_cohort):
    _, dm, prog = slides
    end = prog.last_event_time
    record = _records(synthetic_cohort, dm, 1)[0]
    with pytest.warns(UserWarning, match="past the model's last training event time"):
        out = prog.predict([record, {"patient_id": "nothing"}], horizons=(30, end + 1000), contributions=False)
    past = [w for w in out[0]["input_warnings"] if "carried forward" in w]
    assert len(past) == 1 and f"{end + 1000:g}" in past[0]
    assert out[1]["modalities_used"] == [] and any("no modality given" in w for w in out[1]["input_warnings"])
    assert not any("no modality given" in w for w in out[0]["input_warnings"])
    pyfunc = PrognosisPyfunc()
    pyfunc.prognosis = prog
    frame = pd.DataFrame({"patient_id": ["p"], "tabular": [pd.Series(record["tabular"]).to_json()]})
    with pytest.warns(UserWarning):
        answer = pyfunc.predict(None, frame, params={"horizons": [end + 1000]})
    assert "carried forward" in answer.loc[0, "prediction"]


def test_request_level_mistakes_reach_the_client_as_per_row_messages(slides):
    pyfunc = PrognosisPyfunc()
    pyfunc.prognosis = slides[2]
    assert records_from_frame(pd.DataFrame()) == [] and pyfunc.predict(None, pd.DataFrame()).empty
    out = pyfunc.predict(None, pd.DataFrame({"tabular": ['{"age": 60}', '{"age": 70}']}))
    assert out["error"].tolist() == ["clinfuse: input needs a 'patient_id' column; got ['tabular']"] * 2
    assert out["prediction"].isna().all()
    out = pyfunc.predict(None, pd.DataFrame({"patient_id": ["p"]}), params={"horizons": [-1.0]})
    assert out.to_dict("records") == [{"patient_id": "p", "error": "clinfuse: horizons must be finite and >= 0, got [-1.0]",
                                       "prediction": None}]


def test_json_strings_wrapped_in_numpy_scalars_are_read():
    # MLflow's `inputs` request form hands each string over as a 0-d numpy array
    frame = pd.DataFrame({"patient_id": [np.array("p1")], "tabular": [np.array('{"age": 60}')]})
    assert records_from_frame(frame) == [{"patient_id": "p1", "tabular": {"age": 60}}]


def test_a_local_mlflow_model_folder_loads(slides, synthetic_cohort, tmp_path):
    import mlflow

    _, dm, prog = slides
    folder = prog.save(tmp_path / "prognosis")
    mlflow.pyfunc.save_model(tmp_path / "mlflow_model", python_model=PrognosisPyfunc(), artifacts={"prognosis": str(folder)})
    records = _records(synthetic_cohort, dm, 2)
    loaded = Prognosis.load(tmp_path / "mlflow_model")
    assert [r["risk"] for r in loaded.predict(records, contributions=False)] == \
        pytest.approx([r["risk"] for r in prog.predict(records, contributions=False)])


def test_a_missing_slide_file_is_named_as_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"nope\.h5 \(patient p\): no such slide file \(looked for {tmp_path}/nope\.h5"):
        read_slide_features("nope.h5", None, "(patient p)")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="corrupt or unreadable slide file"):
        read_slide_features("bad.h5", None, "(patient p)")


def test_the_past_horizon_notice_names_the_last_bin_end_for_discrete_time_models(synthetic_cohort, tmp_path,
                                                                                train_predictor, slides):
    _, prog = train_predictor(synthetic_cohort, tmp_path, ["tabular"], survival_loss="logistic_hazard", n_time_bins=4)
    end = prog.last_event_time
    assert end == pytest.approx(float(prog.model.objective.edges[-2]))
    assert "last time-bin end (later training events all fall in its open last bin)" in prog.horizon_notice([end + 1])
    assert "last training event time" in slides[2].horizon_notice([slides[2].last_event_time + 1])  # Cox
    assert prog.horizon_notice([end]) is None


def test_json_safe_output_is_strict_json_for_every_kind_of_list():
    """The pyfunc's output conversion: a fast path returns all-finite float lists as they are;
    everything else (NaN, inf, an overflowing sum, nested or mixed lists) as before."""
    import json
    import math

    from clinfuse.experiments.prognosis_mlflow import _json_safe

    def reference(v):  # the element-by-element definition
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): reference(x) for k, x in v.items()}
        if isinstance(v, list):
            return [reference(x) for x in v]
        return v

    cases = [
        [0.9, 0.8, 0.5], [0.9, float("nan"), 0.1], [1.0, float("inf")], [1e308, 1e308],  # overflowing sum, finite values
        [1.5, [2.0, float("nan")]], [1.5, None, 2.0], [1.5, "a"], [1.5, True, 2], [], [3, 2.5],
        {"curve": {"times": [1.0, 2.0], "survival": [1.0, float("nan")]}, 7: [float("-inf")]},
    ]
    for case in cases:
        got = _json_safe(case)
        assert json.dumps(got, allow_nan=False) == json.dumps(reference(case), allow_nan=False)


@pytest.mark.parametrize("text", [
    '{"age": 61, "sex": "F", "creatinine": 1.25}', '[1, 2.5, -0.0, 1e-7, 1E5, true, null]', '"caf\\u00e9 \\ud83d\\ude00"',
    '{"a": 1, "a": 2}', ' {"nested": {"x": [1, [2, [3]]]}} ',
    '{"value": NaN}', '[Infinity, -Infinity]', '"\\ud800"', '1.0e400',  # orjson refuses these; json reads them
])
def test_wire_json_reads_as_pythons_json_does(text):
    from clinfuse.experiments.prognosis_mlflow import _loads

    got, want = _loads(text), json.loads(text)
    assert json.dumps(got) == json.dumps(want)  # NaN == NaN as text; types too (1 vs 1.0)


@pytest.mark.parametrize("text", ["{'age': 61}", '{"age": 61', "", "  ", "[1, 2,]", '"unterminated'])
def test_wire_json_errors_are_pythons_json_errors(text):
    from clinfuse.experiments.prognosis_mlflow import _loads

    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        _loads(text)
    assert str(got.value) == str(want.value)
    frame = pd.DataFrame({"patient_id": ["p"], "tabular": [text]})
    assert str(records_from_frame(frame)[0]["tabular"]) == f"field 'tabular': not valid JSON: {want.value}"


def test_predictions_are_written_as_strict_json_with_the_values_of_json_dumps():
    from clinfuse.experiments.prognosis_mlflow import _json_safe, dumps_prediction

    pred = {"patient_id": "p", "risk": np.float64(-0.25), "median_survival": float("inf"),
            "survival_curve": {"times": [1.0, 2.5, 1e-5], "survival": [1.0, 0.5, float("nan")]},
            "survival_at": {30: 0.9, 90.0: 0.75}, "contributions": {"ecg": np.float32(0.125)},
            "modalities_used": ["tabular", "ecg"], "input_warnings": [], "flag": np.bool_(True)}

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))

    got = strict(dumps_prediction(pred))
    reference = dict(pred, contributions={"ecg": 0.125}, flag=True)  # json.dumps cannot write numpy's float32/bool
    assert got == strict(json.dumps(_json_safe(reference)))
    assert got["median_survival"] is None and got["survival_curve"]["survival"][2] is None
    assert got["survival_at"] == {"30": 0.9, "90.0": 0.75}


def test_modality_values_may_come_as_json_values_and_plain_strings_as_paths():
    frame = pd.DataFrame([{"patient_id": "p", "tabular": {"age": 61}, "ecg": "/data/ecg/p1", "wsi": ["a.h5", "b.h5"],
                           "notes": '[{"time": 1, "text": "ok"}]', "genomics": "nul"}])
    assert records_from_frame(frame) == [{"patient_id": "p", "tabular": {"age": 61}, "ecg": "/data/ecg/p1",
                                          "wsi": ["a.h5", "b.h5"], "notes": [{"time": 1, "text": "ok"}],
                                          "genomics": "nul"}]


def test_the_logged_model_pins_every_package_the_pyfunc_imports_at_serving_time():
    from importlib.metadata import version

    from clinfuse.experiments.prognosis_mlflow import _requirements

    pins = dict(r.split("==") for r in _requirements())
    for dist in ("torch", "mlflow", "numpy", "pandas", "orjson", "pybase64", "wfdb", "h5py", "scipy"):
        assert pins.get(dist) == version(dist), dist
