"""Built-in real cohorts written as cohort folders (``docs/formats.md`` section 1); no download.

``write_breast_cancer_cohort`` turns scikit-survival's ``load_breast_cancer()`` (198 node-negative
breast cancer patients, GEO GSE7390 / TRANSBIG) into a two-modality cohort:

- ``tabular``: the clinical variables ``age``, ``size`` (float) and ``er``, ``grade`` (string;
  sksurv's ``"unkown"`` grade of 2 patients is written as missing, null).
- ``genomics``: the 76 Affymetrix expression probes as ``<probe>_rnaseq`` columns (values as in
  sksurv, log-scale intensities), all in one gene group ``"probes"``.

Labels: ``time``/``event`` are sksurv's ``t.tdm``/``e.tdm`` (days to distant metastasis, 1 =
metastasis observed). ``binary`` = 1 when distant metastasis was observed within 5 years
(1826.25 days); a patient censored before 5 years is labelled 0 (status unknown, the usual
convention; about a handful of patients). ``multiclass`` = tumour grade index: 0 well
differentiated, 1 intermediate, 2 poorly differentiated, 3 unknown (``n_classes`` 4).

Splits: a seeded ``StratifiedKFold`` on ``event``; fold ``fold`` is ``test``; of the remaining
patients 15% (stratified by ``event``, same seed) are ``val``, the rest ``train``. Patient ids are
``bc000``..``bc197`` in sksurv's row order. No ``oracle.parquet`` is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

NAME = "breast_cancer"
FIVE_YEARS_DAYS = 5 * 365.25
GRADES = ("well differentiated", "intermediate", "poorly differentiated")
CLINICAL_NUMERIC = ("age", "size")
CLINICAL_CATEGORICAL = ("er", "grade")
_UNKNOWN_GRADE = "unkown"  # sksurv's spelling


def load_breast_cancer_frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """sksurv's breast cancer data as (clinical, expression, labels) frames indexed by ``patient_id``.

    Returns:
        clinical: ``age, er, grade, size`` (unknown grade as missing); expression: one float column
        per probe (sksurv names, no suffix); labels: ``binary, multiclass, time, event``.
    """
    from sksurv.datasets import load_breast_cancer  # lazy: optional heavy dependency

    x, y = load_breast_cancer()
    ids = pd.Index([f"bc{i:03d}" for i in range(len(x))], name="patient_id")
    x = x.set_axis(ids)
    clinical = pd.DataFrame(index=ids)
    for col in ("age", "er", "grade", "size"):
        if col in CLINICAL_NUMERIC:
            clinical[col] = x[col].astype(np.float64)
        else:
            values = x[col].astype("string")
            clinical[col] = values.mask(values == _UNKNOWN_GRADE)
    probes = [c for c in x.columns if c not in CLINICAL_NUMERIC + CLINICAL_CATEGORICAL]
    expression = x[probes].astype(np.float64)
    event_field, time_field = _survival_fields(y)
    time = np.asarray(y[time_field], dtype=np.float64)
    event = np.asarray(y[event_field], dtype=bool)
    if (time <= 0).any():
        raise ValueError(f"sksurv breast cancer data: non-positive times for {ids[time <= 0][:10].tolist()}")
    grade = clinical["grade"]
    multiclass = grade.map({g: i for i, g in enumerate(GRADES)}).fillna(len(GRADES)).astype(np.int64)
    labels = pd.DataFrame(
        {
            "binary": (event & (time <= FIVE_YEARS_DAYS)).astype(np.int64),
            "multiclass": multiclass.to_numpy(),
            "time": time,
            "event": event.astype(np.int64),
        },
        index=ids,
    )
    return clinical, expression, labels


def _survival_fields(y: np.ndarray) -> tuple[str, str]:
    """The (event, time) field names of sksurv's structured array (``e.tdm``, ``t.tdm``)."""
    names = y.dtype.names or ()
    event = [n for n in names if y.dtype[n] == np.bool_]
    time = [n for n in names if y.dtype[n] != np.bool_]
    if len(event) != 1 or len(time) != 1:
        raise ValueError(f"sksurv breast cancer data: unexpected survival fields {names}")
    return event[0], time[0]


