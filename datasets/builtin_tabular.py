"""Built-in tabular survival cohorts from scikit-survival (no download), and every built-in by name.

``write_tabular_survival_cohort(name, out)`` turns one of scikit-survival's bundled survival data
sets into a one-modality (``tabular``) cohort folder; ``SOURCES`` holds the per-data-set settings
(loader, time unit, categorical columns, dropped columns and why). ``builtin_cohort(name)``
writes (or reuses) any built-in cohort, breast cancer included, in a cache folder, so a config can
say ``data.root: builtin:whas500``.

Labels: ``time`` in days (``days_per_unit`` converts: cgvhd counts years),
``event`` 1 = event observed. ``binary`` is written only where it is fully determined: "event
within the horizon" needs every patient censored before the horizon to be absent, which holds only
for whas500 (first censoring at day 368, horizon 365 days); elsewhere early censoring makes it
unknown for some patients and no ``binary`` column is written. No ``multiclass`` label.

Splits: ``cv_splits`` of ``builtin.py`` (seeded K-fold stratified by event; fold ``fold`` is test,
15% of the rest val). Patient ids are ``<prefix><row>`` in scikit-survival's row order.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.datasets.builtin import _check_fold, _survival_fields, cv_splits, write_breast_cancer_cohort
from clinfuse.datasets.conversion import fingerprint, is_current, write_cohort_info

BUILTIN_COHORTS = ("breast_cancer", "whas500", "gbsg2", "veterans", "flchain", "cgvhd")
BUILTIN_PREFIX = "builtin:"
#: the files a cohort folder holds (``docs/formats.md``; any converter's or ``clinfuse synth``'s): an
#: existing ``out`` holding only these (and ``.clinfuse_cache/``) may be replaced by a built-in cohort
COHORT_FILES = (
    "cohort.json", "labels.parquet", "splits.csv", "oracle.parquet", "presence.parquet", "tabular.parquet",
    "timeseries.parquet", "notes.parquet", "genomics.csv", "gene_groups.csv", "sample_map.csv",
)  # fmt: skip
COHORT_SUBFOLDERS = {"ecg": ("*.hea", "*.dat", "records.csv"), "wsi": ("*.h5", "slides.csv")}


@dataclass(frozen=True)
class TabularSurvivalSource:
    """How one scikit-survival data set becomes a cohort.

    Attributes:
        loader: the ``sksurv.datasets`` function.
        data_file: its bundled ``.arff`` (fingerprinted for the cache).
        prefix: patient id prefix.
        days_per_unit: days per unit of the survival time field.
        numeric: covariates written as float.
        categorical: covariates written as strings (null = missing).
        dropped: loader columns left out (each must have a reason in ``SOURCES``' comments).
        binary_horizon_days: ``binary`` = event within this many days, or None (no ``binary``).
        description: what ``time``/``event`` mean.
        causes: competing risks: the names of the causes ``1..R`` of the integer ``status`` field
            (written as the ``cause`` label); empty for single-event data sets.
    """

    loader: str
    data_file: str
    prefix: str
    days_per_unit: float
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    binary_horizon_days: float | None = None
    description: str = ""
    causes: tuple[str, ...] = ()


SOURCES: dict[str, TabularSurvivalSource] = {
    # Worcester Heart Attack Study: 500 patients, follow-up from hospital admission (lenfol, days).
    # `los` (length of hospital stay) is dropped: for the 40 in-hospital deaths los == lenfol, so it
    # encodes the outcome and is not known at admission.
    "whas500": TabularSurvivalSource(
        loader="load_whas500", data_file="whas500.arff", prefix="whas", days_per_unit=1.0,
        numeric=("age", "bmi", "diasbp", "hr", "sysbp"),
        categorical=("afb", "av3", "chf", "cvd", "gender", "miord", "mitype", "sho"),
        dropped=("los",), binary_horizon_days=365.0,
        description="days from admission to death or last follow-up (lenfol) / death observed (fstat)",
    ),
    # German Breast Cancer Study Group 2: 686 patients, recurrence-free survival time in days.
    "gbsg2": TabularSurvivalSource(
        loader="load_gbsg2", data_file="GBSG2.arff", prefix="gbsg", days_per_unit=1.0,
        numeric=("age", "estrec", "pnodes", "progrec", "tsize"),
        categorical=("horTh", "menostat", "tgrade"),
        description="recurrence-free survival time in days (time) / recurrence or death observed (cens)",
    ),
    # Veterans' Administration lung cancer trial: 137 patients, Survival_in_days.
    "veterans": TabularSurvivalSource(
        loader="load_veterans_lung_cancer", data_file="veteran.arff", prefix="vet", days_per_unit=1.0,
        numeric=("Age_in_years", "Karnofsky_score", "Months_from_Diagnosis"),
        categorical=("Celltype", "Prior_therapy", "Treatment"),
        description="days to death or censoring (Survival_in_days) / death observed (Status)",
    ),
    # Serum free light chain study: 7874 people, futime in days from the blood sample.
    # `chapter` (ICD chapter of the cause of death) is dropped: it is set only for those who died,
    # so it leaks the outcome. 3 deaths on the sampling day have futime 0; their time is 0.5 days
    # (the middle of that day) because cohort times must be > 0.
    "flchain": TabularSurvivalSource(
        loader="load_flchain", data_file="flchain.arff", prefix="flc", days_per_unit=1.0,
        numeric=("age", "creatinine", "kappa", "lambda"),
        categorical=("flc.grp", "mgus", "sample.yr", "sex"),
        dropped=("chapter",),
        description="days from the blood sample to death or last contact (futime) / death observed (death)",
    ),
    # Chronic graft-versus-host disease after allogeneic bone-marrow transplant (Pintilie 2006):
    # 100 patients, three competing events. ftime is in years (0.057-2.776).
    "cgvhd": TabularSurvivalSource(
        loader="load_cgvhd", data_file="cgvhd.arff", prefix="cgvhd", days_per_unit=365.25,
        numeric=("age",), categorical=("dx", "tx", "extent"),
        description="days from transplant to the first of cGvHD, relapse or death, or to censoring (ftime) / any of them observed",
        causes=("cGvHD", "relapse", "death"),
    ),
}
ZERO_TIME_DAYS = 0.5


def load_tabular_survival(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One data set as (covariates, labels) frames indexed by ``patient_id``.

    Raises:
        ValueError: an unknown name, or loader columns that differ from ``SOURCES`` (another
            scikit-survival version), naming them.
    """
    import sksurv.datasets  # lazy: optional heavy dependency

    src = _source(name)
    x, y = getattr(sksurv.datasets, src.loader)()
    expected = set(src.numeric) | set(src.categorical) | set(src.dropped)
    if set(x.columns) != expected:
        raise ValueError(
            f"sksurv.datasets.{src.loader}: columns {sorted(x.columns)} differ from the expected {sorted(expected)}"
        )
    ids = pd.Index([f"{src.prefix}{i:04d}" for i in range(len(x))], name="patient_id")
    x = x.set_axis(ids)
    table = pd.DataFrame(index=ids)
    for col in x.columns:
        if col in src.numeric:
            table[col] = x[col].astype(np.float64)
        elif col in src.categorical:
            table[col] = x[col].astype("string")
    if src.causes:  # competing risks: an integer status, 0 = censored, r = cause r
        status = np.asarray(y["status"], dtype=np.int64)
        if status.min() < 0 or status.max() > len(src.causes):
            raise ValueError(f"sksurv.datasets.{src.loader}: status outside [0, {len(src.causes)}]")
        time, event = np.asarray(y["ftime"], dtype=np.float64) * src.days_per_unit, status > 0
    else:
        event_field, time_field = _survival_fields(y)
        time = np.asarray(y[time_field], dtype=np.float64) * src.days_per_unit
        event = np.asarray(y[event_field], dtype=bool)
    if (time < 0).any() or ((time == 0) & ~event).any():
        raise ValueError(f"sksurv.datasets.{src.loader}: negative times or censoring at time 0")
    time = np.where(time == 0, ZERO_TIME_DAYS, time)  # death on day 0 (see SOURCES)
    labels = pd.DataFrame({"time": time, "event": event.astype(np.int64)}, index=ids)
    if src.causes:
        labels["cause"] = status
    if src.binary_horizon_days is not None:
        undetermined = ~event & (time < src.binary_horizon_days)
        if undetermined.any():
            raise ValueError(f"{name}: {int(undetermined.sum())} patient(s) censored before the binary horizon")
        labels.insert(0, "binary", (event & (time <= src.binary_horizon_days)).astype(np.int64))
    return table, labels


def write_tabular_survival_cohort(
    name: str, out_dir: str | Path, fold: int = 0, n_folds: int = 5, seed: int = 0
) -> Path:
    """Write one scikit-survival data set as a clinfuse cohort folder (``tabular`` only).

    Args:
        name: a key of ``SOURCES`` (``whas500``, ``gbsg2``, ``veterans``, ``flchain``).
        out_dir: the cohort folder (created; existing cohort files are overwritten).
        fold: which fold of the stratified K-fold is the ``test`` split.
        n_folds: number of folds.
        seed: seed of the fold assignment and of the val draw.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: unknown ``name``, bad ``fold``/``n_folds``. TypeError: non-integer arguments.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    src = _source(name)
    table, labels = load_tabular_survival(name)
    _check_fold(fold, n_folds, len(labels))
    split = cv_splits(labels["event"].to_numpy(), fold, n_folds, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cohort.json").unlink(missing_ok=True)
    labels.reset_index().to_parquet(out / "labels.parquet", index=False)
    pd.DataFrame({"patient_id": labels.index, "split": split}).to_csv(out / "splits.csv", index=False)
    table.reset_index().to_parquet(out / "tabular.parquet", index=False)
    label_doc = {"time/event": src.description}
    if src.causes:
        label_doc["cause"] = "0 censored, " + ", ".join(f"{r} {c}" for r, c in enumerate(src.causes, 1))
    if src.binary_horizon_days is not None:
        label_doc["binary"] = f"event within {src.binary_horizon_days:g} days (no patient censored before)"
    write_cohort_info(
        out, "sksurv", _fingerprint(name, fold, n_folds, seed), name=name,
        dataset=f"sksurv.datasets.{src.loader}", n_patients=int(len(labels)), seed=int(seed), fold=int(fold),
        n_folds=int(n_folds), modalities=["tabular"], missingness={}, time_unit="days", labels=label_doc,
        dropped_columns=list(src.dropped),
    )
    return out


def builtin_cohort(name: str, out: str | Path | None = None, fold: int = 0, n_folds: int = 5, seed: int = 0) -> Path:
    """The folder of a built-in cohort, written on first use and reused while current.

    Args:
        name: one of ``BUILTIN_COHORTS``.
        out: the folder; None = ``$CLINFUSE_CACHE/builtin/<name>-f<fold>of<n_folds>-s<seed>``
            (``$CLINFUSE_CACHE`` defaults to ``~/.cache/clinfuse``). It must be absent, empty, or
            an earlier clinfuse cohort folder holding nothing else (which is replaced).
        fold: the test fold.
        n_folds: number of folds.
        seed: seed of the split.

    Returns:
        the cohort folder.

    Raises:
        ValueError: an unknown name (listing the built-in cohorts), bad fold arguments, or an ``out``
            that is not empty and not a cohort folder, or that holds other files besides a cohort
            (naming the folder; nothing is deleted).
    """
    if name not in BUILTIN_COHORTS:
        raise ValueError(f"unknown built-in cohort {name!r}; built-in cohorts: {list(BUILTIN_COHORTS)}")
    if out is None:
        cache = Path(os.environ.get("CLINFUSE_CACHE") or Path.home() / ".cache" / "clinfuse")
        out = cache / "builtin" / f"{name}-f{fold}of{n_folds}-s{seed}"
    out = Path(out)
    fp = _fingerprint(name, fold, n_folds, seed)
    if is_current(out, "sksurv", fp):
        return out
    _check_replaceable(out)  # before any work: a folder that is not a cohort is refused, never deleted
    # write to a private folder, then rename: concurrent processes (DDP ranks) never see a half-written cohort
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}")
    try:
        if name == "breast_cancer":
            write_breast_cancer_cohort(tmp, fold=fold, n_folds=n_folds, seed=seed)
            info = json.loads((tmp / "cohort.json").read_text())
            info["dataset"] = info.pop("source")
            info.pop("format_version", None)
            write_cohort_info(tmp, "sksurv", fp, **info)
        else:
            write_tabular_survival_cohort(name, tmp, fold=fold, n_folds=n_folds, seed=seed)
        if out.exists() and not is_current(out, "sksurv", fp):
            _check_replaceable(out)  # checked again: the folder may have changed while the cohort was written
            shutil.rmtree(out)
        try:
            tmp.rename(out)
        except OSError:
            if not is_current(out, "sksurv", fp):  # lost the race to a process writing the same cohort
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_root(root: str | Path) -> str:
    """``"builtin:<name>"`` -> that built-in cohort's cache folder; any other root unchanged."""
    text = str(root)
    if text.startswith(BUILTIN_PREFIX):
        return str(builtin_cohort(text[len(BUILTIN_PREFIX):]))
    return text


def _check_replaceable(out: Path) -> None:
    """Refuse an ``out`` that replacing would lose anything but an earlier cohort's own files.

    ``out`` may be absent, an empty folder, or a clinfuse cohort folder (a valid ``cohort.json``)
    holding only what cohorts hold (``COHORT_FILES``, ``.clinfuse_cache/``, and ``ecg/``/``wsi/`` with
    only ``COHORT_SUBFOLDERS`` files): it is then replaced as a whole. Anything else is left untouched.

    Raises:
        ValueError: ``out`` is a file, a non-empty folder that is not a clinfuse cohort, or a cohort
            folder that also holds other files (naming the folder and those files).
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a directory")
    entries = sorted(out.iterdir())
    if not entries:
        return
    if not _has_cohort_json(out):
        raise ValueError(
            f"out {str(out)!r} is not empty and is not a clinfuse cohort (no valid cohort.json); "
            "choose an empty or new folder"
        )
    foreign = [str(p.relative_to(out)) for p in entries if not _cohort_owned(p)]
    if foreign:
        raise ValueError(
            f"out {str(out)!r} holds a clinfuse cohort and other files {foreign[:10]} that replacing it would "
            "delete; choose an empty or new folder, or move those files away"
        )


def _has_cohort_json(out: Path) -> bool:
    try:
        info = json.loads((out / "cohort.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "format_version" in info


def _cohort_owned(path: Path) -> bool:
    """Whether ``path`` (an entry of a cohort folder) is one of the files a cohort folder holds."""
    if path.name == ".clinfuse_cache" and path.is_dir():  # derived files, rebuilt on demand (docs/formats.md)
        return True
    if path.name in COHORT_SUBFOLDERS and path.is_dir() and not path.is_symlink():
        patterns = COHORT_SUBFOLDERS[path.name]
        return all(f.is_dir() or any(f.match(p) for p in patterns) for f in path.rglob("*"))
    return path.name in COHORT_FILES and path.is_file()


def _source(name: str) -> TabularSurvivalSource:
    if name not in SOURCES:
        raise ValueError(f"unknown sksurv tabular cohort {name!r}; known: {list(SOURCES)}")
    return SOURCES[name]


def _fingerprint(name: str, fold: int, n_folds: int, seed: int) -> str:
    import sksurv

    data_file = "breast_cancer_GSE7390-metastasis.arff" if name == "breast_cancer" else _source(name).data_file
    path = Path(str(resources.files("sksurv.datasets") / "data" / data_file))
    options = {"name": name, "fold": fold, "n_folds": n_folds, "seed": seed, "sksurv": sksurv.__version__}
    return fingerprint([path], options)
