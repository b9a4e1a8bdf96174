"""ECG lead selection and resampling, shared by the ECG reader and the prognosis API.

``pick_leads`` validates one multi-channel signal and picks the configured leads by name (in mV);
``resample_picked`` resamples many picked signals together; ``select_leads`` does both for one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch
from scipy.signal import firwin

from clinfuse.datasets.ecg_resample import resample_poly_rows

#: unit (lower case) -> factor to millivolts; channels in other units are not ECG leads.
#: sampling rates accepted for a record (Hz): ECG devices record at ~50 Hz to a few kHz
MIN_FS, MAX_FS = 1.0, 100_000.0
_TO_MV = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "v": 1e3, "millivolts": 1.0}


def _channels(
    names: Sequence[str], units: Sequence[str], lead_aliases: Mapping[str, str]
) -> dict[str, list[tuple[int, float]]]:
    """Lower-case lead name -> every voltage channel giving it, as (channel index, factor to mV).

    A lead is given by the channels named like it (case-insensitively) or, when there is none, by
    the channels ``lead_aliases`` renames to it. More than one entry is a duplicate that
    :func:`pick_leads` refuses when the lead is wanted.
    """
    aliases = {k.lower(): v.lower() for k, v in lead_aliases.items()}
    exact: dict[str, list[tuple[int, float]]] = {}
    aliased: dict[str, list[tuple[int, float]]] = {}
    for j, (name, unit) in enumerate(zip(names, units)):
        factor = _TO_MV.get(str(unit).strip().lower())
        if factor is None:  # not a voltage: a pleth/pressure/respiration channel, never a lead
            continue
        key = str(name).strip().lower()
        exact.setdefault(key, []).append((j, factor))
        if key in aliases:
            aliased.setdefault(aliases[key], []).append((j, factor))
    return {**aliased, **exact}  # a channel named exactly like the lead wins over an alias


def _wanted(
    channels: dict[str, list[tuple[int, float]]], names: Sequence[str], leads: Sequence[str], where: str
) -> list[tuple[int | None, float]]:
    """The one channel (index, factor to mV) of each lead, ``(None, 1.0)`` where the signal lacks it;
    ValueError naming ``where``, the lead and the channels when several channels give one lead."""
    wanted = []
    for lead in leads:
        found = channels.get(lead.lower(), [(None, 1.0)])
        if len(found) > 1:
            which = ", ".join(f"{j} {names[j]!r}" for j, _ in found)
            raise ValueError(
                f"{where}: duplicate channel names: {len(found)} channels give lead {lead} (names compared "
                f"case-insensitively, after lead_aliases), cannot tell which one is the lead: channels {which}"
            )
        wanted.append(found[0])
    return wanted


@lru_cache(maxsize=32)
def _lowpass(up: int, down: int) -> np.ndarray:
    """``resample_poly``'s own default anti-aliasing filter (Kaiser, beta 5), cached: designing it
    took a sixth of the time of resampling one 10 s record in the prognosis path."""
    max_rate = max(up, down)
    h = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)
    h.flags.writeable = False  # shared between calls; resample_poly_rows copies it
    return h


@dataclass
class PickedLeads:
    """One signal's leads, picked and in mV but not yet resampled (:func:`resample_picked`).

    Attributes:
        signal: ``(L_kept, S_in)`` float32, the kept leads in output order.
        mask: ``(L,)`` bool, which of the output leads are kept.
        fs_in: the signal's sampling rate (Hz).
    """

    signal: np.ndarray
    mask: np.ndarray
    fs_in: float


def pick_leads(
    data: np.ndarray,
    names: Sequence[str],
    units: Sequence[str],
    fs_in: float,
    leads: Sequence[str],
    lead_aliases: Mapping[str, str] | None = None,
    where: str = "ECG",
) -> PickedLeads:
    """Pick ``leads`` by name from a multi-channel signal and convert them to mV (the validating
    half of :func:`select_leads`; arguments and errors as there)."""
    if data.ndim != 2 or data.shape[1] != len(names) or len(units) != len(names):
        raise ValueError(f"{where}: signal of shape {data.shape} does not match {len(names)} channel names / units")
    if not MIN_FS <= fs_in <= MAX_FS:  # outside, resampling fails (ratio 0) or asks for terabytes
        raise ValueError(f"{where}: sampling rate {fs_in:g} Hz is outside {MIN_FS:g}-{MAX_FS:g} Hz")
    if data.shape[0] == 0:
        raise ValueError(f"{where}: the signal has no samples")
    lead_aliases = dict(lead_aliases or {})
    wanted = _wanted(_channels(names, units, lead_aliases), names, leads, where)
    found = [k for k, (j, _) in enumerate(wanted) if j is not None]
    if not found:
        raise ValueError(
            f"{where}: none of the leads {list(leads)} found; the signal has {list(names)} (lead_aliases: {lead_aliases}; "
            "rename channels with data.ecg_lead_aliases, e.g. {MLII: II}, or choose leads with data.ecg_leads)"
        )
    cols = [wanted[k][0] for k in found]
    x = data if cols == list(range(data.shape[1])) else data[:, cols]  # (S_in, L_found), a view when all
    factors = np.array([wanted[k][1] for k in found])
    x = x * factors if (factors != 1).any() else x  # in mV
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range -> inf, caught below
        x = np.asarray(x.T, dtype=np.float32)  # (L_found, S_in), one pass in the input's memory order
        total = np.add.reduce(x, axis=None)
    if np.isfinite(total):  # every sample finite (a float32 sum that overflows takes the slow path)
        mask = np.zeros(len(leads), dtype=bool)
        mask[found] = True
        return PickedLeads(x, mask, float(fs_in))
    return _picked_with_gaps(x, found, leads, names, lead_aliases, fs_in, where)


def _picked_with_gaps(x: np.ndarray, found: list[int], leads: Sequence[str], names: Sequence[str],
                      lead_aliases: Mapping[str, str], fs_in: float, where: str) -> PickedLeads:
    """:func:`pick_leads` for a signal with non-finite samples: an all-NaN lead is a missing lead
    (masked), a lead with some NaN or any infinite sample is an error naming it."""
    nan = np.isnan(x)
    all_nan, any_nan = nan.all(1), nan.any(1)
    mask = np.zeros(len(leads), dtype=bool)
    for row, k in enumerate(found):
        if all_nan[row]:
            continue
        if any_nan[row]:
            raise ValueError(f"{where}: lead {leads[k]} has NaN samples")
        if not np.isfinite(x[row]).all():
            raise ValueError(f"{where}: lead {leads[k]} has infinite samples (or values beyond float32's range)")
        mask[k] = True
    if not mask.any():
        raise ValueError(
            f"{where}: none of the leads {list(leads)} found; the signal has {list(names)} (lead_aliases: {dict(lead_aliases)})"
        )
    keep = ~all_nan
    return PickedLeads(x if keep.all() else x[keep], mask, float(fs_in))  # (L_kept, S_in)


def resample_picked(picked: Sequence[PickedLeads], fs: float, n_samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Resample picked signals to ``fs`` and crop / zero-pad them to ``n_samples``.

    Signals with the same rate and length are resampled together, about ``_RESAMPLE_ROWS`` leads
    per call of :func:`~clinfuse.datasets.ecg_resample.resample_poly_rows` (``resample_poly``
    with its default Kaiser filter, computed as matrix products): a few products instead of one
    filter loop per record. Not all at once: past a few hundred rows the stacked copy leaves the
    CPU caches and costs more than it saves (measured: 8-16 twelve-lead records per call is twice
    as fast as 181 in one).

    Returns:
        One ``((L, n_samples) float32 signal, (L,) bool mask)`` per input, in order.
    """
    out = [(np.zeros((len(p.mask), n_samples), dtype=np.float32), p.mask) for p in picked]
    open_batch: dict[tuple[float, int], tuple[list[int], list[int]]] = {}  # key -> (members, [rows])
    for i, p in enumerate(picked):
        key = (p.fs_in, p.signal.shape[1])
        members, rows = open_batch.setdefault(key, ([], [0]))
        members.append(i)
        rows[0] += len(p.signal)
        if rows[0] >= _RESAMPLE_ROWS:
            _resample_into(out, picked, open_batch.pop(key)[0], p.fs_in, fs, n_samples)
    for (fs_in, _), (members, _) in open_batch.items():
        _resample_into(out, picked, members, fs_in, fs, n_samples)
    return out


