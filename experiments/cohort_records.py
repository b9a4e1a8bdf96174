"""Raw per-patient records read from a cohort folder, in the form ``Prognosis.predict`` takes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def records_from_cohort(root: str | Path, patient_ids: Sequence[str]) -> list[dict]:
    """One raw record per patient (only the modalities the patient has), each file read once.

    Args:
        root: a cohort folder in the layout of ``docs/formats.md``.
        patient_ids: the patients to read.

    Returns:
        ``{"patient_id", "tabular": {column: value}, "timeseries": [{time, variable, value}],
        "ecg": record path, "notes": [{time, text}], "wsi": [h5 paths], "genomics": {column: value}}``
        with absent modalities left out.
    """
    root = Path(root)
    ids = [str(p) for p in patient_ids]
    recs = {pid: {"patient_id": pid} for pid in ids}
    wanted = set(ids)
    if (root / "tabular.parquet").exists():
        tab = pd.read_parquet(root / "tabular.parquet")
        for row in tab[tab["patient_id"].isin(wanted)].to_dict("records"):
            pid = row.pop("patient_id")
            recs[pid]["tabular"] = {k: (None if pd.isna(v) else v) for k, v in row.items()}
    if (root / "timeseries.parquet").exists():
        ts = pd.read_parquet(root / "timeseries.parquet")
        for pid, g in ts[ts["patient_id"].isin(wanted)].groupby("patient_id", sort=False):
            recs[pid]["timeseries"] = g[["time", "variable", "value"]].to_dict("records")
    if (root / "ecg" / "records.csv").exists():
        ecg = pd.read_csv(root / "ecg" / "records.csv", dtype={"patient_id": str, "record": str})
        ecg = ecg[ecg["patient_id"].isin(wanted)].sort_values("time", kind="stable")
        for pid, g in ecg.groupby("patient_id", sort=False):
            recs[pid]["ecg"] = str(root / "ecg" / g["record"].iloc[-1])  # the most recent record
    if (root / "notes.parquet").exists():
        notes = pd.read_parquet(root / "notes.parquet")
        for pid, g in notes[notes["patient_id"].isin(wanted)].groupby("patient_id", sort=False):
            recs[pid]["notes"] = g[["time", "text"]].to_dict("records")
    if (root / "wsi" / "slides.csv").exists():
        wsi = pd.read_csv(root / "wsi" / "slides.csv", dtype=str)
        for pid, g in wsi[wsi["patient_id"].isin(wanted)].groupby("patient_id", sort=False):
            recs[pid]["wsi"] = [str(root / "wsi" / p) for p in g["path"]]
    if (root / "genomics.csv").exists():
        gen = pd.read_csv(root / "genomics.csv", dtype={"patient_id": str})
        for row in gen[gen["patient_id"].isin(wanted)].to_dict("records"):
            pid = row.pop("patient_id")
            recs[pid]["genomics"] = {k: float(v) for k, v in row.items()}
    return [recs[pid] for pid in ids]
