"""The Cohort: a cohort folder's patients, labels, splits, oracle and per-modality readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinfuse.datasets.ecg import ECGReader
from clinfuse.datasets.genomics import GenomicsReader
from clinfuse.datasets.notes import NotesReader
from clinfuse.datasets.reader import (
    ModalityReader,
    check_finite,
    check_known_ids,
    check_unique_ids,
    read_cohort_info,
    read_table,
    to_float,
)
from clinfuse.datasets.tabular import TabularReader
from clinfuse.datasets.timeseries import TimeseriesReader
from clinfuse.datasets.wsi import WSIReader

#: modality name -> reader class, in canonical order.
READERS: dict[str, type[ModalityReader]] = {
    cls.name: cls
    for cls in (TabularReader, TimeseriesReader, ECGReader, NotesReader, WSIReader, GenomicsReader)
}
SPLITS = ("train", "val", "test")
#: Every known label column; ``labels.parquet`` needs ``patient_id`` plus at least one label (``time``
#: and ``event`` come together). Further columns (e.g. ``label_<name>`` floats) are kept as they are.
LABEL_COLUMNS = ("patient_id", "binary", "multiclass", "time", "event", "cause")


@dataclass
class Cohort:
    """A loaded cohort folder (layout: ``docs/formats.md`` section 1).

    Attributes:
        root: the cohort folder.
        patient_ids: every patient, in ``labels.parquet`` order.
        labels: ``patient_id`` and the label columns the cohort has: any of ``binary``,
            ``multiclass``, ``time`` + ``event`` (validated), plus extra columns such as
            ``label_<name>`` kept as stored.
        splits: ``train``/``val``/``test`` -> patient ids (disjoint, covering every patient).
        readers: modality -> reader, in canonical modality order.
        oracle: ``oracle.parquet`` when present, else None.
        info: the parsed ``cohort.json`` (empty when absent).
    """

    root: Path
    patient_ids: list[str]
    labels: pd.DataFrame
    splits: dict[str, list[str]]
    readers: dict[str, ModalityReader]
    oracle: pd.DataFrame | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def available_modalities(root: str | Path) -> list[str]:
        """Modalities whose files exist under ``root``, in canonical order."""
        return [name for name, cls in READERS.items() if cls.available(root)]

    @classmethod
    def load(
        cls, root: str | Path, modalities: list[str] | None = None, **reader_kwargs: dict[str, Any]
    ) -> "Cohort":
        """Read and validate a cohort folder (preprocessing is not fitted: call ``fit()``).

        Args:
            root: the cohort folder.
            modalities: modalities to load; ``None`` = every available one.
            **reader_kwargs: per-modality constructor arguments, e.g.
                ``ecg={"fs": 100.0, "seconds": 10.0}, wsi={"max_patches": 256}``.

        Raises:
            ValueError: a missing folder (with the command that creates a synthetic one), an
                unknown or unavailable modality (listing the available ones), or invalid files.
        """
        root = Path(root)
        if not root.is_dir():
            raise ValueError(
                f"cohort folder {root} does not exist; create a synthetic one with "
                f"`clinfuse synth --out {root}` or point root at an existing cohort"
            )
        info_path = root / "cohort.json"
        info = read_cohort_info(info_path)
        available = cls.available_modalities(root)
        if modalities is None:
            modalities = available
        if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
            raise TypeError(f"modalities must be a list of modality names (e.g. ['tabular']), got {modalities!r}")
        if not modalities:
            raise ValueError(f"{root}: no modality to load (modalities={list(modalities)}; the folder has {available})")
        for name in list(modalities) + list(reader_kwargs):
            if name not in READERS:
                raise ValueError(f"unknown modality {name!r}; known modalities: {list(READERS)}")
            if name in modalities and name not in available:
                raise ValueError(
                    f"{root}: modality {name!r} requested but {root / READERS[name].filename} does not "
                    f"exist; available modalities: {available} (cohort.json lists {info.get('modalities')})"
                )
        labels = read_labels(root / "labels.parquet", info.get("n_classes"))
        ids = labels["patient_id"].tolist()
        splits = _read_splits(root / "splits.csv", ids)
        oracle = None
        if (root / "oracle.parquet").exists():
            oracle = read_table(root / "oracle.parquet", ["patient_id"])
            check_unique_ids(oracle["patient_id"].tolist(), root / "oracle.parquet")
            check_known_ids(oracle["patient_id"], set(ids), root / "oracle.parquet")
            for column in oracle.columns.drop("patient_id"):  # the oracle's risks are compared, never imputed
                if pd.api.types.is_numeric_dtype(oracle[column]):
                    check_finite(oracle[column].to_numpy(), oracle["patient_id"].to_numpy(), root / "oracle.parquet", column)
        readers = {
            name: READERS[name](root, ids, **reader_kwargs.get(name, {}))
            for name in READERS
            if name in modalities
        }
        return cls(root, ids, labels, splits, readers, oracle, info)

    @property
    def modalities(self) -> list[str]:
        """The loaded modalities."""
        return list(self.readers)

    @property
    def label_names(self) -> list[str]:
        """The label columns of ``labels.parquet`` (every column but ``patient_id``), in file order."""
        return [c for c in self.labels.columns if c != "patient_id"]

    @property
    def n_classes(self) -> int:
        """Classes of the ``multiclass`` label (``cohort.json`` ``n_classes``, else max + 1; 0 without it)."""
        if "n_classes" in self.info:
            return int(self.info["n_classes"])
        if "multiclass" not in self.labels.columns:
            return 0
        return int(self.labels["multiclass"].max()) + 1

    def fit(self) -> "Cohort":
        """Fit every reader's preprocessing on the train split only.

        Raises:
            ValueError: the train split is empty (naming ``splits.csv`` and the split sizes); a cohort
                scored by an already trained model (all ``test``) is read through ``load_state_dict``.
        """
        if not self.splits["train"]:
            sizes = {k: len(v) for k, v in self.splits.items()}
            raise ValueError(f"{self.root / 'splits.csv'}: no patient is in the train split ({sizes}); the "
                             "preprocessing is fitted on training patients only")
        for reader in self.readers.values():
            reader.fit(self.splits["train"])
        return self

    def presence(self) -> pd.DataFrame:
        """Per-patient per-modality presence: index ``patient_id``, one bool column per modality."""
        data = {m: [r.has(p) for p in self.patient_ids] for m, r in self.readers.items()}
        return pd.DataFrame(data, index=pd.Index(self.patient_ids, name="patient_id"), dtype=bool)

    def spec(self) -> dict[str, dict[str, Any]]:
        """Modality -> spec (``docs/formats.md`` section 3); readers must be fitted."""
        return {m: r.spec() for m, r in self.readers.items()}

    def state_dict(self) -> dict[str, Any]:
        """Every reader's fitted preprocessing, JSON-able."""
        return {
            "n_classes": self.n_classes,
            "modalities": {m: r.state_dict() for m, r in self.readers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> "Cohort":
        """Replace the readers by ones restored from ``state_dict()`` output (no refit)."""
        missing = [m for m in self.readers if m not in state["modalities"]]
        if missing:
            raise ValueError(f"saved preprocessing has no state for modalities {missing}")
        self.readers = {
            m: READERS[m].from_state(self.root, state["modalities"][m], self.patient_ids)
            for m in self.readers
        }
        return self


def read_labels(path: Path, n_classes: int | None) -> pd.DataFrame:
    """Read and validate ``labels.parquet``: ``patient_id`` and at least one label column.

    Known label columns that are present are checked strictly: ``binary`` 0/1, ``multiclass`` an
    integer in ``[0, n_classes)``, ``time`` > 0 with ``event`` 0/1 (the two come together). Extra
    columns (e.g. ``label_<name>``) are kept unchanged.
    """
    if not path.exists():
        raise ValueError(f"{path} does not exist: every cohort needs labels")
    df = read_table(path, ["patient_id"]).copy()
    has = [c for c in LABEL_COLUMNS[1:] if c in df.columns]
    if ("time" in has) != ("event" in has):
        found, lacking = ("time", "event") if "time" in has else ("event", "time")
        raise ValueError(
            f"{path}: survival labels 'time' and 'event' come together; found '{found}' without '{lacking}'"
        )
    if len(df.columns) < 2:
        raise ValueError(
            f"{path}: no label column; expected at least one of {list(LABEL_COLUMNS[1:])} "
            f"(or extra columns such as 'label_<name>'), found {list(df.columns)}"
        )
    ids = df["patient_id"].tolist()
    check_unique_ids(ids, path)
    for col in has:
        df[col] = to_float(df[col], path, col, ids, unit="days")  # a datetime/timedelta is refused
        check_finite(df[col].to_numpy(), ids, path, col)
    for col in ("binary", "event"):
        if col not in has:
            continue
        bad = ~df[col].isin([0.0, 1.0])
        if bad.any():
            who = df.loc[bad, "patient_id"][:10].tolist()
            raise ValueError(f"{path}: column '{col}' must be 0/1; patient(s) {who}")
    if "multiclass" in has:
        mc = df["multiclass"]
        bad = (mc != np.round(mc)) | (mc < 0) | ((mc >= n_classes) if n_classes is not None else False)
        if bad.any():
            raise ValueError(
                f"{path}: column 'multiclass' must be an integer in [0, {n_classes}); "
                f"patient(s) {df.loc[bad, 'patient_id'][:10].tolist()}"
            )
    if "time" in has:
        bad = df["time"] <= 0
        if bad.any():
            who = df.loc[bad, "patient_id"][:10].tolist()
            raise ValueError(f"{path}: column 'time' must be > 0; patient(s) {who}")
    if "cause" in has:  # competing risks: 0 = censored, 1..R = the event's cause
        if "event" not in has:
            raise ValueError(f"{path}: column 'cause' (competing risks) needs the survival labels 'time' and 'event'")
        c = df["cause"]
        bad = (c != np.round(c)) | (c < 0) | ((c > 0) != (df["event"] > 0))
        if bad.any():
            raise ValueError(
                f"{path}: column 'cause' must be 0 where event is 0 and an integer >= 1 (the cause) where "
                f"event is 1; patient(s) {df.loc[bad, 'patient_id'][:10].tolist()}"
            )
    for col in ("binary", "multiclass", "event", "cause"):
        if col in has:
            df[col] = df[col].astype(np.int64)
    return df.reset_index(drop=True)


def _read_splits(path: Path, ids: list[str]) -> dict[str, list[str]]:
    """Read ``splits.csv``: every labelled patient in exactly one of train/val/test."""
    if not path.exists():
        raise ValueError(f"{path} does not exist: every cohort needs a patient split")
    df = read_table(path, ["patient_id", "split"], str_columns=["split"])
    check_unique_ids(df["patient_id"].tolist(), path)
    check_known_ids(df["patient_id"], set(ids), path)
    bad = ~df["split"].isin(SPLITS)
    if bad.any():
        got = df.loc[bad, "split"].unique()[:5].tolist()
        raise ValueError(f"{path}: column 'split' must be one of {SPLITS}; got {got}")
    unsplit = sorted(set(ids) - set(df["patient_id"]))
    if unsplit:
        raise ValueError(f"{path}: patient(s) {unsplit[:10]} of labels.parquet have no split")
    return {s: df.loc[df["split"] == s, "patient_id"].tolist() for s in SPLITS}
