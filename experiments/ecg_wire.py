"""A compact wire form for in-memory ECGs: the signal as base64 of little-endian floats.

Sent as JSON lists, a 12-lead 10 s record at 500 Hz is ~1 MB of text and its parsing dominates a
REST call (measured: 80 MB and 0.9 s of ``json.loads`` for 256 patients, against 0.6 s for the
whole prediction). As base64 of float32 it is 320 kB and decodes at memory speed::

    {"signal_b64": "<base64>", "dtype": "float32", "shape": [12, 5000], "fs": 500, "leads": ["I", ...]}

``encode_ecg`` builds it on the client; :func:`decode_signal` reads it in the prognosis API.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DTYPES = {"float32": "<f4", "float64": "<f8"}


def encode_ecg(signal: Any, fs: float, leads: Sequence[str], dtype: str = "float32") -> dict[str, Any]:
    """The wire form of an in-memory ECG.

    Args:
        signal: ``(L, S)`` samples in mV, one row per lead.
        fs: sampling rate (Hz).
        leads: the ``L`` lead names, in row order.
        dtype: ``float32`` (default; the model computes in float32) or ``float64``.

    Returns:
        A JSON-able dict for the ``ecg`` field of a prognosis record.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    x = np.asarray(signal, dtype=DTYPES[dtype])
    if x.ndim != 2 or x.shape[0] != len(leads):
        raise ValueError(f"signal must be (L, S) with L = {len(leads)} leads, got {x.shape}")
    return {"signal_b64": base64.b64encode(np.ascontiguousarray(x).tobytes()).decode("ascii"),
            "dtype": dtype, "shape": list(x.shape), "fs": float(fs), "leads": list(leads)}


def decode_signal(raw: Mapping[str, Any]) -> np.ndarray:
    """``signal_b64`` + ``dtype`` + ``shape`` -> the ``(L, S)`` float64 signal; ValueError naming the field."""
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"field 'ecg.dtype': expected one of {list(DTYPES)}, got {dtype!r}")
    shape = raw.get("shape")
    if (not isinstance(shape, (list, tuple)) or len(shape) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise ValueError(f"field 'ecg.shape': expected [L, S] (two positive integers), got {shape!r}")
    text = raw["signal_b64"]
    if not isinstance(text, str):
        raise ValueError(f"field 'ecg.signal_b64': expected a base64 string, got {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"field 'ecg.signal_b64': not valid base64: {err}") from None
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if len(data) != shape[0] * shape[1] * itemsize:
        raise ValueError(
            f"field 'ecg.signal_b64': decodes to {len(data) // itemsize} {dtype} values ({len(data)} bytes); "
            f"shape {list(shape)} needs {shape[0] * shape[1]}"
        )
    return np.frombuffer(data, dtype=DTYPES[dtype]).reshape(shape).astype(np.float64)
