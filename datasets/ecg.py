"""ECG modality: one WFDB record per patient listed in ``ecg/records.csv``, resampled, cached, memory-mapped."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import wfdb
from scipy.signal import firwin

from clinfuse.datasets.ecg_resample import resample_poly_rows
from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.reader import ModalityReader, check_known_ids, read_table, to_float

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CACHE_DIR = ".clinfuse_cache"
_CACHE_VERSION = 2
#: unit (lower case) -> factor to millivolts; channels in other units are not ECG leads.
_TO_MV = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "v": 1e3, "millivolts": 1.0}


class ECGReader(ModalityReader):
    """Reads one WFDB record per patient, resampled to ``fs`` Hz and cached on disk, memory-mapped.

    Each record is read with ``wfdb.rdrecord`` (any WFDB signal format: 16, 212, ``.mat``, several
    signal files). Leads are selected by name, case-insensitively, in the order of ``leads``; a
    channel is renamed first through ``lead_aliases`` (e.g. ``{"MLII": "II"}`` to take MIT-BIH's
    modified limb lead II as lead II; no alias by default because MLII is recorded from torso
    electrodes and is not identical to the limb lead II). Only channels in a voltage unit (V, mV,
    uV; converted to mV) count as leads, so a non-ECG channel (PLETH, ABP, RESP) is never taken as
    one. A lead a record lacks, or whose samples are all NaN, gets ``lead_mask`` False (its signal
    row is padding zeros, which encoders ignore). Signals are resampled as
    ``scipy.signal.resample_poly`` does (360/500/1000/... Hz to ``fs``; computed by
    :func:`~clinfuse.datasets.ecg_resample.resample_poly_rows`, shared with the prognosis API) and cropped (the first
    ``seconds`` kept) or zero-padded at the end to ``seconds``. A patient with several records
    keeps the most recent (largest ``time``). Signals are not normalised, so ``fit`` learns nothing.

    Memory: the preprocessed signals are written record by record into
    ``<root>/.clinfuse_cache/ecg_<hash>.npy`` (+ ``.json``) and read back with
    ``np.load(mmap_mode="r")``, so a big cohort is never held in RAM; ``get`` copies one patient's
    ``(L, S)`` rows. The hash covers ``records.csv``'s rows, the size and mtime of every file of
    each record, ``fs``, ``seconds``, ``leads`` and ``lead_aliases``, so editing any record
    invalidates it. With ``cache=False`` or an unwritable root (a warning), every record is read
    once here to validate it and again on each ``get``.

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet`` (``None`` skips the check).
        fs: the output sampling rate in Hz.
        seconds: the output duration.
        leads: lead names in output order.
        cache: whether to read/write the memory-mapped cache.
        lead_aliases: record channel name -> lead name (case-insensitive), applied before selection.

    Raises:
        ValueError: a missing column, unknown patients, an unreadable/missing/truncated record, a
            record with partially-NaN leads or none of ``leads``, naming the record file and patient.
    """

    name = "ecg"
    filename = "ecg/records.csv"

    def __init__(
        self,
        root: str | Path,
        known_ids: Iterable[str] | None = None,
        fs: float = 100.0,
        seconds: float = 10.0,
        leads: Sequence[str] = STANDARD_LEADS,
        cache: bool = True,
        lead_aliases: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(root, known_ids)
        if fs <= 0 or seconds <= 0:
            raise ValueError(f"ECG fs and seconds must be > 0, got fs={fs}, seconds={seconds}")
        self.fs, self.seconds, self.leads, self.cache = float(fs), float(seconds), list(leads), cache
        self.lead_aliases = {str(k): str(v) for k, v in (lead_aliases or {}).items()}
        self.n_samples = int(round(self.fs * self.seconds))
        df = read_table(self.path, ["patient_id", "record", "time"], str_columns=["record"])
        check_known_ids(df["patient_id"], self.known_ids, self.path)
        df["time"] = to_float(df["time"], self.path, "time", df["patient_id"].tolist())
        # the most recent record per patient (stable: ties keep the last row)
        df = df.sort_values("time", kind="stable").drop_duplicates("patient_id", keep="last")
        df = df.sort_values("patient_id", kind="stable").reset_index(drop=True)
        self._records = df
        self._mmap: np.ndarray | None = None
        self._cache_file, self._lead_mask = self._load(df)
        self._index = {pid: i for i, pid in enumerate(df["patient_id"])}

    # ------------------------------------------------------------------ reading + cache
    def _load(self, df: pd.DataFrame) -> tuple[Path | None, np.ndarray]:
        """Validate every record; return the cache file (None = read per patient) and lead masks."""
        cache = self.root / CACHE_DIR / f"ecg_{self._cache_key(df)}"
        npy, meta_path = cache.with_suffix(".npy"), cache.with_suffix(".json")
        if self.cache and npy.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("patient_ids") == df["patient_id"].tolist():
                return npy, np.asarray(meta["lead_mask"], dtype=bool).reshape(len(df), len(self.leads))
        if self.cache:
            try:
                return npy, self._write_cache(cache, df)
            except OSError as err:
                warnings.warn(
                    f"{cache.parent}: cannot write the ECG cache ({err}); records will be read on "
                    f"every access", stacklevel=2,
                )
        lead_mask = np.zeros((len(df), len(self.leads)), dtype=bool)
        for i, (pid, rec) in enumerate(zip(df["patient_id"], df["record"])):
            lead_mask[i] = self._read_record(self.root / "ecg" / rec, pid)[1]
        return None, lead_mask

    def _write_cache(self, cache: Path, df: pd.DataFrame) -> np.ndarray:
        """Fill a ``(N, L, S)`` float32 ``.npy`` record by record (memory-mapped), then publish it."""
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.parent / f"{cache.name}.{os.getpid()}.tmp"
        shape = (len(df), len(self.leads), self.n_samples)
        lead_mask = np.zeros(shape[:2], dtype=bool)
        try:
            out = np.lib.format.open_memmap(tmp.with_suffix(".npy"), mode="w+", dtype=np.float32, shape=shape)
            for i, (pid, rec) in enumerate(zip(df["patient_id"], df["record"])):
                out[i], lead_mask[i] = self._read_record(self.root / "ecg" / rec, pid)
            out.flush()
            del out
            meta = {"patient_ids": df["patient_id"].tolist(), "lead_mask": lead_mask.tolist()}
            tmp.with_suffix(".json").write_text(json.dumps(meta))
            os.replace(tmp.with_suffix(".npy"), cache.with_suffix(".npy"))
            os.replace(tmp.with_suffix(".json"), cache.with_suffix(".json"))
        finally:
            for leftover in (tmp.with_suffix(".npy"), tmp.with_suffix(".json")):
                leftover.unlink(missing_ok=True)
        return lead_mask

    def _read_record(self, path: Path, patient_id: str) -> tuple[np.ndarray, np.ndarray]:
        """One record as ``(L, S)`` float32 at ``fs`` and its ``(L,)`` lead mask."""
        try:
            record = wfdb.rdrecord(str(path))
            data = record.p_signal
            if data is None or data.ndim != 2 or data.shape[0] != record.sig_len:
                raise ValueError(f"expected {record.sig_len} samples, read {getattr(data, 'shape', None)}")
        except Exception as err:  # wfdb raises OSError/ValueError/IndexError on bad files
            raise ValueError(
                f"{path}.hea/.dat (patient {patient_id}): cannot read WFDB record: "
                f"{type(err).__name__}: {err}"
            ) from err
        units = record.units or [""] * len(record.sig_name)
        return select_leads(
            data, record.sig_name, units, float(record.fs), self.leads, self.fs, self.n_samples,
            self.lead_aliases, where=f"{path} (patient {patient_id})",
        )

    def _cache_key(self, df: pd.DataFrame) -> str:
        """Hash of the record list, every record file's size+mtime, and the output settings."""
        files: dict[Path, list[str]] = {}
        for rec in df["record"]:
            path = self.root / "ecg" / rec
            files.setdefault(path.parent, []).append(path.name)
        stats = []
        for folder, stems in files.items():
            wanted = set(stems)
            try:
                entries = list(os.scandir(folder))
            except OSError:
                entries = []
            for e in entries:
                if e.name.split(".")[0] in wanted or e.name.rsplit(".", 1)[0] in wanted:
                    st = e.stat()
                    stats.append((str(folder / e.name), st.st_size, st.st_mtime_ns))
        payload = {
            "version": _CACHE_VERSION,
            "records": df[["patient_id", "record", "time"]].astype(str).values.tolist(),
            "files": sorted(stats),
            "fs": self.fs,
            "seconds": self.seconds,
            "leads": self.leads,
            "lead_aliases": sorted(self.lead_aliases.items()),
        }
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:20]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the memory map (DataLoader workers reopen it instead of copying it)."""
        state = self.__dict__.copy()
        state["_mmap"] = None
        return state

    # ------------------------------------------------------------------ preprocessing + access
    def config(self) -> dict[str, Any]:
        return {
            "fs": self.fs, "seconds": self.seconds, "leads": list(self.leads), "cache": self.cache,
            "lead_aliases": dict(self.lead_aliases),
        }

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        return {"leads": list(self.leads), "fs": self.fs, "n_samples": self.n_samples}

    def _apply(self) -> None:
        s = self._state
        if s["leads"] != self.leads or s["fs"] != self.fs or s["n_samples"] != self.n_samples:
            raise ValueError(f"{self.path}: saved ECG state {s} does not match the reader's config")

    def _spec(self) -> dict[str, Any]:
        return {"leads": list(self.leads), "fs": self.fs, "n_samples": self.n_samples}

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        i = self._index[patient_id]
        if self._cache_file is None:
            rec = self._records["record"].iloc[i]
            signal = self._read_record(self.root / "ecg" / rec, patient_id)[0]
        else:
            if self._mmap is None:  # opened on first use, in each DataLoader worker
                self._mmap = np.load(self._cache_file, mmap_mode="r")
            signal = np.array(self._mmap[i])  # copy one (L, S) row out of the map
        return {"signal": signal, "lead_mask": self._lead_mask[i].copy()}

    def collate(self, items: Sequence[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        """Stack ECGs.

        Shapes:
            signal ``(B, L, S)`` float, lead_mask ``(B, L)`` bool, present ``(B,)`` bool.
        """
        n_leads = len(self.leads)
        return {
            "signal": pad_stack(pick(items, "signal"), (n_leads, self.n_samples), np.float32, "ecg.signal"),
            "lead_mask": pad_stack(pick(items, "lead_mask"), (n_leads,), np.bool_, "ecg.lead_mask"),
            "present": present_mask(items),
        }


def _channels(names: Sequence[str], units: Sequence[str], lead_aliases: Mapping[str, str]) -> dict[str, tuple[int, float]]:
    """Lower-case lead name -> (channel index, factor to mV) of the voltage channels."""
    aliases = {k.lower(): v.lower() for k, v in lead_aliases.items()}
    exact: dict[str, tuple[int, float]] = {}
    aliased: dict[str, tuple[int, float]] = {}
    for j, (name, unit) in enumerate(zip(names, units)):
        factor = _TO_MV.get(str(unit).strip().lower())
        if factor is None:  # not a voltage: a pleth/pressure/respiration channel, never a lead
            continue
        key = str(name).strip().lower()
        exact.setdefault(key, (j, factor))
        if key in aliases:
            aliased.setdefault(aliases[key], (j, factor))
    return {**aliased, **exact}  # a channel named exactly like the lead wins over an alias


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
    if fs_in <= 0:
        raise ValueError(f"{where}: sampling rate must be > 0, got {fs_in}")
    lead_aliases = dict(lead_aliases or {})
    channels = _channels(names, units, lead_aliases)
    wanted = [channels.get(lead.lower(), (None, 1.0)) for lead in leads]
    found = [k for k, (j, _) in enumerate(wanted) if j is not None]
    x = data.T[[wanted[k][0] for k in found]]  # (L_found, S_in), one row gather
    nan = np.isnan(x)
    all_nan, any_nan = nan.all(1), nan.any(1)
    mask = np.zeros(len(leads), dtype=bool)
    for row, k in enumerate(found):
        if all_nan[row]:
            continue
        if any_nan[row]:
            raise ValueError(f"{where}: lead {leads[k]} has NaN samples")
        mask[k] = True
    if not mask.any():
        raise ValueError(
            f"{where}: none of the leads {list(leads)} found; the signal has {list(names)} (lead_aliases: {lead_aliases})"
        )
    keep = ~all_nan
    x = x if keep.all() else x[keep]  # (L_kept, S_in)
    factors = np.array([wanted[k][1] for k in np.flatnonzero(mask)])
    x = x * factors[:, None] if (factors != 1).any() else x  # in mV
    return PickedLeads(x.astype(np.float32), mask, float(fs_in))


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


def _resample_into(out: list, picked: Sequence[PickedLeads], members: list[int], fs_in: float, fs: float, n_samples: int) -> None:
    """Resample ``picked[members]`` (same rate and length) in one call and write them into ``out``."""
    x = np.concatenate([picked[i].signal for i in members]) if len(members) > 1 else picked[members[0]].signal
    ratio = Fraction(float(fs) / float(fs_in)).limit_denominator(1000)
    if ratio != 1:  # one filter for all leads, designed once per rate pair; float32 halves the work
        up, down = ratio.numerator, ratio.denominator
        x = resample_poly_rows(torch.from_numpy(x), up, down, _lowpass(up, down), n_keep=n_samples).numpy()
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
        ValueError: partially-NaN leads, or none of ``leads`` present.
    """
    return resample_picked([pick_leads(data, names, units, fs_in, leads, lead_aliases, where)], fs, n_samples)[0]
