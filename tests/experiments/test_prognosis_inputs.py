"""Raw prognosis inputs -> reader items, from saved state only (no cohort folder, no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinfuse.experiments.prognosis_inputs import timeseries_item

STATE = {"config": {"max_events": 3}, "fitted": {"variables": ["hr", "sbp"], "mean": [80.0, 120.0], "std": [10.0, 20.0]}}
EVENTS = [
    {"time": 5.0, "variable": "hr", "value": 90.0},
    {"time": 1.0, "variable": "sbp", "value": 100.0},
    {"time": 3.0, "variable": "hr", "value": 70.0},
    {"time": 4.0, "variable": "sbp", "value": 160.0},
]


def test_records_frame_and_columns_give_the_same_item_by_hand():
    columns = {k: [e[k] for e in EVENTS] for k in ("time", "variable", "value")}
    items = [timeseries_item(STATE, raw) for raw in (EVENTS, pd.DataFrame(EVENTS), columns)]
    for item in items:
        # the 3 most recent events, time-ordered, normalised per variable
        np.testing.assert_array_equal(item["times"], [3.0, 4.0, 5.0])
        np.testing.assert_array_equal(item["variables"], [0, 1, 0])
        np.testing.assert_allclose(item["values"], [-1.0, 2.0, 1.0])


def test_unseen_variables_are_dropped_with_a_warning():
    raw = {"time": [1.0, 2.0], "variable": ["hr", "lactate"], "value": [80.0, 3.0]}
    with pytest.warns(UserWarning, match="lactate"):
        item = timeseries_item(STATE, raw)
    np.testing.assert_array_equal(item["variables"], [0])
    with pytest.warns(UserWarning):
        assert timeseries_item(STATE, {"time": [1.0], "variable": ["lactate"], "value": [3.0]}) is None


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"time": [1.0, float("nan")], "variable": ["hr", "hr"], "value": [1.0, 2.0]}, r"timeseries.time\[1\]"),
        ({"time": [1.0, 2.0], "variable": ["hr", "hr"], "value": [1.0, float("inf")]}, r"timeseries.value\[1\]"),
        ([{"time": 1.0, "variable": "hr", "value": "high"}], r"timeseries.value\[0\].*number"),
        ({"time": [1.0, 2.0], "variable": ["hr"], "value": [1.0, 2.0]}, "one length"),
        ([{"time": 1.0, "value": 2.0}], r"missing key\(s\) \['variable'\]"),
        ({"time": [], "variable": [], "value": []}, "empty"),
    ],
)
def test_bad_events_name_the_field_and_position(raw, match):
    with pytest.raises(ValueError, match=match):
        timeseries_item(STATE, raw)


# --------------------------------------------------------------------------- ecg
ECG_STATE = {"config": {"leads": ["I", "II", "V1"], "fs": 100.0}, "fitted": {"n_samples": 500}}


def _record(tmp_path):
    import wfdb

    rng = np.random.default_rng(0)
    sig = rng.normal(size=(2500, 2)).cumsum(0) * 0.01  # 5 s at 500 Hz, leads II and V1 only
    wfdb.wrsamp("r1", fs=500, units=["mV", "mV"], sig_name=["II", "V1"], p_signal=sig, fmt=["16", "16"], write_dir=str(tmp_path))
    return tmp_path / "r1", wfdb.rdrecord(str(tmp_path / "r1")).p_signal


def test_in_memory_ecg_equals_the_same_record_read_from_disk(tmp_path):
    from clinfuse.experiments.prognosis_inputs import ecg_item

    path, signal = _record(tmp_path)
    on_disk = ecg_item(ECG_STATE, str(path), "p1")
    in_memory = ecg_item(ECG_STATE, {"signal": signal.T.tolist(), "fs": 500, "leads": ["V1", "II"][::-1]}, "p1")
    np.testing.assert_array_equal(on_disk["lead_mask"], [False, True, True])  # lead I is masked, not zeroed-and-kept
    np.testing.assert_array_equal(in_memory["lead_mask"], on_disk["lead_mask"])
    np.testing.assert_allclose(in_memory["signal"], on_disk["signal"], rtol=1e-6, atol=1e-7)
    # 500 Hz -> 100 Hz: 5 s = 500 samples, the first 500 of the output
    assert on_disk["signal"].shape == (3, 500) and np.abs(on_disk["signal"][1]).max() > 0


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"signal": [[0.0] * 10], "fs": 500}, "missing"),
        ({"signal": [[0.0] * 10], "fs": 500, "leads": ["II", "V1"]}, "shape"),
        ({"signal": [[0.0] * 10], "fs": float("nan"), "leads": ["II"]}, "ecg.fs"),
        ({"signal": [[0.0] * 10], "fs": 500, "leads": ["PLETH"]}, "none of the leads"),
        ({"signal": [[0.0, float("inf")] * 5], "fs": 500, "leads": ["II"]}, "field 'ecg': lead II has infinite samples"),
        ({"signal": [[0.0, 1e39] * 5], "fs": 500, "leads": ["II"]}, "field 'ecg': lead II has infinite samples"),
        ({"signal": [[0.0, float("nan")] * 5], "fs": 500, "leads": ["II"]}, "field 'ecg': lead II has NaN samples"),
        ("/nonexistent/record", "cannot read WFDB record"),
    ],
)
def test_bad_ecg_inputs_name_the_field(raw, match):
    from clinfuse.experiments.prognosis_inputs import ecg_item

    with pytest.raises(ValueError, match=match):
        ecg_item(ECG_STATE, raw, "p1")


def test_ecgs_resampled_together_equal_one_at_a_time(tmp_path):
    from clinfuse.experiments.prognosis_inputs import ecg_item, finish_items, raw_to_item

    path, signal = _record(tmp_path)
    raws = [  # two rates and two lengths: several resampling groups in one call
        str(path),
        {"signal": signal.T, "fs": 500, "leads": ["II", "V1"]},
        {"signal": signal[:1000, :1].T, "fs": 500, "leads": ["V1"]},
        {"signal": signal[::5].T, "fs": 100, "leads": ["I", "V1"]},
    ]
    items = [{"ecg": raw_to_item("ecg", ECG_STATE, raw, f"p{k}")} for k, raw in enumerate(raws)]
    finish_items({"ecg": ECG_STATE}, items)
    for raw, item in zip(raws, items):
        alone = ecg_item(ECG_STATE, raw, "p")
        np.testing.assert_array_equal(item["ecg"]["lead_mask"], alone["lead_mask"])
        np.testing.assert_allclose(item["ecg"]["signal"], alone["signal"], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- numbers
TAB_STATE = {"fitted": {"numeric_features": ["age", "bmi"], "categorical_features": [], "levels": {},
                        "mean": [60.0, 25.0], "std": [10.0, 5.0]}}
GEN_STATE = {"fitted": {"genes": ["TP53", "EGFR"], "mutations": ["TP53"], "mean": [1.0, 2.0], "std": [2.0, 4.0]}}


def test_numbers_of_any_plain_type_by_hand():
    from clinfuse.experiments.prognosis_inputs import genomics_item, tabular_item

    tab = tabular_item(TAB_STATE, {"age": np.int64(70), "bmi": None})
    np.testing.assert_allclose(tab["numeric"], [1.0, 0.0])
    np.testing.assert_array_equal(tab["numeric_observed"], [True, False])
    gen = genomics_item(GEN_STATE, {"TP53_rnaseq": 3, "EGFR_rnaseq": np.float32(0.0), "TP53_mut": 1})
    np.testing.assert_allclose(gen["expression"], [1.0, -0.5])
    np.testing.assert_array_equal(gen["mutations"], [1.0])


@pytest.mark.parametrize("value, match", [(True, "expected a number"), ("7", "expected a number"),
                                          (float("nan"), "finite"), (float("inf"), "finite"),
                                          (-float("inf"), "finite"), (1e39, "float32's range"),
                                          (-3.5e38, "float32's range")])
def test_bad_numbers_name_their_field(value, match):
    from clinfuse.experiments.prognosis_inputs import genomics_item, tabular_item

    if isinstance(value, bool):  # a bool is 0/1 in a tabular column, as the reader reads bool columns
        np.testing.assert_allclose(tabular_item(TAB_STATE, {"age": 70.0, "bmi": value})["numeric"],
                                   tabular_item(TAB_STATE, {"age": 70.0, "bmi": 1.0})["numeric"])
    else:
        with pytest.raises(ValueError, match=rf"'tabular\.bmi'.*{match}"):
            tabular_item(TAB_STATE, {"age": 70.0, "bmi": value})
    with pytest.raises(ValueError, match=rf"'genomics\.EGFR_rnaseq'.*{match}"):
        genomics_item(GEN_STATE, {"TP53_rnaseq": 1.0, "EGFR_rnaseq": value, "TP53_mut": 0})


# --------------------------------------------------------------------------- notes
def _notes_state(vocab: list[str]) -> dict:
    return {"config": {"max_notes": 2, "max_words": 3}, "fitted": {"vocab": vocab}}


def test_notes_word_ids_by_hand_and_per_vocabulary():
    from clinfuse.experiments.prognosis_inputs import notes_item

    raw = [{"time": 5.0, "text": "Dyspnea worse, dyspnea!"}, {"time": 1.0, "text": "..."},
           {"time": 2.0, "text": "stable today no pain"}, {"time": 0.5, "text": "oldest note"}]
    item = notes_item(_notes_state(["dyspnea", "stable", "pain"]), raw)
    # the wordless note is dropped, the two most recent kept (time order), 3 words at most
    np.testing.assert_array_equal(item["note_times"], [2.0, 5.0])
    np.testing.assert_array_equal(item["token_ids"], [[3, 1, 1], [2, 1, 2]])  # id = vocab index + 2, UNK = 1
    np.testing.assert_array_equal(item["token_mask"], item["token_ids"] != 0)
    other = notes_item(_notes_state(["worse", "dyspnea"]), raw)  # another vocabulary: its own ids
    np.testing.assert_array_equal(other["token_ids"], [[1, 1, 1], [3, 2, 3]])


def test_time_series_columns_refuse_bools_and_strings_and_name_ragged_lists():
    from clinfuse.experiments.prognosis_inputs import timeseries_item

    state = {"config": {"max_events": 8}, "fitted": {"variables": ["hr"], "mean": [80.0], "std": [10.0]}}
    with pytest.raises(ValueError, match=r"field 'timeseries.value\[0\]': expected a number, got True"):
        timeseries_item(state, {"time": [1.0, 2.0], "variable": ["hr", "hr"], "value": [True, 90]})
    with pytest.raises(ValueError, match=r"field 'timeseries.time\[1\]': expected a number, got '1.5'"):
        timeseries_item(state, {"time": [1.0, "1.5"], "variable": ["hr", "hr"], "value": [80, 90]})
    with pytest.raises(ValueError, match=r"field 'timeseries': columns .* must be 1-D lists"):
        timeseries_item(state, {"time": [[1.0], [2.0, 3.0]], "variable": ["hr", "hr"], "value": [80, 90]})


def test_in_memory_ecg_must_be_numbers_with_samples():
    from clinfuse.experiments.prognosis_inputs import ecg_item

    state = {"config": {"fs": 100.0, "leads": ["I", "II"], "lead_aliases": {}}, "fitted": {"n_samples": 200}}
    with pytest.raises(ValueError, match=r"field 'ecg.signal': not a numeric \(L, S\) array"):
        ecg_item(state, {"signal": [["0.1", "0.2"], ["0.3", "0.4"]], "fs": 100, "leads": ["I", "II"]}, "p")
    with pytest.raises(ValueError, match="field 'ecg': the signal has no samples"):
        ecg_item(state, {"signal": np.zeros((2, 0)), "fs": 100, "leads": ["I", "II"]}, "p")
