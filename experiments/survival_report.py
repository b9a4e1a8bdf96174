"""After training: survival curves for the test split and the plots people look at, logged to MLflow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinfuse.experiments.survival_curves import BreslowBaseline
from clinfuse.experiments.survival_metrics import survival_report
from clinfuse.experiments.survival_plots import calibration_plot, km_by_risk_group

#: fewer test patients give no figures or report (tertiles and calibration bins of one or two patients)
MIN_TEST_PATIENTS = 6


@torch.no_grad()
def predict_split(model: Any, datamodule: Any, split: str) -> tuple[list[str], np.ndarray]:
    """Patient ids and raw model outputs of one split, in eval mode.

    Outputs: ``(B,)`` Cox log-risk / binary logit, ``(B, K)`` discrete-time or multiclass logits.
    """
    was_training = model.training
    model.eval()
    ids, outs = [], []
    for batch in datamodule.split_dataloader(split):
        inputs = {m: {k: v.to(model.device) for k, v in x.items()} for m, x in batch["inputs"].items()}
        ids += list(batch["patient_id"])
        outs.append(model(inputs)[0].float().cpu())
    model.train(was_training)
    return ids, torch.cat(outs).numpy()


def short_time_unit(time_unit: str | None) -> str | None:
    """The survival time's unit as one word for axis labels (``cohort.json``'s ``time_unit`` is a
    word for the built-in and synthetic cohorts, a sentence for converted ones such as MIMIC-IV:
    "...; survival time: days from the prediction time"); None when it cannot be told."""
    if not time_unit:
        return None
    text = str(time_unit).strip().lower()
    if text in ("days", "hours", "months", "years", "weeks"):
        return text
    found = re.search(r"survival time[^;]*?\b(days|hours|months|years|weeks)\b", text)
    return found.group(1) if found else None


def survival_figures(model: Any, datamodule: Any, outdir: str | Path, n_boot: int = 200) -> dict[str, Any]:
    """Fit the Breslow baseline on the train split, then plot the test split.

    Writes ``km_risk_groups.png`` (Kaplan-Meier curves of predicted-risk tertiles with the
    log-rank p-value) and ``calibration.png`` (predicted vs Kaplan-Meier survival at the median
    test follow-up, in quintiles of predicted survival) into ``outdir``; competing-risks models also
    ``cumulative_incidence.png`` (mean predicted CIF per cause vs Aalen-Johansen). Tied predictions
    (every patient without a modality may get the same one) stay in one group, so ties can leave
    fewer or unequal groups, as the figure titles then say
    (:func:`~clinfuse.experiments.survival_plots.risk_groups`).

    Also computes the full test report (:func:`survival_report`: Harrell and Uno C with bootstrap
    intervals over ``n_boot`` resamples, mean time-dependent AUC, IBS, D-calibration).

    Returns:
        The baseline (None for discrete-time models), the log-rank p-value, the horizon, the PNG
        paths and the report dict.

    Raises:
        ValueError: a test split of fewer than ``MIN_TEST_PATIENTS`` patients or without an event
            (``clinfuse fit`` then warns and goes on to log the prediction model).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    labels = datamodule.cohort.labels.set_index("patient_id")
    objective = model.objective
    baseline = None
    if not objective.discrete:  # Cox: survival needs a Breslow baseline of the training split
        tr_ids, tr_risk = predict_split(model, datamodule, "train")
        tr = labels.loc[tr_ids]
        baseline = BreslowBaseline().fit(tr_risk, tr["time"].to_numpy(float), tr["event"].to_numpy(float))
    te_ids, te_out = predict_split(model, datamodule, "test")
    te_risk = objective.risk(torch.as_tensor(te_out)).numpy()
    te = labels.loc[te_ids]
    time, event = te["time"].to_numpy(float), te["event"].to_numpy(float)
    km_path, cal_path = outdir / "km_risk_groups.png", outdir / "calibration.png"
    if len(time) < MIN_TEST_PATIENTS or not event.any():
        raise ValueError(f"the test split has {len(time)} patient(s) and {int(event.sum())} event(s); the survival "
                         f"figures and report need at least {MIN_TEST_PATIENTS} patients and one event")
    unit = short_time_unit(datamodule.cohort.info.get("time_unit", "days"))  # as the model card: synth writes days
    _, p_value = km_by_risk_group(te_risk, time, event, n_groups=3, path=km_path, time_unit=unit, what="test split")
    horizon = float(np.median(time))
    if baseline is not None:
        surv = baseline.survival_at(te_risk, horizon)
    else:
        surv = objective.survival(torch.as_tensor(te_out), torch.tensor([horizon]))[:, 0].numpy()
    calibration_plot(surv, time, event, horizon, n_bins=min(5, len(time) // 2), path=cal_path, time_unit=unit,
                     what="test split; t = its median follow-up")
    tr_all = labels.loc[list(datamodule.cohort.splits["train"])]

    def surv_fn(times: np.ndarray) -> np.ndarray:
        if baseline is not None:
            return baseline.survival(te_risk, times)
        return objective.survival(torch.as_tensor(te_out), torch.as_tensor(times)).numpy()

    report = survival_report(
        tr_all["time"].to_numpy(float), tr_all["event"].to_numpy(float), time, event, te_risk, surv_fn, n_boot=n_boot,
        curve_auc=objective.discrete,
        model_horizon=float(baseline.event_times[-1]) if baseline is not None else float(objective.edges[-2]),
    )
    paths = [km_path, cal_path]
    if objective.competing:
        names = cause_names(datamodule.cohort.info, objective.n_causes)
        path = _incidence_figure(objective, te_out, time, te["cause"].to_numpy(), outdir, names, unit)
        paths += [path] if path is not None else []
    return {"baseline": baseline, "logrank_p": p_value, "horizon": horizon, "paths": paths, "report": report}


def cause_names(info: dict, n_causes: int) -> list[str] | None:
    """The names of causes ``1..R`` from ``cohort.json``'s ``labels.cause`` text (the built-in
    competing-risks cohorts write e.g. ``"0 censored, 1 cGvHD, 2 relapse, 3 death"``); None when it
    does not name every cause."""
    text = str(((info or {}).get("labels") or {}).get("cause", ""))
    named = {int(k): v.strip() for k, v in re.findall(r"(\d+)\s+([^,;]+)", text)}
    names = [named.get(r) for r in range(1, n_causes + 1)]
    return names if all(names) else None


def _incidence_figure(objective: Any, out: np.ndarray, time: np.ndarray, cause: np.ndarray, outdir: Path,
                      names: list[str] | None = None, unit: str | None = None) -> Path | None:
    """``cumulative_incidence.png``: mean predicted CIF per cause vs Aalen-Johansen on the test
    split (over 0..the last test time); None, with a warning, when a cause has no test event."""
    import warnings

    from clinfuse.experiments.competing_plots import incidence_plot

    grid = np.linspace(0.0, float(time.max()), 60)
    pred = objective.cumulative_incidence_at(torch.as_tensor(out), torch.as_tensor(grid)).numpy()  # (n, R, T)
    path = outdir / "cumulative_incidence.png"
    try:
        incidence_plot(pred, grid, time, cause, cause_names=names, path=path, time_unit=unit)
    except ValueError as err:
        warnings.warn(f"cumulative incidence plot skipped: {err}", stacklevel=2)
        return None
    return path


def format_report(report: dict[str, float]) -> str:
    """The test-split survival report as a small markdown table (95% bootstrap intervals)."""
    rows = [
        ("Harrell C-index", f"{report['harrell']:.4f} [{report['harrell_low']:.4f}, {report['harrell_high']:.4f}]"),
        ("Uno C-index", f"{report['uno']:.4f} [{report['uno_low']:.4f}, {report['uno_high']:.4f}]"),
        ("mean time-dependent AUC", f"{report['mean_td_auc']:.4f}"),
        ("integrated Brier score", f"{report['ibs']:.4f}"),
        ("D-calibration p-value", f"{report['d_calibration_p']:.3g}"),
    ]
    return "\n".join(["| test metric | value [95% bootstrap CI] |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