#: leads resampled per call in :func:`resample_picked`
_RESAMPLE_ROWS = 128


def _ratio(fs_in: float, fs: float) -> tuple[int, int]:
    """``(up, down)``: the rate change ``fs / fs_in`` as a fraction (denominator at most 1000)."""
    ratio = Fraction(float(fs) / float(fs_in)).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def resample_signal(signal: np.ndarray, fs_in: float, fs: float) -> np.ndarray:
    """One ``(L, S)`` signal resampled from ``fs_in`` to ``fs`` Hz, in float32, exactly as the ECG
    reader and the prognosis API resample (same ratio, same filter, same arithmetic): a client can
    send a record at the model's rate and get the prediction of the full-rate record.

    Shapes:
        - signal: ``(L, S)`` -> ``(L, ceil(S * fs / fs_in))`` (returned as given when the rates agree)
    """
    if not MIN_FS <= fs_in <= MAX_FS or not MIN_FS <= fs <= MAX_FS:
        raise ValueError(f"sampling rates must be within {MIN_FS:g}-{MAX_FS:g} Hz, got {fs_in:g} -> {fs:g}")
    x = np.ascontiguousarray(signal, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"signal must be (L, S), got shape {x.shape}")
    up, down = _ratio(fs_in, fs)
    if up == down:
        return x
    return resample_poly_rows(torch.from_numpy(x), up, down, _lowpass(up, down)).numpy()


