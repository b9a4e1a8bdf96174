"""Scoring a whole cohort folder with a ``Prognosis`` predictor (batch scoring, external validation).

:meth:`Prognosis.predict` parses one raw record per patient in Python, which caps its throughput;
a cohort folder (``docs/formats.md``, e.g. written by ``clinfuse convert``) is read instead by the
modality readers restored from the predictor's saved preprocessing (no refit, vectorised, with
their on-disk caches), so the same model scores many patients at a time. Labels and splits are
optional: a folder of new, unlabelled patients can be scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinfuse.datasets.cohort import READERS, SPLITS, read_labels
from clinfuse.datasets.reader import ModalityReader, check_unique_ids, read_cohort_info, read_table
from clinfuse.experiments.input_checks import out_of_range

if TYPE_CHECKING:  # pragma: no cover
    from clinfuse.experiments.prognosis import Prognosis


def predict_cohort(
    prognosis: "Prognosis",
    root: str | Path,
    patient_ids: Sequence[str] | None = None,
    split: str | None = None,
    horizons: Sequence[float] = (30, 90, 365),
    contributions: bool = False,
    batch_size: int = 256,
    show_progress: bool = True,
    feature_contributions: bool = False,
    raw_outputs: list | None = None,
) -> pd.DataFrame:
    """One row of predictions per patient of the cohort folder ``root``.

    Each modality the model uses and ``root`` holds is read by its reader restored from the
    predictor's preprocessing (``ModalityReader.from_state``: the training statistics and
    vocabularies, never refitted on these patients); a modality the folder lacks is absent for
    everyone. Predictions equal :meth:`Prognosis.predict` on the same patients' raw records.

    Args:
        prognosis: the predictor.
        root: the cohort folder.
        patient_ids: the patients to score; default: ``split``'s patients if given, else every
            patient of ``labels.parquet`` if the folder has one, else every patient with any
            modality (sorted).
        split: ``train``/``val``/``test`` of ``splits.csv`` (e.g. the held-out patients).
        horizons: times (the cohort's time unit) for the ``survival_at_<h>`` columns.
        contributions: add ``contribution_<modality>`` columns (leave-one-modality-out).
        batch_size: patients per forward pass.
        show_progress: a progress bar over the batches.
        feature_contributions: add ``feature_<modality>_<name>`` columns: each tabular value's and
            time-series variable's leave-one-out contribution (NaN where the patient lacks it);
            per-note contributions, named by note time, come from :meth:`Prognosis.predict` only.
        raw_outputs: a list that receives the task head's raw outputs, one tensor per batch in
            row order (for :meth:`Prognosis.survival_matrix`).

    Returns:
        ``patient_id``, ``modalities_used`` (comma-separated), ``risk`` (and ``probability``
        for binary models), ``median_survival`` and ``survival_at_<h>`` for survival models, the
        contributions if asked, and the folder's label columns (``time``, ``event``, ...) when
        ``labels.parquet`` has them, for external validation. Survival curves are not in the
        frame; :meth:`Prognosis.predict` returns them per patient.

    Raises:
        ValueError: no modality of the model in ``root``, no patient to score, unknown or
            unlabelled patients, an unknown split, bad horizons, or invalid files, labels included
            (naming file, column and patients).
    Warns:
        UserWarning: a modality of the model with no file in ``root`` (everyone is scored without
        it), or horizons past the model's last training event time.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"cohort folder {root} " + ("is a file, not a folder" if root.exists() else "does not exist"))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    horizons = prognosis.check_horizons(horizons)
    labels = None
    if (root / "labels.parquet").exists():  # the cohort loader's checks: unique ids, finite times > 0, 0/1 events
        labels = read_labels(root / "labels.parquet", read_cohort_info(root / "cohort.json").get("n_classes"))
    known = None if labels is None else labels["patient_id"].tolist()
    readers: dict[str, ModalityReader] = {
        m: READERS[m].from_state(root, prognosis.states[m], known)
        for m in prognosis.modalities
        if READERS[m].available(root)
    }
    if not readers:
        raise ValueError(
            f"{root}: holds none of the model's modalities {prognosis.modalities} "
            f"(files: {[READERS[m].filename for m in prognosis.modalities]})"
        )
    lacking = [m for m in prognosis.modalities if m not in readers]
    if lacking:
        warnings.warn(
            f"{root}: no file for the model's modalit{'y' if len(lacking) == 1 else 'ies'} {lacking} "
            f"(expected {[READERS[m].filename for m in lacking]}): every patient is scored without "
            f"{'it' if len(lacking) == 1 else 'them'}",
            stacklevel=2,
        )
    ids = _patients(root, patient_ids, split, known, readers)
    if not ids:
        raise ValueError(f"{root}: no patient to score")
    rows: list[dict[str, Any]] = []
    starts = range(0, len(ids), batch_size)
    for start in tqdm(starts, desc="scoring", unit="batch", disable=not show_progress or len(starts) < 2):
        chunk = ids[start : start + batch_size]
        batch, used, warns = {}, [[] for _ in chunk], [[] for _ in chunk]
        for m in prognosis.modalities:
            if m in readers:
                items = [readers[m].get(p) for p in chunk]
                batch[m] = readers[m].collate(items)
                for u, w, it in zip(used, warns, items):
                    if it is not None:
                        u.append(m)
                        w.extend(out_of_range(m, prognosis.states[m], it, prognosis.max_input_sd))
            else:
                batch[m] = prognosis._shells[m].collate([None] * len(chunk))
        results = prognosis._predict_batch(batch, used, horizons, contributions, feature_contributions, raw_outputs)
        failed = [(pid, w) for pid, w, res in zip(chunk, warns, results) if "error" in res]
        if failed:
            raise ValueError(
                f"{root}: the model's output is not finite for patient(s) {[p for p, _ in failed[:10]]}: their "
                f"inputs lie far outside the training ranges ({'; '.join(failed[0][1]) or 'no single value flagged'})"
            )
        for pid, w, res in zip(chunk, warns, results):
            rows.append({**_flat(pid, res, prognosis.modalities), "input_warnings": "; ".join(w)})
    frame = pd.DataFrame(rows)
    if labels is not None:
        extra = labels.assign(patient_id=labels["patient_id"].astype(str))
        frame = frame.merge(extra, on="patient_id", how="left", validate="one_to_one")
    return frame


def _patients(root: Path, patient_ids: Sequence[str] | None, split: str | None, known: list[str] | None,
              readers: dict[str, ModalityReader]) -> list[str]:
    """The patients to score, checked against the folder."""
    if patient_ids is not None and split is not None:
        raise ValueError("pass patient_ids or split, not both")
    if split is not None:
        path = root / "splits.csv"
        if not path.exists():
            raise ValueError(f"{path} does not exist: split={split!r} needs the cohort's splits")
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {list(SPLITS)}")
        splits = read_table(path, ["patient_id", "split"], str_columns=["split"])  # the cohort loader's checks
        check_unique_ids(splits["patient_id"].tolist(), path)
        if split not in set(splits["split"]):
            raise ValueError(f"{path}: no patient in split {split!r}; splits: {sorted(set(splits['split']))}")
        ids = splits.loc[splits["split"] == split, "patient_id"].tolist()
        unlabelled = [p for p in ids if known is not None and p not in set(known)]
        if unlabelled:
            raise ValueError(f"{path}: patient(s) {unlabelled[:10]} of split {split!r} are not in labels.parquet")
        return ids
    with_data = None if known is not None else set().union(*(r.patient_ids for r in readers.values()))
    if patient_ids is not None:
        ids = [str(p) for p in patient_ids]
        allowed = set(known) if known is not None else with_data
        unknown = [p for p in ids if p not in allowed]
        if unknown:
            where = "labels.parquet" if known is not None else "any modality file"
            raise ValueError(f"{root}: patient(s) {unknown[:10]} are not in {where}")
        return ids
    return list(known) if known is not None else sorted(with_data)


def _flat(pid: str, res: dict[str, Any], modalities: Sequence[str]) -> dict[str, Any]:
    """One ``_predict_batch`` result as a flat table row."""
    row: dict[str, Any] = {"patient_id": pid, "modalities_used": ",".join(res["modalities_used"])}
    for key in ("risk", "probability"):
        if key in res and not isinstance(res[key], list):
            row[key] = res[key]
    if "probabilities" in res:
        row.update({f"probability_{k}": p for k, p in enumerate(res["probabilities"])})
    if "median_survival" in res:
        row["median_survival"] = res["median_survival"]
        row.update({f"survival_at_{h:g}": s for h, s in res["survival_at"].items()})
    for cause, at in res.get("incidence_at", {}).items():  # competing risks: CIF per cause and horizon
        row.update({f"incidence_{cause}_at_{h:g}": v for h, v in at.items()})
    for m in modalities if "contributions" in res else ():
        row[f"contribution_{m}"] = res["contributions"].get(m, np.nan)
    for m, values in res.get("feature_contributions", {}).items():
        if m != "notes":  # one column per note time would be a column per patient: per-note values via predict
            row.update({f"feature_{m}_{name}": v for name, v in values.items()})
    return row


def score_main(argv: Sequence[str]) -> None:
    """``clinfuse score``: write a cohort folder's predictions to a CSV or parquet file."""
    import argparse

    from clinfuse.experiments.cpu_allocator import keep_freed_memory
    from clinfuse.experiments.inference_precision import PRECISIONS
    from clinfuse.experiments.prognosis import Prognosis

    p = argparse.ArgumentParser(
        prog="clinfuse score",
        description="Score every patient of a cohort folder with a saved predictor (a folder written by "
                    "Prognosis.save or an MLflow model URI such as the run tag clinfuse.prognosis_model_uri).",
    )
    p.add_argument("--model", required=True, help="predictor folder or MLflow model URI (runs:/..., models:/...)")
    p.add_argument("--root", required=True, help="the cohort folder to score (docs/formats.md)")
    p.add_argument("--out", required=True, help="predictions file: .csv or .parquet")
    p.add_argument("--split", default=None, help="score only this split of splits.csv (train/val/test)")
    p.add_argument("--horizons", type=float, nargs="+", default=[30.0, 90.0, 365.0],
                   help="times (the cohort's unit) for the survival_at_<h> columns")
    p.add_argument("--contributions", action="store_true", help="add leave-one-modality-out contribution columns")
    p.add_argument("--feature-contributions", action="store_true",
                   help="add feature_<modality>_<name> columns: leave-one-out contributions of each tabular "
                        "value and time-series variable")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", choices=PRECISIONS, default="32-true",
                   help="bf16-mixed: bfloat16 matrix products, faster on CPUs with AMX/AVX512-BF16; risks differ "
                        "from float32's by a few thousandths (default 32-true)")
    a = p.parse_args(list(argv))
    out = Path(a.out)
    if out.suffix not in (".csv", ".parquet"):
        p.error(f"--out must end in .csv or .parquet, got {out.name}")
    if out.exists() and out.resolve().is_relative_to(Path(a.root).resolve()):
        p.error(f"--out {out} is an existing file of the cohort folder {a.root}; write the predictions elsewhere")
    blocking = next((d for d in [out.parent, *out.parent.parents] if d.exists()), None)
    if blocking is not None and not blocking.is_dir():
        p.error(f"--out {out}: {blocking} is a file, not a folder")
    keep_freed_memory()  # a scoring process: reuse freed tensor memory
    prog = Prognosis.load(a.model, precision=a.precision)
    frame = prog.predict_cohort(
        a.root, split=a.split, horizons=a.horizons, contributions=a.contributions, batch_size=a.batch_size,
        feature_contributions=a.feature_contributions)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False) if out.suffix == ".csv" else frame.to_parquet(out, index=False)
    where = f" (split {a.split})" if a.split else ""
    print(f"scored {len(frame)} patients{where} -> {out}" + _agreement(frame, prog.model.task, _splits(Path(a.root), a.split)))


