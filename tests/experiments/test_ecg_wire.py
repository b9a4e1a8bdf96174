"""The base64 wire form of in-memory ECGs: same item as the JSON-list form, named errors, and the
MLflow wire DataFrame path."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from clinfuse.experiments import encode_ecg
from clinfuse.experiments.ecg_wire import decode_signal
from clinfuse.experiments.prognosis_inputs import ecg_item

ECG_STATE = {"modality": "ecg", "config": {"fs": 100.0, "seconds": 5.0, "leads": ["I", "II", "V1"], "lead_aliases": {}},
             "fitted": {"n_samples": 500}}


def _signal(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 2500)).cumsum(1) * 0.01  # (L, S): II, V1 at 500 Hz


def test_float64_wire_form_gives_the_identical_item_float32_within_rounding():
    sig = _signal()
    as_lists = ecg_item(ECG_STATE, {"signal": sig.tolist(), "fs": 500, "leads": ["II", "V1"]}, "p1")
    wire64 = json.loads(json.dumps(encode_ecg(sig, 500, ["II", "V1"], dtype="float64")))  # through JSON, as REST
    exact = ecg_item(ECG_STATE, wire64, "p1")
    np.testing.assert_array_equal(exact["signal"], as_lists["signal"])
    np.testing.assert_array_equal(exact["lead_mask"], [False, True, True])
    wire32 = encode_ecg(sig, 500, ["II", "V1"])
    np.testing.assert_allclose(ecg_item(ECG_STATE, wire32, "p1")["signal"], as_lists["signal"], atol=1e-6)
    assert len(json.dumps(wire32)) < len(json.dumps(sig.tolist())) / 3  # the point of it


@pytest.mark.parametrize(
    "change,match",
    [
        ({"signal_b64": "not base64!"}, r"ecg\.signal_b64': not valid base64"),
        ({"shape": [2, 2499]}, r"decodes to 5000 float32 values .* needs 4998"),
        ({"shape": [2]}, r"ecg\.shape': expected \[L, S\]"),
        ({"dtype": "int16"}, r"ecg\.dtype': expected one of"),
        ({"signal_b64": 5}, "expected a base64 string"),
    ],
)
def test_bad_wire_ecg_names_the_field(change, match):
    wire = {**encode_ecg(_signal(), 500, ["II", "V1"]), **change}
    with pytest.raises(ValueError, match=match):
        ecg_item(ECG_STATE, wire, "p1")


def test_decode_round_trip_and_encode_checks():
    sig = _signal(1)
    np.testing.assert_array_equal(decode_signal(encode_ecg(sig, 250, ["I", "II"], "float64")), sig)
    raw = base64.b64decode(encode_ecg(sig, 250, ["I", "II"])["signal_b64"])
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(2, -1), sig.astype(np.float32))  # little-endian rows
    with pytest.raises(ValueError, match="L = 3 leads"):
        encode_ecg(sig, 250, ["I", "II", "V1"])
