"""``Prognosis.predict`` raw inputs a hospital team naturally sends: datetime/timedelta times (refused
the same way in every form, never read as nanoseconds) and NaN for a missing value (an error that
says what to send instead)."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

from clinfuse.experiments.prognosis_inputs import notes_item, tabular_item, timeseries_item

TS_STATE = {"config": {"max_events": 8}, "fitted": {"variables": ["hr"], "mean": [80.0], "std": [10.0]}}
NOTES_STATE = {"config": {"max_notes": 2, "max_words": 3}, "fitted": {"vocab": ["stable"]}}
TAB_STATE = {"fitted": {"numeric_features": ["age", "bmi"], "categorical_features": [], "levels": {},
                        "mean": [60.0, 25.0], "std": [10.0, 5.0]}}
HOURS_HINT = r"times must be numbers: hours from the patient's index time \(labels: days\), e\.g\. .*/ 3600"
STAMP, DELTA = pd.Timestamp("2022-03-01 08:00"), pd.Timedelta(hours=3)


def _forms(time) -> dict[str, object]:
    """One event at ``time`` in each documented time-series form."""
    return {"records": [{"time": time, "variable": "hr", "value": 90.0}],
            "dataframe": pd.DataFrame({"time": [time], "variable": ["hr"], "value": [90.0]}),
            "lists": {"time": [time], "variable": ["hr"], "value": [90.0]}}


@pytest.mark.parametrize("form", ["records", "dataframe", "lists"])
@pytest.mark.parametrize("time", [STAMP, STAMP.tz_localize("UTC"), DELTA, datetime.datetime(2022, 3, 1, 8),
                                  datetime.timedelta(hours=3), np.datetime64("2022-03-01T08:00"),
                                  np.timedelta64(3, "h")], ids=repr)
def test_temporal_event_times_are_refused_in_every_form(form, time):
    with pytest.raises(ValueError, match=rf"field 'timeseries\.time(\[0\])?': .*not (a number|numbers); {HOURS_HINT}"):
        timeseries_item(TS_STATE, _forms(time)[form])


def test_numeric_event_times_give_the_same_item_in_every_form():
    items = [timeseries_item(TS_STATE, raw) for raw in _forms(3.0).values()]
    for item in items:
        np.testing.assert_array_equal(item["times"], [3.0])
        np.testing.assert_allclose(item["values"], [1.0])


@pytest.mark.parametrize("time", [STAMP, DELTA, np.timedelta64(3, "h"), datetime.date(2022, 3, 1)], ids=repr)
@pytest.mark.parametrize("form", ["records", "dataframe"])
def test_temporal_note_times_are_refused(form, time):
    raw = [{"time": time, "text": "stable"}]
    raw = pd.DataFrame(raw) if form == "dataframe" else raw
    with pytest.raises(ValueError, match=rf"field 'notes\[0\]\.time': got .*, not a number; {HOURS_HINT}"):
        notes_item(NOTES_STATE, raw)


@pytest.mark.parametrize("value", [np.timedelta64(3, "h"), np.datetime64("2022-03-01")], ids=repr)
def test_temporal_tabular_values_are_refused(value):
    with pytest.raises(ValueError, match=rf"field 'tabular\.bmi': got .*, not a number; {HOURS_HINT}"):
        tabular_item(TAB_STATE, {"age": 70.0, "bmi": value})


@pytest.mark.parametrize("missing", [float("nan"), np.float32("nan"), pd.NA], ids=repr)
def test_nan_tabular_value_is_an_error_that_says_to_send_none(missing):
    with pytest.raises(ValueError, match=r"field 'tabular\.bmi': value must be finite, got .*; "
                                         r"send None or leave the key out for a missing value"):
        tabular_item(TAB_STATE, {"age": 70.0, "bmi": missing})
    none = tabular_item(TAB_STATE, {"age": 70.0, "bmi": None})
    np.testing.assert_array_equal(none["numeric_observed"], [True, False])


@pytest.mark.parametrize("form", ["records", "dataframe", "lists"])
def test_nan_event_value_says_to_drop_the_event(form):
    raw = _forms(3.0)[form]
    if form == "records":
        raw[0]["value"] = float("nan")
    else:
        raw["value"] = [float("nan")]
    with pytest.raises(ValueError, match=r"field 'timeseries\.value\[0\]': value must be finite .*got nan; "
                                         r"drop events without a value: a measurement not taken is simply absent"):
        timeseries_item(TS_STATE, raw)


def test_predict_names_patient_and_field_for_a_datetime_dataframe_and_a_nan_value(trained_prognosis):
    prog, record = trained_prognosis
    events = pd.DataFrame(record["timeseries"])
    stamped = events.assign(time=STAMP + pd.to_timedelta(events["time"], unit="h"))
    numeric_tab = next(k for k, v in record["tabular"].items() if isinstance(v, float))
    nan_tab = {**record["tabular"], numeric_tab: float("nan")}
    bad_time, bad_nan, good = prog.predict([{**record, "patient_id": "dt", "timeseries": stamped},
                                            {**record, "patient_id": "nan", "tabular": nan_tab},
                                            {**record, "patient_id": "ok", "timeseries": events}], contributions=False)
    assert bad_time["error"].startswith("patient dt: field 'timeseries.time': datetime64[ns] values, not numbers")
    assert "hours from the patient's index time" in bad_time["error"]
    assert bad_nan["error"].startswith(f"patient nan: field 'tabular.{numeric_tab}': value must be finite")
    assert "send None or leave the key out" in bad_nan["error"]
    assert "error" not in good and np.isfinite(good["risk"])