def _splits(root: Path, split: str | None) -> pd.Series | None:
    """patient_id -> split of the folder's ``splits.csv`` when every split was scored (else None)."""
    if split is not None or not (root / "splits.csv").is_file():
        return None
    table = pd.read_csv(root / "splits.csv", dtype=str)
    return table.set_index("patient_id")["split"] if {"patient_id", "split"} <= set(table.columns) else None


def _agreement(frame: pd.DataFrame, task: str, splits: pd.Series | None = None) -> str:
    """The task's metric against the folder's labels, as the end of ``score``'s summary line; per
    split too when the folder has several (a model scores best on its own training patients)."""
    import torch

    from clinfuse.experiments.metrics import classification_metrics, harrell_c_index

    def metric(part: pd.DataFrame) -> float:
        if task == "survival":
            return harrell_c_index(part["risk"].to_numpy(), part["time"].to_numpy(), part["event"].to_numpy())
        target = torch.tensor(part["binary"].to_numpy())
        return classification_metrics(torch.tensor(part["risk"].to_numpy()), target, "binary")["auroc"]

    if task == "survival" and {"time", "event", "risk"} <= set(frame.columns):
        text = "Harrell C-index against the folder's labels"
    elif task == "binary" and {"binary", "risk"} <= set(frame.columns):
        text = "AUROC against the folder's binary labels"
    else:
        return ""
    out = f"; {text}: {metric(frame):.4f}"
    of = frame["patient_id"].map(splits) if splits is not None else None
    if of is not None and of.nunique() > 1:
        parts = [f"{name} (n={int((of == name).sum())}) {metric(frame[of == name]):.4f}"
                 for name in ("train", "val", "test") if (of == name).any()]
        out += f"; by split: {', '.join(parts)}"
        if (of == "train").any():
            out += " (the training patients flatter the model: use --split test for held-out figures)"
    return out
