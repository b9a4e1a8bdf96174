"""ECG modality: one WFDB record per patient listed in ``ecg/records.csv``, resampled, cached, memory-mapped."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.datasets.ecg_leads import select_leads
from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.parallel import run_chunks
from clinfuse.datasets.reader import ModalityReader, check_finite, check_known_ids, read_table, to_float
from clinfuse.datasets.wfdb_read import read_wfdb

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CACHE_DIR = ".clinfuse_cache"
_CACHE_VERSION = 3  # 3: records with duplicate lead channels are refused; older caches may hold them


class ECGReader(ModalityReader):
    """Reads one WFDB record per patient, resampled to ``fs`` Hz and cached on disk, memory-mapped.

    Each record is read with ``wfdb.rdrecord`` (any WFDB signal format: 16, 212, ``.mat``, several
    signal files; records in one format-16 file through :mod:`clinfuse.datasets.wfdb_read`'s equal,
    faster path). Leads are selected by name, case-insensitively, in the order of ``leads``; a
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
        ValueError: a missing column, unknown patients, a null/empty ``record`` or a
            non-numeric/NaN/inf ``time`` (naming the file, column and patients); an
            unreadable/missing/truncated record, a record with partially-NaN leads, none of
            ``leads``, or two channels giving the same lead (naming the record file and patient).
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
        ids = df["patient_id"].tolist()
        check_known_ids(ids, self.known_ids, self.path)
        blank = df["record"].isna() | (df["record"].str.strip() == "")
        if blank.any():
            who = df.loc[blank, "patient_id"].unique()[:10].tolist()
            raise ValueError(f"{self.path}: column 'record' is null or empty for patient(s) {who}")
        df["time"] = to_float(df["time"], self.path, "time", ids)
        check_finite(df["time"].to_numpy(), ids, self.path, "time")  # a NaN time would sort as the most recent
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
                self._warn_short(df, meta.get("seconds"))  # caches written before durations were kept: none
                return npy, np.asarray(meta["lead_mask"], dtype=bool).reshape(len(df), len(self.leads))
        if self.cache:
            try:
                return npy, self._write_cache(cache, df)
            except OSError as err:
                warnings.warn(
                    f"{cache.parent}: cannot write the ECG cache ({err}); records will be read on "
                    f"every access", stacklevel=2,
                )
        lead_mask, seconds = self._read_all(df, None)
        self._warn_short(df, seconds)
        return None, lead_mask

    def _warn_short(self, df: pd.DataFrame, seconds: Sequence[float] | None) -> None:
        """Warn about records over 5% shorter than the ``seconds`` window: they are zero-padded at
        the end (their lead masks stay True), which a model may learn as a signal."""
        if seconds is None:
            return
        short = np.asarray(seconds, dtype=float) < 0.95 * self.seconds
        if short.any():
            who = df.loc[short, "patient_id"].tolist()
            warnings.warn(
                f"{self.path}: {int(short.sum())} of {len(df)} ECG records are shorter than the {self.seconds:g} s "
                f"window (shortest {float(np.min(np.asarray(seconds)[short])):.3g} s) and are zero-padded at the end: "
                f"patient(s) {who[:10]}{' ...' if len(who) > 10 else ''}", stacklevel=3,
            )

    def _write_cache(self, cache: Path, df: pd.DataFrame) -> np.ndarray:
        """Fill a ``(N, L, S)`` float32 ``.npy`` (memory-mapped) in chunks of records, in worker
        processes when there are enough records (:mod:`clinfuse.datasets.parallel`; a progress bar
        from ``PROGRESS_MIN_RECORDS`` records), then publish it."""
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.parent / f"{cache.name}.{os.getpid()}.tmp"
        shape = (len(df), len(self.leads), self.n_samples)
        try:
            out = np.lib.format.open_memmap(tmp.with_suffix(".npy"), mode="w+", dtype=np.float32, shape=shape)
            del out  # the chunks open it themselves (in this process or in workers)
            lead_mask, seconds = self._read_all(df, tmp.with_suffix(".npy"))
            self._warn_short(df, seconds)
            meta = {"patient_ids": df["patient_id"].tolist(), "lead_mask": lead_mask.tolist(), "seconds": seconds}
            tmp.with_suffix(".json").write_text(json.dumps(meta))
            os.replace(tmp.with_suffix(".npy"), cache.with_suffix(".npy"))
            os.replace(tmp.with_suffix(".json"), cache.with_suffix(".json"))
        finally:
            for leftover in (tmp.with_suffix(".npy"), tmp.with_suffix(".json")):
                leftover.unlink(missing_ok=True)
        return lead_mask

    def _read_all(self, df: pd.DataFrame, npy: Path | None) -> tuple[np.ndarray, list[float]]:
        """Read and validate every record (into rows of ``npy`` when given); the ``(N, L)`` lead
        masks and each record's duration in seconds."""
        settings = {"leads": self.leads, "fs": self.fs, "n_samples": self.n_samples, "lead_aliases": self.lead_aliases}
        paths = [str(self.root / "ecg" / rec) for rec in df["record"]]
        ids = df["patient_id"].tolist()
        tasks = [
            {"start": i, "paths": paths[i : i + CACHE_CHUNK], "ids": ids[i : i + CACHE_CHUNK], "npy": npy and str(npy), **settings}
            for i in range(0, len(df), CACHE_CHUNK)
        ]
        chunks = run_chunks(_read_chunk, tasks, [len(t["paths"]) for t in tasks], "ECG cache",
                            show_progress=len(df) >= PROGRESS_MIN_RECORDS)
        if not chunks:
            return np.zeros((0, len(self.leads)), dtype=bool), []
        return np.concatenate([m for m, _ in chunks]), [float(x) for _, sec in chunks for x in sec]

    def _read_record(self, path: Path, patient_id: str) -> tuple[np.ndarray, np.ndarray]:
        """One record as ``(L, S)`` float32 at ``fs`` and its ``(L,)`` lead mask."""
        return read_ecg_record(path, patient_id, self.leads, self.fs, self.n_samples, self.lead_aliases)

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
        rows = [self._index[p] for p in train_ids if p in self._index]
        return {"leads": list(self.leads), "fs": self.fs, "n_samples": self.n_samples,
                "amplitude_mv": self._amplitude(rows)}

    def _amplitude(self, rows: list[int]) -> float | None:
        """The median, over training records and their present leads, of a lead's standard
        deviation in mV (at most ``AMPLITUDE_RECORDS`` evenly spaced records): the amplitude the
        model was trained on, against which the prognosis API flags a signal in the wrong unit."""
        if not rows:
            return None
        sds = []
        for i in rows[:: max(1, len(rows) // AMPLITUDE_RECORDS)]:
            item = self._get(self._records["patient_id"].iloc[i], training=False)
            sds.append(item["signal"][item["lead_mask"]].std(axis=1))
        sds = np.concatenate(sds)
        return float(np.median(sds)) if len(sds) else None

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


#: training records read for the amplitude statistic of the fitted state
AMPLITUDE_RECORDS = 2000
#: records per chunk of the cache build (one task for a worker process)
CACHE_CHUNK = 64
#: a cache build of at least this many records shows a progress bar
PROGRESS_MIN_RECORDS = 500


def read_ecg_record(
    path: str | Path, patient_id: str, leads: Sequence[str], fs: float, n_samples: int, lead_aliases: Mapping[str, str],
    with_seconds: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, float]:
    """One WFDB record (path without extension) as ``(L, n_samples)`` float32 at ``fs`` and its
    ``(L,)`` lead mask (and, with ``with_seconds``, the record's duration in seconds before
    cropping / zero-padding); ValueError naming the files and the patient when it cannot be read."""
    try:
        record = read_wfdb(path)
        data = record.p_signal
        if data is None or data.ndim != 2 or data.shape[0] != record.sig_len:
            raise ValueError(f"expected {record.sig_len} samples, read {getattr(data, 'shape', None)}")
    except Exception as err:  # wfdb raises OSError/ValueError/IndexError on bad files
        raise ValueError(
            f"{path}.hea/.dat (patient {patient_id}): cannot read WFDB record: {type(err).__name__}: {err}"
        ) from err
    units = record.units or [""] * len(record.sig_name)
    signal, mask = select_leads(
        data, record.sig_name, units, float(record.fs), leads, fs, n_samples, lead_aliases,
        where=f"{path} (patient {patient_id})",
    )
    return (signal, mask, data.shape[0] / float(record.fs)) if with_seconds else (signal, mask)


def _read_chunk(task: dict[str, Any]) -> tuple[np.ndarray, list[float]]:
    """Read one chunk of records (runs in a worker): write them to their rows of ``task["npy"]``
    (when given) and return their ``(n, L)`` lead masks and durations (s)."""
    if multiprocessing.parent_process() is not None:  # a worker: one torch thread each, no oversubscription
        torch.set_num_threads(1)
    out = np.load(task["npy"], mmap_mode="r+") if task["npy"] else None
    masks = np.zeros((len(task["paths"]), len(task["leads"])), dtype=bool)
    seconds = []
    for k, (path, pid) in enumerate(zip(task["paths"], task["ids"])):
        signal, masks[k], sec = read_ecg_record(path, pid, task["leads"], task["fs"], task["n_samples"],
                                                task["lead_aliases"], with_seconds=True)
        seconds.append(sec)
        if out is not None:
            out[task["start"] + k] = signal
    if out is not None:
        out.flush()
        del out
    return masks, seconds
