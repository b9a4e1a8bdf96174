"""A tiny cohort folder written by hand in the layout of docs/formats.md section 1.

12 patients ``p00``..``p11``: train ``p00``-``p07``, val ``p08``-``p09``, test ``p10``-``p11``.
``p06`` has no modality at all; every modality misses a few other patients.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import wfdb

IDS = [f"p{i:02d}" for i in range(12)]
TRAIN, VAL, TEST = IDS[:8], IDS[8:10], IDS[10:]
NO_MODALITY = "p06"
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
FEATURE_DIM = 4


def _frames() -> dict[str, pd.DataFrame]:
    labels = pd.DataFrame(
        {
            "patient_id": IDS,
            "binary": [i % 2 for i in range(12)],
            "multiclass": [i % 3 for i in range(12)],
            "time": [1.0 + i for i in range(12)],
            "event": [(i + 1) % 2 for i in range(12)],
        }
    )
    splits = pd.DataFrame({"patient_id": IDS, "split": ["train"] * 8 + ["val"] * 2 + ["test"] * 2})
    oracle = pd.DataFrame(
        {"patient_id": IDS, "risk_full": np.linspace(-1, 1, 12), "risk_observed": np.linspace(-0.5, 0.5, 12),
         "prob_full": np.linspace(0.1, 0.9, 12), "prob_observed": np.linspace(0.2, 0.8, 12)}
    )
    tab_ids = ["p00", "p01", "p02", "p03", "p04", "p05", "p07", "p08", "p10", "p11"]  # no p06, p09
    tabular = pd.DataFrame(
        {
            "patient_id": tab_ids,
            "age": [60.0, np.nan, 70.0, 50.0, 80.0, 40.0, 65.0, 30.0, 90.0, 55.0],
            "lactate": [1.0, 2.0, 3.0, 1.5, 2.5, 0.5, 4.0, 9.0, 1.0, 2.0],
            "sex": pd.array(["F", "M", None, "F", "M", "F", "M", "F", "M", "F"], dtype="string"),
            "ward": pd.array(["icu", "ward", "ed", "icu", "ward", "icu", "ed", "icu", "burns", "ward"], dtype="string"),
        }
    )
    rows = []
    rng = np.random.default_rng(0)
    ts_ids = [p for p in IDS if p not in ("p06", "p10")]
    for k, pid in enumerate(ts_ids):
        n = 3 + k  # 3..12 events
        for t in rng.permutation(n):  # unsorted in the file
            rows.append((pid, float(t) * 4.0 + 0.5, "hr" if t % 2 == 0 else "sbp", 80.0 + k + t))
    timeseries = pd.DataFrame(rows, columns=["patient_id", "time", "variable", "value"])
    note_rows = [
        ("p00", 2.0, "Patient stable. Lactate normal."), ("p00", 1.0, "Admitted with sepsis, sepsis likely."),
        ("p00", 30.0, "Improving; STABLE overnight."), ("p01", 5.0, "Chest pain, troponin raised."),
        ("p02", 7.0, "sepsis sepsis shock"), ("p04", 3.0, "Stable."), ("p05", 4.0, "Fever 39 degrees."),
        ("p08", 1.0, "zebra unseenword stable"), ("p10", 2.0, "Stable again."),
    ]
    notes = pd.DataFrame(note_rows, columns=["patient_id", "time", "text"])
    gen_ids = ["p00", "p01", "p02", "p03", "p04", "p05", "p07", "p08", "p11"]  # no p06, p09, p10
    genomics = pd.DataFrame(
        {
            "patient_id": gen_ids,
            "TP53_rnaseq": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0, 0.0],
            "EGFR_rnaseq": [0.5, 0.5, 1.5, 1.5, 2.5, 2.5, 3.5, 0.0, 9.0],
            "KRAS_rnaseq": [2.0] * 9,
            "TP53_mut": [0, 1, 0, 1, 0, 0, 1, 1, 0],
            "KRAS_mut": [1, 0, 0, 0, 0, 0, 0, 0, 1],
        }
    )
    gene_groups = pd.DataFrame({"gene": ["TP53", "EGFR", "KRAS"], "group": ["apoptosis", "growth", "growth"]})
    return dict(labels=labels, splits=splits, oracle=oracle, tabular=tabular, timeseries=timeseries,
                notes=notes, genomics=genomics, gene_groups=gene_groups)


def _ecg_signal(fs: int, seconds: float, n_leads: int) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    return np.stack([np.sin(2 * np.pi * 1.0 * t) * (k + 1) * 0.1 for k in range(n_leads)], axis=1)


def write_ecg(ecg_dir: Path, name: str, fs: int, seconds: float, leads: list[str]) -> np.ndarray:
    """Write one WFDB record whose lead ``k`` of ``LEADS`` is a 1 Hz sine of amplitude 0.1 * (k+1)."""
    full = _ecg_signal(fs, seconds, len(LEADS))
    signal = np.stack([full[:, LEADS.index(lead)] for lead in leads], axis=1)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=leads, p_signal=signal,
                fmt=["16"] * len(leads), write_dir=str(ecg_dir))
    return signal


def write_tiny_cohort(root: Path) -> SimpleNamespace:
    """Write the tiny cohort folder; return the frames it wrote and the split ids."""
    frames = _frames()
    root.mkdir(parents=True, exist_ok=True)
    info = {"name": "tiny", "n_patients": 12, "seed": 0,
            "modalities": ["tabular", "timeseries", "ecg", "notes", "wsi", "genomics"], "missingness": {},
            "ecg": {"fs": 500, "seconds": 10, "leads": LEADS}, "wsi": {"feature_dim": FEATURE_DIM},
            "n_classes": 3, "format_version": 1}
    (root / "cohort.json").write_text(json.dumps(info))
    for name in ("labels", "oracle", "tabular", "timeseries", "notes"):
        frames[name].to_parquet(root / f"{name}.parquet", index=False)
    frames["splits"].to_csv(root / "splits.csv", index=False)
    frames["genomics"].to_csv(root / "genomics.csv", index=False)
    frames["gene_groups"].to_csv(root / "gene_groups.csv", index=False)

    ecg_dir = root / "ecg"
    ecg_dir.mkdir()
    no_v6_shuffled = ["V1", "II", "I", "III", "aVR", "aVL", "aVF", "V2", "V3", "V4", "V5"]
    write_ecg(ecg_dir, "r_p00", 500, 10.0, LEADS)
    write_ecg(ecg_dir, "r_p03", 100, 12.0, no_v6_shuffled)
    write_ecg(ecg_dir, "r_p08", 250, 6.0, LEADS)
    pd.DataFrame({"patient_id": ["p00", "p03", "p08"], "record": ["r_p00", "r_p03", "r_p08"],
                  "time": [1.0, 2.0, 3.0]}).to_csv(ecg_dir / "records.csv", index=False)

    wsi_dir = root / "wsi"
    wsi_dir.mkdir()
    rng = np.random.default_rng(1)
    bags = {"s0a": ("p00", 5), "s0b": ("p00", 7), "s2": ("p02", 3), "s11": ("p11", 40)}
    for slide, (_, n) in bags.items():
        with h5py.File(wsi_dir / f"{slide}.h5", "w") as fh:
            fh["features"] = rng.normal(size=(n, FEATURE_DIM)).astype(np.float32)
            fh["coords"] = np.arange(2 * n, dtype=np.int32).reshape(n, 2)
    pd.DataFrame({"patient_id": [p for p, _ in bags.values()], "slide_id": list(bags),
                  "path": [f"{s}.h5" for s in bags]}).to_csv(wsi_dir / "slides.csv", index=False)
    return SimpleNamespace(root=root, train=TRAIN, val=VAL, test=TEST, no_modality=NO_MODALITY, **frames)


@pytest.fixture
def tiny(tmp_path: Path) -> SimpleNamespace:
    """A fresh tiny cohort folder (tests may edit its files)."""
    return write_tiny_cohort(tmp_path / "cohort")


@pytest.fixture
def ecg_data_dir() -> Path:
    """The real PhysioNet records of ``shared/data/ecg`` beside the checkout (skip if absent)."""
    path = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ecg"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


def check_batch_format(batch: dict, spec: dict, n_classes: int) -> None:
    """Assert that ``batch`` is exactly the batch of docs/formats.md section 2 for ``spec``.

    Written from the document, independently of the readers: keys, shapes, dtypes, index ranges,
    and all-zero / all-False padding for absent patients.
    """
    import torch

    assert set(batch) == {"patient_id", "inputs", "labels"}
    ids = batch["patient_id"]
    assert isinstance(ids, list) and all(isinstance(p, str) for p in ids)
    b = len(ids)
    want = {"binary": torch.float32, "multiclass": torch.int64, "time": torch.float32, "event": torch.float32}
    assert {k: (v.dtype, tuple(v.shape)) for k, v in batch["labels"].items()} == {k: (d, (b,)) for k, d in want.items()}
    assert ((batch["labels"]["multiclass"] >= 0) & (batch["labels"]["multiclass"] < n_classes)).all()
    assert set(batch["inputs"]) == set(spec)
    f, i, m = torch.float32, torch.int64, torch.bool
    for name, x in batch["inputs"].items():
        s = spec[name]
        if name == "tabular":
            nf, nc = len(s["numeric_features"]), len(s["categorical_features"])
            shapes = {"numeric": ((b, nf), f), "numeric_observed": ((b, nf), m), "categorical": ((b, nc), i)}
            assert (x["categorical"] < torch.tensor(s["categorical_cardinalities"])).all()
            assert not x["numeric"][~x["numeric_observed"]].any()
        elif name == "timeseries":
            t = x["times"].shape[1]
            shapes = {"times": ((b, t), f), "variables": ((b, t), i), "values": ((b, t), f), "mask": ((b, t), m)}
            assert (x["variables"] < len(s["variables"])).all()
            assert not x["times"][~x["mask"]].any() and not x["values"][~x["mask"]].any()
            assert torch.equal(x["present"], x["mask"].any(1))
        elif name == "ecg":
            n_leads = len(s["leads"])
            shapes = {"signal": ((b, n_leads, s["n_samples"]), f), "lead_mask": ((b, n_leads), m)}
            assert not x["signal"][~x["lead_mask"]].any()
            assert torch.equal(x["present"], x["lead_mask"].any(1))
        elif name == "notes":
            k, w = x["token_ids"].shape[1:]
            shapes = {"token_ids": ((b, k, w), i), "token_mask": ((b, k, w), m), "note_times": ((b, k), f),
                      "note_mask": ((b, k), m)}
            assert w <= s["max_words"] and (x["token_ids"] < s["vocab_size"]).all()
            assert torch.equal(x["token_mask"], x["token_ids"] != 0)
            assert torch.equal(x["note_mask"], x["token_mask"].any(2)) and not x["note_times"][~x["note_mask"]].any()
            assert torch.equal(x["present"], x["note_mask"].any(1))
        elif name == "wsi":
            p = x["features"].shape[1]
            shapes = {"features": ((b, p, s["feature_dim"]), f), "mask": ((b, p), m)}
            assert not x["features"][~x["mask"]].any() and torch.equal(x["present"], x["mask"].any(1))
        else:
            shapes = {"expression": ((b, len(s["genes"])), f), "mutations": ((b, len(s["mutations"])), f)}
        shapes["present"] = ((b,), m)
        assert {k: (tuple(v.shape), v.dtype) for k, v in x.items()} == shapes, name
        absent = ~x["present"]
        for key, value in x.items():
            if key != "present":
                assert not value[absent].any(), f"{name}.{key}: padding of absent patients is not zero"
                assert torch.isfinite(value.float()).all(), f"{name}.{key}: not finite"


@pytest.fixture
def assert_batch_format():
    """The checker :func:`check_batch_format`, as a fixture for the test modules."""
    return check_batch_format
