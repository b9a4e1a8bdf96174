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
