"""WFDB records: a fast path for the common one-file format-16 record, ``wfdb.rdrecord`` otherwise.

wfdb 4.x types every field of a header's signal lines through pandas ``.loc`` lookups: about 1 ms
of the ~1.5 ms it takes to read a 10 s, 12-lead record, which the prognosis API pays per patient
and the ECG reader per record of its cache build. For the layout most ECG collections use (PTB-XL,
clinfuse's synthetic cohorts: one segment, every channel interleaved in one ``.dat`` file in format
16) :func:`read_format16` parses the header with wfdb's own regular expressions
(``wfdb.io.header``), applies wfdb's read defaults (gain 200 when absent or 0, a missing baseline
from the ADC zero, units mV) and reads the samples with numpy, converting them as wfdb does:
``(digital - baseline) / gain`` in float64, NaN for the invalid value -32768. Anything else (several
segments or signal files, other formats, several samples per frame, skew, byte offsets, block
sizes, a header without a signal length, a signal file of another size) goes to ``wfdb.rdrecord``
unchanged, errors included. ``tests/datasets/test_wfdb_read.py`` checks both against wfdb.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb
from wfdb.io.header import parse_header_content, rx_record, rx_signal

#: format 16's invalid-sample value (wfdb reads it as NaN)
_INVALID_16 = -32768


@dataclass
class WfdbSignal:
    """What the ECG readers use of a WFDB record.

    Attributes:
        p_signal: ``(S, C)`` float64 physical samples (NaN = invalid sample); None when wfdb read
            no physical signal.
        fs: sampling rate (Hz).
        sig_name: channel names.
        units: channel units (wfdb's: None when the header gives none and wfdb leaves them unset).
        sig_len: samples per channel the header declares.
    """

    p_signal: np.ndarray | None
    fs: float
    sig_name: list
    units: list | None
    sig_len: int


def read_wfdb(path: str | Path) -> WfdbSignal:
    """One WFDB record (``path`` without extension): :func:`read_format16` where it applies, else
    ``wfdb.rdrecord`` (whose errors propagate)."""
    fast = read_format16(path)
    if fast is not None:
        return fast
    record = wfdb.rdrecord(str(path))
    return WfdbSignal(record.p_signal, float(record.fs), list(record.sig_name or []), record.units, int(record.sig_len))


def read_format16(path: str | Path) -> WfdbSignal | None:
    """The record read without wfdb's header typing, or None when its layout is not the one-file
    format-16 layout this covers (the module docstring lists what is left to wfdb)."""
    header = Path(f"{path}.hea")
    try:
        text = header.read_text(encoding="ascii", errors="ignore")  # as wfdb opens it
    except OSError:
        return None  # missing or unreadable: wfdb raises its own error
    try:  # a field wfdb's patterns match but cannot type ("-", "."): wfdb reports it
        lines, _ = parse_header_content(text)
        rec = rx_record.match(lines[0]) if lines else None
        if rec is None or rec["n_seg"] or not rec["n_sig"] or not rec["fs"] or not rec["sig_len"]:
            return None
        n_sig, sig_len, fs = int(rec["n_sig"]), int(rec["sig_len"]), float(rec["fs"])
        if n_sig == 0 or len(lines) != n_sig + 1 or not fs > 0:
            return None
        fields = [rx_signal.match(line) for line in lines[1:]]
        if any(m is None for m in fields) or len({m["file_name"] for m in fields}) != 1:
            return None
        for m in fields:
            if (m["fmt"] != "16" or m["samps_per_frame"] not in ("", "1") or m["skew"] not in ("", "0")
                    or m["byte_offset"] not in ("", "0") or m["block_size"] not in ("", "0")
                    or not m["sig_name"] or m["file_name"].startswith("~")):
                return None
        gain = [_gain(m["adc_gain"]) for m in fields]
        baseline = [int(m["baseline"]) if m["baseline"] else int(m["adc_zero"]) if m["adc_zero"] else 0
                    for m in fields]
        dat = header.parent / fields[0]["file_name"]
        if dat.stat().st_size != 2 * n_sig * sig_len:
            return None
        digital = np.fromfile(dat, dtype="<i2").reshape(sig_len, n_sig)
    except (OSError, ValueError):
        return None
    signal = digital.astype(np.float64)
    np.subtract(signal, baseline, signal)
    np.divide(signal, gain, signal)
    signal[digital == _INVALID_16] = np.nan
    return WfdbSignal(signal, fs, [m["sig_name"] for m in fields], [m["units"] or "mV" for m in fields], sig_len)


def _gain(text: str) -> float:
    """wfdb's reading of an ADC gain field: 200 when empty or 0."""
    gain = float(text) if text else 200.0
    return 200.0 if gain == 0 else gain
