"""The base64 wire form of in-memory ECGs: same item as the JSON-list form, named errors, and the
MLflow wire DataFrame path."""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import pytest

from clinfuse.experiments import encode_ecg, encode_slides, encode_wsi
from clinfuse.experiments.wire import decode_array
from clinfuse.experiments.prognosis_inputs import ecg_item, wsi_item

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
        ({"shape": [2]}, r"ecg\.shape': expected two positive integers"),
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
    np.testing.assert_array_equal(decode_array(encode_ecg(sig, 250, ["I", "II"], "float64"), "signal_b64", "ecg"), sig)
    for dtype, want in (("float32", np.float32), ("float64", np.float64)):  # the wire's dtype, no widening copy
        out = decode_array(encode_ecg(sig, 250, ["I", "II"], dtype), "signal_b64", "ecg")
        assert out.dtype == want and out.flags.writeable and out.shape == sig.shape
    raw = base64.b64decode(encode_ecg(sig, 250, ["I", "II"])["signal_b64"])
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(2, -1), sig.astype(np.float32))  # little-endian rows
    with pytest.raises(ValueError, match="L = 3 leads"):
        encode_ecg(sig, 250, ["I", "II", "V1"])


def test_decoding_agrees_with_the_standard_librarys_strict_base64():
    """decode_array (pybase64) against Python's own base64, validate=True: the same array from
    text the standard library wrote, and every text the standard library refuses is refused."""
    sig = _signal(2)
    text = base64.b64encode(sig.astype("<f4").tobytes()).decode("ascii")
    wire = {"signal_b64": text, "dtype": "float32", "shape": list(sig.shape)}
    np.testing.assert_array_equal(decode_array(wire, "signal_b64", "ecg"), sig.astype(np.float32))
    for bad in (text[:40] + "\n" + text[40:], text[:-1], text[:10] + "*" + text[11:], text + "=="):
        with pytest.raises(binascii.Error):
            base64.b64decode(bad, validate=True)
        with pytest.raises(ValueError, match="not valid base64"):
            decode_array({**wire, "signal_b64": bad}, "signal_b64", "ecg")


WSI_STATE = {"modality": "wsi", "config": {"max_patches": 6}, "fitted": {"feature_dim": 3}}


def _slides(tmp_path):
    import h5py

    rng = np.random.default_rng(3)
    feats = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)]
    paths = []
    for k, f in enumerate(feats):
        paths.append(tmp_path / f"s{k}.h5")
        with h5py.File(paths[-1], "w") as h:
            h["features"] = f
    return feats, paths


def test_in_memory_slides_equal_the_files_including_the_content_seeded_subset(tmp_path):
    feats, paths = _slides(tmp_path)
    from_files = wsi_item(WSI_STATE, [str(p) for p in paths])["features"]  # 9 patches -> 6 sampled
    assert from_files.shape == (6, 3)
    mixed = [{"features": feats[0].tolist()}, json.loads(json.dumps(encode_wsi(feats[1])))]
    np.testing.assert_array_equal(wsi_item(WSI_STATE, mixed)["features"], from_files)
    np.testing.assert_array_equal(wsi_item(WSI_STATE, {"features": feats[0]})["features"], feats[0])


@pytest.mark.parametrize(
    "raw,match",
    [
        ([], "an empty list of slides"),
        ({"features": [[1.0, 2.0]]}, r"field 'wsi.features': features must be \(P>0, 3\), got \(1, 2\)"),
        ({"features": [[1.0, float("nan"), 2.0]]}, "wsi.features': features contain NaN"),
        ({"features": [["a", "b", "c"]]}, r"wsi.features': not a numeric \(P, F\) array"),
        ({"patches": [[1.0, 2.0, 3.0]]}, "expected a slide file path, {features}"),
        ([{"features": [[1.0, 2.0, 3.0]]}, {**encode_wsi(np.ones((2, 3))), "shape": [3, 3]}],
         r"field 'wsi\[1\].features_b64': decodes to 6 float32 values"),
        ([{"features": [[1.0, 2.0, 3.0]]}, 5], r"field 'wsi\[1\]': expected a slide file path"),
    ],
)
def test_bad_in_memory_slides_name_the_field(raw, match):
    with pytest.raises(ValueError, match=match):
        wsi_item(WSI_STATE, raw)


def test_encode_wsi_checks_the_shape():
    with pytest.raises(ValueError, match=r"\(P, F\)"):
        encode_wsi(np.ones(3))
    with pytest.raises(ValueError, match="dtype must be one of"):
        encode_wsi(np.ones((2, 3)), dtype="float16")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_encode_slides_sends_the_patches_the_model_reads_as_the_model_chooses_them(tmp_path, dtype):
    feats, paths = _slides(tmp_path)  # 4 + 5 patches; the model reads 6
    from_files = wsi_item(WSI_STATE, [str(p) for p in paths])["features"]
    wire = json.loads(json.dumps(encode_slides(feats, max_patches=6, dtype=dtype)))
    assert len(wire) == 1 and wire[0]["shape"] == [6, 3]  # one bag of the 6 patches read
    np.testing.assert_array_equal(wsi_item(WSI_STATE, wire)["features"], from_files)
    whole = encode_slides(feats, dtype=dtype)  # no budget given: every slide whole
    assert [w["shape"] for w in whole] == [[4, 3], [5, 3]]
    np.testing.assert_array_equal(wsi_item(WSI_STATE, whole)["features"], from_files)
    assert [w["shape"] for w in encode_slides(feats, max_patches=9)] == [[4, 3], [5, 3]]  # within the budget
    with pytest.raises(ValueError, match="slide 1: features contain NaN"):
        encode_slides([feats[0], np.full((2, 3), np.nan)], max_patches=6)
    with pytest.raises(ValueError, match="different feature widths"):
        encode_slides([feats[0], np.ones((2, 4))])
    with pytest.raises(ValueError, match="no slides"):
        encode_slides([])
    with pytest.raises(ValueError, match=r"slide 1: not a numeric \(P, F\) array"):
        encode_slides([feats[0], [["a", "b", "c"]]])
    with pytest.raises(ValueError, match=r"slide 0: features must be \(P>0"):
        encode_slides([np.ones(3)])
