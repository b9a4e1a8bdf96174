"""Evaluation pieces of the robustness study: removal tables, predictions, metrics and the oracle.

A *removal table* is a boolean DataFrame indexed by ``patient_id`` with one column per modality
(True = take this modality away from this patient). It is drawn once per evaluation for the whole
split with a fixed seed, so every head is scored on exactly the same patients and removals, and it
is applied batch by batch with :func:`clinfuse.datasets.missingness.remove_modalities`: a removed
modality is marked absent (``present = False``), never zero-filled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.datasets.missingness import draw_drops, remove_modalities
from clinfuse.experiments.metrics import classification_metrics, harrell_c_index

SUPPORTED_TASKS = ("survival", "binary")


def subset_name(subset: Iterable[str]) -> str:
    """``("tabular", "ecg") -> "tabular+ecg"`` (the order given)."""
    return "+".join(subset)


def all_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, smallest first, in the modalities' order."""
    return [c for k in range(1, len(modalities) + 1) for c in combinations(modalities, k)]


def subset_removal(presence: pd.DataFrame, keep: Iterable[str]) -> pd.DataFrame:
    """Remove every modality outside ``keep`` from every patient (``presence``: index patient_id)."""
    keep = set(keep)
    unknown = sorted(keep - set(presence.columns))
    if unknown:
        raise ValueError(f"subset names modalities {unknown} the data does not load ({list(presence.columns)})")
    return pd.DataFrame({m: m not in keep for m in presence.columns}, index=presence.index, dtype=bool)


def random_removal(
    presence: pd.DataFrame,
    mechanism: str,
    rate: float,
    rng: np.random.Generator,
    modalities: Sequence[str] | None = None,
    driver: np.ndarray | None = None,
    keep_one: bool = True,
) -> pd.DataFrame:
    """Draw a removal table with the synthetic generator's mechanisms (``draw_drops``).

    Each modality in ``modalities`` (default: all) is removed independently per patient: ``mcar``
    with probability ``rate``; ``mar``/``mnar`` with ``sigmoid(a + 1.5 * standardised driver)``
    averaging ``rate`` (``driver``: an observed value for ``mar``, e.g. age; the outcome for
    ``mnar``). ``rate = 1`` removes everything (``draw_drops`` stops below 1).

    Keep-at-least-one rule (``keep_one``, as in training-time modality dropout): when the draws
    would take away every modality a patient has, one of that patient's modalities, chosen
    uniformly at random, is kept. So at ``rate = 1`` every patient with data keeps exactly one of
    its modalities; a patient with no modality stays without.

    Args:
        presence: index ``patient_id``, one bool column per loaded modality (True = has it).
        mechanism: ``mcar``, ``mar`` or ``mnar``.
        rate: mean removal probability in ``[0, 1]``.
        rng: numpy generator (seeded by the caller).
        modalities: the modalities subject to removal.
        driver: ``(n,)`` per-patient driver for ``mar``/``mnar``.
        keep_one: apply the keep-at-least-one rule.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"missing rate must be in [0, 1], got {rate}")
    modalities = list(presence.columns) if modalities is None else list(modalities)
    n = len(presence)
    drops = pd.DataFrame(False, index=presence.index, columns=presence.columns)
    for m in modalities:
        if m not in presence.columns:
            raise ValueError(f"cannot remove modality {m!r}: the data loads {list(presence.columns)}")
        if rate >= 1.0:
            drops[m] = True
        else:
            kw = {"mar_driver": driver} if mechanism == "mar" else {"mnar_driver": driver} if mechanism == "mnar" else {}
            drops[m] = draw_drops(mechanism, rate, n, rng, **kw)
    if keep_one:
        has = presence.to_numpy(bool)
        kept = has & ~drops.to_numpy(bool)
        lost_all = has.any(1) & ~kept.any(1)
        for i in np.flatnonzero(lost_all):
            j = rng.choice(np.flatnonzero(has[i]))
            drops.iat[i, j] = False
    return drops


def predict(model: Any, batches: Iterable[dict[str, Any]], removal: pd.DataFrame | None = None) -> pd.DataFrame:
    """Scores of ``model`` (eval mode, no grad) on batches (e.g. ``dm.split_dataloader("test")``),
    after an optional removal table.

    Returns:
        DataFrame ``patient_id, score``: the survival risk (``model.risk``) or the binary logit.
    """
    model.eval()
    device = next(model.parameters()).device
    ids, scores = [], []
    with torch.no_grad():
        for batch in batches:
            inputs = {m: {k: v.to(device) for k, v in x.items()} for m, x in batch["inputs"].items()}
            if removal is not None:
                rows = removal.loc[batch["patient_id"], [m for m in removal.columns if m in inputs]]
                inputs = remove_modalities(inputs, {m: torch.as_tensor(rows[m].to_numpy()) for m in rows.columns})
            out, _ = model(inputs)
            scores.append(model.risk(out).float().cpu().reshape(len(batch["patient_id"]), -1)[:, 0])
            ids.extend(batch["patient_id"])
    return pd.DataFrame({"patient_id": ids, "score": torch.cat(scores).numpy()})


def metric_name(task: str) -> str:
    """The headline metric of a task."""
    if task not in SUPPORTED_TASKS:
        raise ValueError(f"the robustness study supports tasks {SUPPORTED_TASKS}, got {task!r}")
    return "c_index" if task == "survival" else "auroc"


def score_metric(scores: np.ndarray, labels: pd.DataFrame, task: str, probabilities: bool = False) -> float:
    """Harrell's C (survival) or AUROC (binary) of ``scores`` against ``labels`` (same row order)."""
    if metric_name(task) == "c_index":
        return harrell_c_index(scores, labels["time"].to_numpy(float), labels["event"].to_numpy(float))
    s = np.asarray(scores, float)
    if probabilities:  # AUROC is rank based: a logit of the probability ranks the same
        s = np.log(np.clip(s, 1e-7, 1 - 1e-7) / np.clip(1 - s, 1e-7, 1))
    target = torch.as_tensor(labels["binary"].to_numpy(), dtype=torch.long)
    return classification_metrics(torch.as_tensor(s), target, "binary")["auroc"]


