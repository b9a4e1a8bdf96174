"""A seeded synthetic MEDS dataset in the real MEDS layout (for tests, examples and benchmarks).

Layout written under ``out``::

    data/train/0.parquet ... data/train/<k>.parquet, data/tuning/0.parquet, data/held_out/0.parquet
    metadata/codes.parquet            code, description, parent_codes (list[str])
    metadata/subject_splits.parquet   subject_id, split (train | tuning | held_out)
    metadata/dataset.json
    labels/binary.parquet             subject_id, prediction_time, boolean_value, integer_value,
                                      float_value, categorical_value (only boolean_value filled)
    labels/tte.parquet                subject_id, prediction_time, time_to_event (days), event (bool)

Each subject has static rows (``GENDER//F|M`` and ``HEIGHT`` with a value, null time), a
``MEDS_BIRTH`` row, an ``ADMISSION`` at ``t0``, vital/lab rows (``LAB//HR``, ``LAB//GLUCOSE``,
``LAB//SBP``) spread over ``[t0, t0 + 72 h]``, a ``DIAGNOSIS//ICD10//I10`` row without a value, a
``NOTE//ADMISSION`` text row at ``t0 + 1 h`` and a ``NOTE//DISCHARGE`` text row plus a
``LAB//FUTURE_MARKER`` value at ``t0 + 80 h``: after every prediction time (``t0 + 24 h`` for every
third subject, and ``t0 + 48 h`` for all), so a leak shows up. Generation is vectorised (a 10 M
event table in seconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl

LAB_CODES = ("LAB//HR", "LAB//GLUCOSE", "LAB//SBP")
_LAB_MEAN = np.array([80.0, 110.0, 120.0])
_LAB_SD = np.array([12.0, 25.0, 15.0])
_NOTES = ("admitted with chest pain", "sepsis suspected, lactate raised", "stable overnight, eating well")
_T0 = np.datetime64("2020-01-01T00:00:00", "us")
_HOUR_US = 3_600_000_000
FUTURE_CODE = "LAB//FUTURE_MARKER"


def write_meds_fixture(out: str | Path, n_subjects: int, seed: int, n_events_per_subject: int = 20,
                       n_train_shards: int = 2) -> SimpleNamespace:
    """Write the synthetic MEDS dataset (layout in the module docstring).

    Args:
        out: the MEDS root to create.
        n_subjects: subjects (ids ``1000..``).
        seed: the random seed.
        n_events_per_subject: timed lab rows per subject (besides the fixed rows listed above).
        n_train_shards: shards the training subjects are spread over.

    Returns:
        ``root``, ``binary_labels``, ``tte_labels`` paths and ``events`` (every row written, as one
        polars DataFrame, so tests can recompute expected values independently).
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    subjects = np.arange(1000, 1000 + n_subjects, dtype=np.int64)
    t0 = _T0 + (rng.integers(0, 365 * 24, n_subjects) * _HOUR_US).astype("timedelta64[us]")
    n_lab = int(n_events_per_subject)

    # timed lab rows: subject-major, hour offsets uniform on [0, 72] in whole seconds
    sub = np.repeat(np.arange(n_subjects), n_lab)
    kind = rng.integers(0, len(LAB_CODES), sub.size)
    offset_us = rng.integers(0, 72 * 3600, sub.size) * 1_000_000
    lab_value = (_LAB_MEAN[kind] + _LAB_SD[kind] * rng.standard_normal(sub.size)).round(1)
    frames = [_rows(subjects[sub], t0[sub] + offset_us.astype("timedelta64[us]"), np.asarray(LAB_CODES)[kind], lab_value)]

    idx = np.arange(n_subjects)
    hours = lambda h: t0 + np.timedelta64(int(h * _HOUR_US), "us")  # noqa: E731
    female = rng.random(n_subjects) < 0.5
    birth = t0 - (rng.integers(20 * 365, 90 * 365, n_subjects) * 24 * _HOUR_US).astype("timedelta64[us]")
    nat = np.full(n_subjects, np.datetime64("NaT"), dtype="datetime64[us]")
    frames += [
        _rows(subjects, nat, np.where(female, "GENDER//F", "GENDER//M"), None),
        _rows(subjects, nat, np.full(n_subjects, "HEIGHT"), np.where(female, 165.0, 178.0) + rng.normal(0, 7, n_subjects).round(0)),
        _rows(subjects, birth, np.full(n_subjects, "MEDS_BIRTH"), None),
        _rows(subjects, t0, np.full(n_subjects, "ADMISSION"), None),
        _rows(subjects, hours(2.5), np.full(n_subjects, "DIAGNOSIS//ICD10//I10"), None),
        _rows(subjects, hours(1.0), np.full(n_subjects, "NOTE//ADMISSION"), None, np.asarray(_NOTES)[idx % len(_NOTES)]),
        _rows(subjects, hours(80.0), np.full(n_subjects, "NOTE//DISCHARGE"), None, np.full(n_subjects, "discharged home")),
        _rows(subjects, hours(80.0), np.full(n_subjects, FUTURE_CODE), np.full(n_subjects, 999.0)),
    ]
    events = pl.concat(frames).sort("subject_id", "time", nulls_last=False, maintain_order=True)

    split = np.array(["train", "tuning", "held_out"])[np.searchsorted([0.7, 0.85], rng.random(n_subjects))]
    split_of = dict(zip(subjects.tolist(), split.tolist()))
    shard_key = pl.col("subject_id").replace_strict(split_of, return_dtype=pl.String)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    for name in ("train", "tuning", "held_out"):
        part = events.filter(shard_key == name)
        n_shards = n_train_shards if name == "train" else 1
        bounds = np.array_split(np.sort(part["subject_id"].unique().to_numpy()), n_shards)
        (out / "data" / name).mkdir(parents=True, exist_ok=True)
        for k, ids in enumerate(bounds):
            part.filter(pl.col("subject_id").is_in(ids.tolist())).write_parquet(out / "data" / name / f"{k}.parquet")
    pl.DataFrame({"subject_id": subjects, "split": split}).write_parquet(out / "metadata" / "subject_splits.parquet")
    codes = sorted(set(events["code"].unique().to_list()))
    pl.DataFrame({"code": codes, "description": [f"synthetic {c}" for c in codes],
                  "parent_codes": [[c.split("//")[0]] if "//" in c else [] for c in codes]},
                 schema={"code": pl.String, "description": pl.String, "parent_codes": pl.List(pl.String)}
                 ).write_parquet(out / "metadata" / "codes.parquet")
    (out / "metadata" / "dataset.json").write_text(json.dumps({"dataset_name": "clinfuse-synthetic-meds",
                                                                 "meds_version": "0.3.3"}))

    # labels: every subject at t0 + 48 h, every third also at t0 + 24 h
    two = idx % 3 == 0
    lab_sub = np.concatenate([idx, idx[two]])
    pred = np.concatenate([hours(48.0), hours(24.0)[two]])
    lab_dir = out / "labels"
    lab_dir.mkdir(exist_ok=True)
    n = lab_sub.size
    null = pl.Series([None] * n)
    pl.DataFrame({"subject_id": subjects[lab_sub], "prediction_time": pred,
                  "boolean_value": rng.random(n) < 0.3, "integer_value": null.cast(pl.Int64),
                  "float_value": null.cast(pl.Float64), "categorical_value": null.cast(pl.String)}
                 ).write_parquet(lab_dir / "binary.parquet")
    pl.DataFrame({"subject_id": subjects[lab_sub], "prediction_time": pred,
                  "time_to_event": rng.uniform(0.5, 365.0, n).round(2), "event": rng.random(n) < 0.4}
                 ).write_parquet(lab_dir / "tte.parquet")
    return SimpleNamespace(root=out, binary_labels=lab_dir / "binary.parquet", tte_labels=lab_dir / "tte.parquet",
                           events=events)


def _rows(subject, time, code, value, text=None) -> pl.DataFrame:
    """MEDS rows with the schema's dtypes: int64, timestamp[us], string, float32, string."""
    n = len(subject)
    return pl.DataFrame(
        {"subject_id": subject, "time": time, "code": code,
         "numeric_value": np.full(n, np.nan) if value is None else value,
         "text_value": pl.Series([None] * n, dtype=pl.String) if text is None else text},
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String,
                "numeric_value": pl.Float32, "text_value": pl.String},
        nan_to_null=True,
    )
