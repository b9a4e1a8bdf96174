"""A compact wire form for in-memory arrays (ECG signals, slide patch features): base64 of
little-endian floats with the dtype and shape.

Sent as JSON lists, a 12-lead 10 s record at 500 Hz is ~1 MB of text and its parsing dominates a
REST call (measured: 80 MB and 0.9 s of ``json.loads`` for 256 patients, against 0.6 s for the
whole prediction). As base64 of float32 it is 320 kB and decodes at memory speed::

    {"signal_b64": "<base64>", "dtype": "float32", "shape": [12, 5000], "fs": 500, "leads": ["I", ...]}
    {"features_b64": "<base64>", "dtype": "float32", "shape": [350, 1024]}

``encode_ecg`` / ``encode_wsi`` build them on the client; :func:`decode_array` reads them in the
prognosis API.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
# pybase64 (SIMD): the stdlib's decoder took a quarter of a 256-patient REST call with ECGs and
# slides (0.17 s for ~70 MB of base64); pybase64 decodes the same ~40x faster, same bytes and errors
import pybase64

DTYPES = {"float32": "<f4", "float64": "<f8"}


def _encode(x: np.ndarray, key: str, dtype: str) -> dict[str, Any]:
    """``{key: base64, "dtype", "shape"}`` of a 2-D array (already checked by the caller)."""
    return {key: pybase64.b64encode(np.ascontiguousarray(x).tobytes()).decode("ascii"),
            "dtype": dtype, "shape": list(x.shape)}


def _as_2d(values: Any, dtype: str) -> np.ndarray:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return np.asarray(values, dtype=DTYPES[dtype])


def encode_ecg(signal: Any, fs: float, leads: Sequence[str], dtype: str = "float32",
               resample_to: float | None = None) -> dict[str, Any]:
    """The wire form of an in-memory ECG.

    Args:
        signal: ``(L, S)`` samples in mV, one row per lead.
        fs: sampling rate (Hz).
        leads: the ``L`` lead names, in row order.
        dtype: ``float32`` (default; the model computes in float32) or ``float64``.
        resample_to: the model's ECG rate (its model card: "any rate resampled to N Hz";
            ``Prognosis.states["ecg"]["config"]["fs"]``). The signal is resampled here, with the
            model's own resampler (:func:`clinfuse.datasets.ecg_leads.resample_signal`), so the
            request carries only the samples the model reads (a 500 Hz record sent at 100 Hz: a
            fifth of the bytes, and a fifth of the JSON the server parses) and the prediction is
            that of the full-rate record. None (default): sent at ``fs``.

    Returns:
        A JSON-able dict for the ``ecg`` field of a prognosis record.
    """
    x = _as_2d(signal, dtype)
    if x.ndim != 2 or x.shape[0] != len(leads):
        raise ValueError(f"signal must be (L, S) with L = {len(leads)} leads, got {x.shape}")
    if resample_to is not None and float(resample_to) != float(fs):
        from clinfuse.datasets.ecg_leads import resample_signal

        x, fs = resample_signal(x, float(fs), float(resample_to)).astype(DTYPES[dtype]), float(resample_to)
    return {**_encode(x, "signal_b64", dtype), "fs": float(fs), "leads": list(leads)}


def encode_wsi(features: Any, dtype: str = "float32") -> dict[str, Any]:
    """The wire form of one slide's in-memory patch features.

    Args:
        features: ``(P, F)`` patch features (the patch encoder the model was trained on).
        dtype: ``float32`` (default) or ``float64``.

    Returns:
        A JSON-able dict for the ``wsi`` field of a prognosis record (or one entry of a list of
        slides).
    """
    x = _as_2d(features, dtype)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"features must be (P, F) with P, F > 0, got {x.shape}")
    return _encode(x, "features_b64", dtype)


def encode_slides(slides: Sequence[Any], max_patches: int | None = None, dtype: str = "float32") -> list[dict[str, Any]]:
    """The wire form of one patient's slides (the ``wsi`` field: a list).

    Args:
        slides: one ``(P, F)`` patch-feature array per slide, in the order the model should read them.
        max_patches: the model's patch budget (its model card: "up to N patches per patient";
            ``Prognosis.states["wsi"]["config"]["max_patches"]``). When the slides hold more, only
            the patches the model reads are sent, chosen as the model chooses them
            (:func:`clinfuse.datasets.wsi.patches_read`), as one bag:
            the same prediction, at most ``max_patches`` rows on the wire. None (default): every
            slide whole, one entry each.
        dtype: ``float32`` (default) or ``float64``.

    Raises:
        ValueError: naming the slide, for a non-2-D bag, bags of different widths, NaN or inf.
    """
    from clinfuse.datasets.wsi import check_bag, patches_read

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    bags = []
    for k, f in enumerate(slides):
        try:
            x = _as_2d(f, dtype)
        except (TypeError, ValueError) as err:  # ragged or non-numeric: numpy's message alone names no slide
            raise ValueError(f"slide {k}: not a numeric (P, F) array: {err}") from None
        bags.append(check_bag(x, None, f"slide {k}"))
    if not bags:
        raise ValueError("no slides given")
    if len({b.shape[1] for b in bags}) > 1:
        raise ValueError(f"slides of different feature widths: {[b.shape[1] for b in bags]}")
    if max_patches is None or sum(len(b) for b in bags) <= max_patches:
        return [encode_wsi(b, dtype) for b in bags]
    return [encode_wsi(patches_read(bags, int(max_patches)), dtype)]  # chosen on float32, as the model does


def decode_array(raw: Mapping[str, Any], key: str, field: str) -> np.ndarray:
    """``raw[key]`` (base64) + ``dtype`` + ``shape`` -> the 2-D array, in the wire's dtype (float32
    or float64; no float64 copy of a float32 signal: the ECG and slide paths compute in float32) and
    writeable (decoded into a bytearray, not a read-only bytes object).

    Args:
        raw: the wire dict.
        key: the base64 entry (``signal_b64``, ``features_b64``).
        field: the record field for error messages (``ecg``, ``wsi``, ``wsi[1]``).

    Raises:
        ValueError: naming ``field.<entry>`` for a bad dtype, shape, base64 text or length.
    """
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"field '{field}.dtype': expected one of {list(DTYPES)}, got {dtype!r}")
    shape = raw.get("shape")
    if (not isinstance(shape, (list, tuple)) or len(shape) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise ValueError(f"field '{field}.shape': expected two positive integers, got {shape!r}")
    text = raw[key]
    if not isinstance(text, str):
        raise ValueError(f"field '{field}.{key}': expected a base64 string, got {type(text).__name__}")
    try:
        data = pybase64.b64decode_as_bytearray(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"field '{field}.{key}': not valid base64: {err}") from None
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if len(data) != shape[0] * shape[1] * itemsize:
        raise ValueError(
            f"field '{field}.{key}': decodes to {len(data) // itemsize} {dtype} values ({len(data)} bytes); "
            f"shape {list(shape)} needs {shape[0] * shape[1]}"
        )
    return np.frombuffer(data, dtype=DTYPES[dtype]).reshape(shape)