class OracleScorer:
    """The oracle's metric on the same patients given the same (kept) modalities.

    Uses ``clinfuse.datasets.synthetic.oracle_subsets`` (the posterior rebuilt from the cohort's
    seed for any modality pattern) when the cohort is synthetic and the rebuilt posterior matches
    ``oracle.parquet``'s ``risk_observed`` on the patients' own patterns (a self-check); survival
    only. Otherwise it falls back to ``risk_observed`` / ``prob_observed``, which is valid only when
    nothing was removed and the data module loads every modality of the cohort; else NaN.

    Args:
        cohort: the loaded ``Cohort``.
        presence: ``cohort.presence()`` (loaded modalities).
        task: ``survival`` or ``binary``.
    """

    def __init__(self, cohort: Any, presence: pd.DataFrame, task: str) -> None:
        self.cohort, self.presence, self.task = cohort, presence, task
        self._latent: tuple | None = None
        self.mode = "none"

    def setup(self) -> "OracleScorer":
        """Decide which oracle is available (``subsets``, ``observed`` or ``none``)."""
        if self.cohort.oracle is None:
            return self
        all_modalities = list(self.cohort.info.get("modalities", []))
        self.mode = "observed" if set(all_modalities) <= set(self.presence.columns) else "none"
        if self.task != "survival" or self.cohort.info.get("name") != "synthetic":
            return self
        try:
            from clinfuse.datasets.synthetic.oracle_subsets import rebuild_latent
        except ImportError:
            return self
        info = self.cohort.info
        model, _, views = rebuild_latent(int(info["seed"]), int(info["n_patients"]), int(info.get("n_classes", 3)))
        self._latent = (model, views, {p: i for i, p in enumerate(_generator_ids(int(info["n_patients"])))})
        if not all_modalities or set(all_modalities) <= set(self.presence.columns):
            ids = list(self.presence.index)
            rebuilt = self.risk(ids, self.presence)
            stored = self.cohort.oracle.set_index("patient_id").loc[ids, "risk_observed"].to_numpy(float)
            if not np.allclose(rebuilt, stored, atol=1e-6):
                self._latent = None  # not the generator's cohort after all: keep the stored oracle only
                return self
        self.mode = "subsets"
        return self

    def risk(self, ids: list[str], kept: pd.DataFrame) -> np.ndarray:
        """Posterior-mean risk of each patient given its kept modalities (``kept``: bool, by id)."""
        from clinfuse.datasets.synthetic.oracle_subsets import subset_risk

        model, views, row = self._latent
        rows = np.asarray([row[p] for p in ids])
        flags = kept.loc[ids].to_numpy(bool)
        out = np.zeros(len(ids))
        patterns, inverse = np.unique(flags, axis=0, return_inverse=True)
        for k, pattern in enumerate(patterns):  # one posterior per missingness pattern
            sel = np.flatnonzero(inverse.ravel() == k)
            observed = [m for m, on in zip(kept.columns, pattern) if on]
            out[sel] = subset_risk(model, {m: v[rows[sel]] for m, v in views.items()}, observed)
        return out

    def metric(self, ids: list[str], labels: pd.DataFrame, removal: pd.DataFrame | None) -> float:
        """The oracle's metric on ``ids`` after ``removal`` (None: nothing removed)."""
        nothing_removed = removal is None or not (removal.loc[ids] & self.presence.loc[ids]).to_numpy().any()
        if self.mode == "subsets":
            kept = self.presence.loc[ids] if removal is None else self.presence.loc[ids] & ~removal.loc[ids]
            return score_metric(self.risk(ids, kept), labels, self.task)
        if self.mode == "observed" and nothing_removed:
            o = self.cohort.oracle.set_index("patient_id").loc[ids]
            col = "risk_observed" if self.task == "survival" else "prob_observed"
            return score_metric(o[col].to_numpy(float), labels, self.task, probabilities=self.task == "binary")
        return float("nan")


def _generator_ids(n: int) -> list[str]:
    from clinfuse.datasets.synthetic.generate import patient_ids

    return list(patient_ids(n))