def _resample_into(out: list, picked: Sequence[PickedLeads], members: list[int], fs_in: float, fs: float, n_samples: int) -> None:
    """Resample ``picked[members]`` (same rate and length) in one call and write them into ``out``."""
    up, down = _ratio(fs_in, fs)
    if up != down:  # one filter for all leads, designed once per rate pair; float32 halves the work
        blocks = [torch.from_numpy(picked[i].signal) for i in members]  # stacked by the resampler, no concat copy
        x = resample_poly_rows(blocks, up, down, _lowpass(up, down), n_keep=n_samples).numpy()
    else:
        x = np.concatenate([picked[i].signal for i in members]) if len(members) > 1 else picked[members[0]].signal
    n = min(x.shape[1], n_samples)
    start = 0
    for i in members:
        signal, mask = out[i]
        rows = int(mask.sum())
        signal[mask, :n] = x[start : start + rows, :n]
        start += rows


def select_leads(
    data: np.ndarray,
    names: Sequence[str],
    units: Sequence[str],
    fs_in: float,
    leads: Sequence[str],
    fs: float,
    n_samples: int,
    lead_aliases: Mapping[str, str] | None = None,
    where: str = "ECG",
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``leads`` by name from a multi-channel signal, convert to mV and resample to ``fs``.

    Used for WFDB records and for in-memory signals (the prognosis API). A lead the signal lacks,
    or whose samples are all NaN, gets ``mask`` False and zeros; channels in non-voltage units are
    never leads; the output is cropped / zero-padded to ``n_samples``.

    Args:
        data: ``(S_in, C)`` samples, channel-last as ``wfdb`` returns them.
        names, units: per channel.
        fs_in: the input sampling rate (Hz).
        leads, fs, n_samples: the output lead order, rate and length.
        lead_aliases: channel name -> lead name, case-insensitive.
        where: names the record and patient in errors.

    Returns:
        ``(L, n_samples)`` float32 signal and ``(L,)`` bool lead mask.

    Raises:
        ValueError: partially-NaN leads, none of ``leads`` present, or several channels giving one of
            ``leads`` (the same name up to case, or, with no channel of that name, the same alias).
    """
    return resample_picked([pick_leads(data, names, units, fs_in, leads, lead_aliases, where)], fs, n_samples)[0]