def cv_splits(event: np.ndarray, fold: int, n_folds: int = 5, seed: int = 0, val_fraction: float = 0.15) -> np.ndarray:
    """Split labels (``train``/``val``/``test``) for one fold of a stratified-by-event K-fold.

    Args:
        event: (n,) 0/1 event indicator, one entry per patient.
        fold: the test fold, 0 <= fold < n_folds.
        n_folds: number of folds (>= 2).
        seed: seed of the fold shuffle and the val draw.
        val_fraction: share of the non-test patients put in ``val`` (0 <= f < 1).

    Raises:
        ValueError: bad ``fold``/``n_folds``/``val_fraction``.
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    _check_fold(fold, n_folds, len(event))
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    event = np.asarray(event).astype(int)
    folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(len(event)), event))
    rest, test = folds[fold]
    split = np.full(len(event), "train", dtype=object)
    split[test] = "test"
    if val_fraction > 0:
        _, val = train_test_split(rest, test_size=val_fraction, random_state=seed, stratify=event[rest])
        split[val] = "val"
    return split


def _check_fold(fold: int, n_folds: int, n: int) -> None:
    for name, value in (("fold", fold), ("n_folds", n_folds)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be in [2, {n}] (patients); got {n_folds}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in [0, {n_folds}) for n_folds={n_folds}; got {fold}")


def write_breast_cancer_cohort(out_dir: str | Path, fold: int = 0, n_folds: int = 5, seed: int = 0) -> Path:
    """Write sksurv's breast cancer data as a clinfuse cohort folder (tabular + genomics).

    Args:
        out_dir: the cohort folder to write (created; existing cohort files are overwritten).
        fold: which fold of the stratified K-fold is the ``test`` split.
        n_folds: number of folds.
        seed: seed of the fold assignment and of the val draw.

    Returns:
        ``out_dir`` as a Path, loadable with ``ClinicalDataModule(root=out_dir)``.

    Raises:
        ValueError: ``fold`` outside ``[0, n_folds)`` or ``n_folds`` outside ``[2, 198]``.
        TypeError: non-integer ``fold``/``n_folds``/``seed``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    clinical, expression, labels = load_breast_cancer_frames()
    _check_fold(fold, n_folds, len(labels))
    split = cv_splits(labels["event"].to_numpy(), fold, n_folds, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = labels.index
    labels.reset_index().to_parquet(out / "labels.parquet", index=False)
    pd.DataFrame({"patient_id": ids, "split": split}).to_csv(out / "splits.csv", index=False)
    clinical.reset_index().to_parquet(out / "tabular.parquet", index=False)
    genomics = expression.add_suffix("_rnaseq").reset_index()
    genomics.to_csv(out / "genomics.csv", index=False, float_format="%.17g")
    pd.DataFrame({"gene": list(expression.columns), "group": "probes"}).to_csv(out / "gene_groups.csv", index=False)
    info = {
        "name": NAME,
        "source": "sksurv.datasets.load_breast_cancer (GEO GSE7390)",
        "n_patients": int(len(ids)),
        "seed": int(seed),
        "fold": int(fold),
        "n_folds": int(n_folds),
        "modalities": ["tabular", "genomics"],
        "missingness": {},
        "n_classes": len(GRADES) + 1,
        "time_unit": "days",
        "labels": {
            "time/event": "days to distant metastasis (t.tdm) / metastasis observed (e.tdm)",
            "binary": "distant metastasis observed within 5 years (censored before 5 years -> 0)",
            "multiclass": "grade: 0 well, 1 intermediate, 2 poorly differentiated, 3 unknown",
        },
        "format_version": 1,
    }
    (out / "cohort.json").write_text(json.dumps(info, indent=2) + "\n")
    return out
