"""External validation of a saved binary predictor (``clinfuse evaluate`` on a binary model).

Writes ``report.md`` (AUROC and AUPRC with 95% bootstrap intervals, the Brier score, and the
calibration slope of a logistic recalibration ``logit P(y) = a + b logit(p)`` (``b < 1`` for
predictions too extreme) and the calibration-in-the-large (``a`` with ``b`` fixed at 1; 0 when
calibrated, < 0 for over-prediction)), the reliability
diagram ``calibration.png`` (observed rate per decile of predicted probability, with Wilson 95%
intervals) and ``predictions.csv``. Metrics are scikit-learn's; the intervals come from
:func:`~clinfuse.experiments.survival_metrics.bootstrap_ci`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def calibration_fit(probability: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Calibration intercept and slope: unpenalised logistic regression of ``target`` on
    ``logit(probability)`` (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression

    p = np.clip(np.asarray(probability, float), 1e-7, 1 - 1e-7)
    x = np.log(p / (1 - p))[:, None]
    fit = LogisticRegression(penalty=None, solver="lbfgs").fit(x, np.asarray(target, int))
    return float(fit.intercept_[0]), float(fit.coef_[0, 0])


def calibration_in_the_large(probability: np.ndarray, target: np.ndarray) -> float:
    """The calibration intercept with the slope fixed at 1 (``logit P(y) = a + logit(p)``): 0 when the
    mean prediction matches the event rate, < 0 for over-prediction. Unlike the intercept of
    :func:`calibration_fit` (fitted jointly with the slope) it reads as calibration-in-the-large.
    scikit-learn's logistic regression has no offset term, so its one-parameter score equation
    ``sum(y - expit(a + logit p)) = 0``, monotone in ``a``, is solved with scipy's ``brentq``."""
    from scipy.optimize import brentq
    from scipy.special import expit

    p = np.clip(np.asarray(probability, float), 1e-7, 1 - 1e-7)
    z, y = np.log(p / (1 - p)), np.asarray(target, float)
    if y.min() == y.max():
        return float("nan")  # one class: no finite solution
    return float(brentq(lambda a: float(np.sum(y - expit(a + z))), -50.0, 50.0, xtol=1e-12))


def reliability_table(probability: np.ndarray, target: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Per quantile bin of predicted probability: ``n``, mean ``predicted``, ``observed`` rate and
    its Wilson 95% interval (``observed_lower``, ``observed_upper``)."""
    p, y = np.asarray(probability, float), np.asarray(target, float)
    bins = pd.qcut(p, min(n_bins, len(np.unique(p))), labels=False, duplicates="drop")
    rows = []
    for b in np.unique(bins):
        sel = bins == b
        n, k = int(sel.sum()), float(y[sel].sum())
        rate, z = k / n, 1.959964
        centre = (rate + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * np.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
        rows.append({"n": n, "predicted": float(p[sel].mean()), "observed": rate,
                     "observed_lower": centre - half, "observed_upper": centre + half})
    return pd.DataFrame(rows)


def validate_binary(prognosis: Any, root: str | Path, out: Path, split: str | None, n_boot: int,
                    show_progress: bool) -> dict[str, Any]:
    """The binary report (module docstring); returns the metrics and the written paths."""
    from matplotlib.figure import Figure
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    from clinfuse.experiments.survival_metrics import bootstrap_ci

    frame = prognosis.predict_cohort(root, split=split, contributions=False, show_progress=show_progress)
    if "binary" not in frame.columns or frame["binary"].isna().any():
        raise ValueError(f"{root}: validation of a binary model needs the binary label (labels.parquet) for every scored patient")
    p, y = frame["probability"].to_numpy(float), frame["binary"].to_numpy(int)
    if len(np.unique(y)) < 2:
        raise ValueError(f"{root}: only one class among the scored patients: AUROC is undefined")
    out.mkdir(parents=True, exist_ok=True)  # only now: nothing to write before the labels are known
    auroc = bootstrap_ci(lambda pp, yy: roc_auc_score(yy, pp), p, y, n_boot=n_boot)
    auprc = bootstrap_ci(lambda pp, yy: average_precision_score(yy, pp), p, y, n_boot=n_boot)
    intercept, slope = calibration_fit(p, y)
    citl = calibration_in_the_large(p, y)
    report = {"auroc": auroc, "auprc": auprc, "brier": float(brier_score_loss(y, p)),
              "calibration_intercept": intercept, "calibration_slope": slope, "calibration_in_the_large": citl,
              "prevalence": float(y.mean()), "mean_predicted": float(p.mean())}
    table = reliability_table(p, y)
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(111)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    yerr = np.clip(np.vstack([table["observed"] - table["observed_lower"], table["observed_upper"] - table["observed"]]), 0, None)
    ax.errorbar(table["predicted"], table["observed"], yerr=yerr, fmt="o-", capsize=3, label="observed per decile (95% CI)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed rate",
           title=f"Calibration-in-the-large {citl:+.2f}, slope {slope:.2f}\n({len(y)} patients, prevalence {y.mean():.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    cal_path = out / "calibration.png"
    fig.savefig(cal_path, format="png", dpi=100)
    frame.to_csv(out / "predictions.csv", index=False)
    lines = [
        "# External validation (binary)", "",
        f"Cohort `{root}`{f', split {split}' if split else ''}: {len(frame)} patients, {int(y.sum())} positives "
        f"(prevalence {report['prevalence']:.3f}; mean predicted probability {report['mean_predicted']:.3f}).", "",
        "| metric | value [95% bootstrap CI] |", "|---|---|",
        f"| AUROC | {auroc[0]:.4f} [{auroc[1]:.4f}, {auroc[2]:.4f}] |",
        f"| AUPRC | {auprc[0]:.4f} [{auprc[1]:.4f}, {auprc[2]:.4f}] |",
        f"| Brier score | {report['brier']:.4f} |",
        f"| calibration-in-the-large (intercept with the slope fixed at 1; < 0: over-prediction) | {citl:+.3f} |",
        f"| calibration slope (< 1: predictions too extreme) / its joint intercept | {slope:.3f} / {intercept:+.3f} |", "",
    ]
    dev = (prognosis.summary or {}).get("test", {})
    if "auroc" in dev:
        lines.append(f"On its development test split ({dev['n']} patients) the model had AUROC {dev['auroc']:.4f}.")
    lines += ["", "![calibration](calibration.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return {"report": report, "n": len(frame), "positives": int(y.sum()), "paths": [cal_path]}
