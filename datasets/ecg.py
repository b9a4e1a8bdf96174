"""ECG modality: one WFDB record per patient listed in ``ecg/records.csv``, resampled and cached."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import wfdb
from scipy.signal import resample_poly

from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.reader import ModalityReader, check_known_ids, read_table, to_float

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CACHE_DIR = ".clinfuse_cache"
_CACHE_VERSION = 1


class ECGReader(ModalityReader):
    """Reads every patient's ECG into one ``(N, L, S)`` float32 array at ``fs`` Hz.

    Each record is read with ``wfdb.rdrecord`` (physical units, usually mV). Leads are selected by
    name, case-insensitively, in the order of ``leads``; a lead a record lacks, or whose samples
    are all NaN, gets ``lead_mask`` False and zeros. Signals are resampled with
    ``scipy.signal.resample_poly`` and cropped (the first ``seconds`` kept) or zero-padded at the
    end to ``seconds``. A patient with several records keeps the most recent (largest ``time``).
    Signals are not normalised (the spec does not ask for it), so ``fit`` learns nothing.

    The preprocessed array is cached as ``<root>/.clinfuse_cache/ecg_<hash>.npy`` (+ ``.json``);
    the hash covers ``records.csv``'s rows, the size and mtime of every file of each record, ``fs``,
    ``seconds`` and ``leads``, so editing any record invalidates it. An unwritable root only
    disables the cache (with a warning).

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet`` (``None`` skips the check).
        fs: the output sampling rate in Hz.
        seconds: the output duration.
        leads: lead names in output order.
        cache: whether to read/write the cache.

    Raises:
        ValueError: a missing column, unknown patients, an unreadable/missing/truncated record or a
            record with partially-NaN leads, naming the record file and the patient.
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
    ) -> None:
        super().__init__(root, known_ids)
        if fs <= 0 or seconds <= 0:
            raise ValueError(f"ECG fs and seconds must be > 0, got fs={fs}, seconds={seconds}")
        self.fs, self.seconds, self.leads, self.cache = float(fs), float(seconds), list(leads), cache
        self.n_samples = int(round(self.fs * self.seconds))
        df = read_table(self.path, ["patient_id", "record", "time"], str_columns=["record"])
        check_known_ids(df["patient_id"], self.known_ids, self.path)
        df["time"] = to_float(df["time"], self.path, "time", df["patient_id"].tolist())
        # the most recent record per patient (stable: ties keep the last row)
        df = df.sort_values("time", kind="stable").drop_duplicates("patient_id", keep="last")
        df = df.sort_values("patient_id", kind="stable").reset_index(drop=True)
        self._records = df
        self._signal, self._lead_mask = self._load(df)
        self._index = {pid: i for i, pid in enumerate(df["patient_id"])}

    # ------------------------------------------------------------------ reading + cache
    def _load(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        key = self._cache_key(df)
        cache = self.root / CACHE_DIR / f"ecg_{key}"
        if self.cache and cache.with_suffix(".npy").exists() and cache.with_suffix(".json").exists():
            meta = json.loads(cache.with_suffix(".json").read_text())
            if meta.get("patient_ids") == df["patient_id"].tolist():
                return np.load(cache.with_suffix(".npy")), np.asarray(meta["lead_mask"], dtype=bool)
        signal = np.zeros((len(df), len(self.leads), self.n_samples), dtype=np.float32)
        lead_mask = np.zeros((len(df), len(self.leads)), dtype=bool)
        for i, (pid, rec) in enumerate(zip(df["patient_id"], df["record"])):
            signal[i], lead_mask[i] = self._read_record(self.root / "ecg" / rec, pid)
        if self.cache:
            self._write_cache(cache, signal, lead_mask, df)
        return signal, lead_mask

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
        names = {str(n).lower(): j for j, n in enumerate(record.sig_name)}
        out = np.zeros((len(self.leads), self.n_samples), dtype=np.float32)
        mask = np.zeros(len(self.leads), dtype=bool)
        ratio = Fraction(self.fs / float(record.fs)).limit_denominator(1000)
        for k, lead in enumerate(self.leads):
            j = names.get(lead.lower())
            if j is None or np.isnan(data[:, j]).all():
                continue
            if np.isnan(data[:, j]).any():
                raise ValueError(f"{path} (patient {patient_id}): lead {lead} has NaN samples")
            mask[k] = True
        if not mask.any():
            raise ValueError(
                f"{path} (patient {patient_id}): none of the leads {self.leads} found; "
                f"the record has {list(record.sig_name)}"
            )
        columns = [names[lead.lower()] for lead, keep in zip(self.leads, mask) if keep]
        x = data[:, columns].astype(np.float32)  # (S_in, L_kept)
        if ratio != 1:
            x = resample_poly(x, ratio.numerator, ratio.denominator, axis=0)  # one filter for all leads
        n = min(len(x), self.n_samples)
        out[mask, :n] = x[:n].T
        return out, mask

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
        }
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:20]

    def _write_cache(self, cache: Path, signal: np.ndarray, lead_mask: np.ndarray, df: pd.DataFrame) -> None:
        meta = {"patient_ids": df["patient_id"].tolist(), "lead_mask": lead_mask.tolist()}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.parent / f"{cache.name}.{os.getpid()}.tmp"
            with open(tmp.with_suffix(".npy"), "wb") as fh:
                np.save(fh, signal)
            tmp.with_suffix(".json").write_text(json.dumps(meta))
            os.replace(tmp.with_suffix(".npy"), cache.with_suffix(".npy"))
            os.replace(tmp.with_suffix(".json"), cache.with_suffix(".json"))
        except OSError as err:
            warnings.warn(
                f"{cache.parent}: cannot write the ECG cache ({err}); continuing without it", stacklevel=2
            )

    # ------------------------------------------------------------------ preprocessing + access
    def config(self) -> dict[str, Any]:
        return {"fs": self.fs, "seconds": self.seconds, "leads": list(self.leads), "cache": self.cache}

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
        return {"signal": self._signal[i], "lead_mask": self._lead_mask[i]}

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
