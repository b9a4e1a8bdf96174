"""External validation of a saved predictor on a labelled cohort folder (survival here; binary
models: :mod:`clinfuse.experiments.binary_validation`).

``clinfuse evaluate --model <predictor> --root <cohort folder> --out <folder> [--split test]``
scores the folder with the restored readers (:meth:`Prognosis.predict_cohort`, no refit) and
writes, into ``--out``:

- ``report.md``: patients and events, Harrell and Uno C-index with 95% bootstrap intervals, the mean
  time-dependent AUC, the integrated Brier score, the D-calibration p-value, the log-rank p of
  the predicted-risk tertiles, and the figures;
- ``km_risk_groups.png`` and ``calibration.png`` (at the median follow-up), as after training, and
  ``cumulative_incidence.png`` for competing-risks models with a ``cause`` label;
- ``predictions.csv``: the scored rows (patient ids stay in this folder; nothing is logged).

``--by`` and the folder's labels are checked before anything is scored, and ``--out`` is created
only once the scored patients' labels are there, so a refused run leaves no folder behind.

The censoring distribution of the IPCW metrics (Uno C, time-dependent AUC, Brier) is estimated
on the validation cohort itself: an external site has no access to the development data, and its
own censoring is the one its labels carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def validate_cohort(prognosis: Any, root: str | Path, out_dir: str | Path, split: str | None = None,
                    n_boot: int = 200, show_progress: bool = True, by: str | None = None) -> dict[str, Any]:
    """Score ``root``, compute the report and write the files (module docstring).

    Nothing is scored or written before ``by`` and the folder's labels are checked, and ``out_dir``
    is created only once the scored patients' labels are known to be there.

    Returns:
        ``{"report": dict of metrics, "logrank_p", "horizon", "n", "events", "paths": [...]}``.

    Raises:
        ValueError: a multiclass model, a folder without the labels (``time``/``event``, or
            ``binary``) of the scored patients, or a ``by`` that is not a column of the folder's
            tabular file.
    """
    check_inputs(prognosis, root, by)
    out = Path(out_dir)
    if prognosis.model.task == "binary":
        from clinfuse.experiments.binary_validation import validate_binary

        result = validate_binary(prognosis, root, out, split, n_boot, show_progress)
    else:
        result = _validate_survival(prognosis, root, out, split, n_boot, show_progress)
    if by:
        _append_subgroups(out, by, root)
    return result


def check_inputs(prognosis: Any, root: str | Path, by: str | None = None) -> None:
    """What :func:`validate_cohort` checks before scoring: the model's task, the ``by`` column
    (:func:`~clinfuse.experiments.compare.check_group_column`) and the folder's labels
    (:func:`~clinfuse.experiments.compare.check_labels`).

    Raises:
        ValueError: naming the task, the column or the labels file.
    """
    from clinfuse.experiments.compare import check_labels
    from clinfuse.experiments.subgroups import check_group_column

    if prognosis.model.task not in ("survival", "binary"):
        raise ValueError(f"clinfuse evaluate reports survival or binary models; this model's task is {prognosis.model.task!r}")
    if by:
        check_group_column(root, by)
    check_labels(root, prognosis.model.task, "evaluate")


def _append_subgroups(out: Path, column: str, root: str | Path) -> None:
    """Add the metric per subgroup of ``column`` (:func:`~clinfuse.experiments.subgroups.by_subgroup`)
    to ``report.md``, from the written ``predictions.csv``."""
    import pandas as pd

    from clinfuse.experiments.subgroups import by_subgroup, subgroup_markdown, tabular_groups

    frame = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
    if "median_survival" in frame.columns:
        score, labels = frame["risk"], {"time": frame["time"].to_numpy(float), "event": frame["event"].to_numpy(float)}
    else:
        score, labels = frame["probability"], {"binary": frame["binary"].to_numpy(float)}
    table = by_subgroup([score.to_numpy(float)], ["model"], labels, tabular_groups(root, column, frame["patient_id"]))
    with open(out / "report.md", "a") as f:
        f.write(f"\n## By {column} (95% bootstrap intervals)\n\n{subgroup_markdown(table)}\n")


def _validate_survival(prognosis: Any, root: str | Path, out: Path, split: str | None, n_boot: int,
                       show_progress: bool) -> dict[str, Any]:
    """The survival report (module docstring)."""
    from clinfuse.experiments.survival_metrics import survival_report
    from clinfuse.experiments.survival_plots import calibration_plot, km_by_risk_group
    from clinfuse.experiments.survival_report import format_report, short_time_unit

    raw: list[torch.Tensor] = []
    frame = prognosis.predict_cohort(root, split=split, contributions=False, show_progress=show_progress,
                                     raw_outputs=raw)
    if not {"time", "event"} <= set(frame.columns) or frame[["time", "event"]].isna().any().any():
        raise ValueError(f"{root}: validation needs time and event labels (labels.parquet) for every scored patient")
    out.mkdir(parents=True, exist_ok=True)  # only now: nothing to write before the labels are known
    outputs = torch.cat(raw)
    risk = frame["risk"].to_numpy(float)
    time, event = frame["time"].to_numpy(float), frame["event"].to_numpy(float)

    def surv_fn(times: np.ndarray) -> np.ndarray:
        return prognosis.survival_matrix(outputs, times)

    objective = getattr(prognosis.model, "objective", None)
    report = survival_report(time, event, time, event, risk, surv_fn, n_boot=n_boot,
                             curve_auc=bool(objective is not None and objective.discrete),
                             model_horizon=prognosis.last_event_time)
    km_path, cal_path = out / "km_risk_groups.png", out / "calibration.png"
    unit = short_time_unit((prognosis.summary or {}).get("time_unit", "days"))
    what = f"split {split}" if split else "all patients"
    _, logrank_p = km_by_risk_group(risk, time, event, n_groups=3, path=km_path, time_unit=unit, what=what)
    horizon = float(np.median(time))
    calibration_plot(surv_fn(np.array([horizon]))[:, 0], time, event, horizon, path=cal_path, time_unit=unit,
                     what=f"{what}; t = its median follow-up")
    paths = [km_path, cal_path]
    objective = prognosis.model.objective
    causes: dict[str, tuple] = {}
    if objective.competing and "cause" in frame.columns:
        from clinfuse.experiments.metrics import harrell_c_index
        from clinfuse.experiments.survival_metrics import bootstrap_ci
        from clinfuse.experiments.survival_report import _incidence_figure

        cause = frame["cause"].to_numpy()
        path = _incidence_figure(objective, outputs.numpy(), time, cause, out)
        paths += [path] if path is not None else []
        lost = objective.cumulative_incidence(outputs).sum(-1).numpy()  # (n, R): expected bins lost to each cause
        for r in range(1, objective.n_causes + 1):  # cause-specific C: the other causes' events censored
            if (cause == r).any():
                causes[f"cause {r}"] = bootstrap_ci(lambda t, e, s: harrell_c_index(s, t, e), time, (cause == r).astype(float),
                                                    lost[:, r - 1], n_boot=n_boot)
    frame.to_csv(out / "predictions.csv", index=False)
    result = {"report": report, "logrank_p": float(logrank_p), "horizon": horizon, "n": len(frame),
              "events": int(event.sum()), "paths": paths, "causes": causes}
    (out / "report.md").write_text(_markdown(result, root, split, prognosis, format_report(report)))
    return result


def _markdown(result: dict[str, Any], root: str | Path, split: str | None, prognosis: Any, table: str) -> str:
    from clinfuse.experiments.survival_report import short_time_unit

    unit = short_time_unit((prognosis.summary or {}).get("time_unit", "days")) or "(the cohort's time unit)"
    dev = (prognosis.summary or {}).get("test", {})
    lines = [
        "# External validation", "",
        f"Cohort `{root}`{f', split {split}' if split else ''}: {result['n']} patients, {result['events']} events; "
        f"median observed time {result['horizon']:.4g} {unit} (the calibration horizon).", "",
        table, "",
        f"Log-rank p of the predicted-risk tertiles: {result['logrank_p']:.3g}.", "",
        "The IPCW metrics (Uno C, time-dependent AUC, IBS) weight by the censoring of this cohort itself, so they "
        "differ slightly from those `clinfuse fit` reports on the same patients (weighted by the training split's "
        "censoring); the time-dependent metrics use a grid over the 10th-90th percentiles of the observed times, "
        "clipped to where the censoring estimate is defined.",
    ]
    if result["causes"]:
        lines += ["", "| cause | Harrell C, other causes censored [95% bootstrap CI] |", "|---|---|"]
        lines += [f"| {name} | {c[0]:.4f} [{c[1]:.4f}, {c[2]:.4f}] |" for name, c in result["causes"].items()]
    if "c_index" in dev:
        lines.append(f"On its development test split ({dev['n']} patients) the model had Harrell C {dev['c_index']:.4f}.")
    lines += ["", *(f"![{p.stem}]({p.name})" for p in result["paths"]), ""]
    return "\n".join(lines)


def evaluate_main(argv: Sequence[str]) -> None:
    """``clinfuse evaluate``: external validation report of a saved predictor on a cohort folder."""
    import argparse

    from clinfuse.experiments.compare import MIN_BOOT, n_boot_arg
    from clinfuse.experiments.cpu_allocator import keep_freed_memory
    from clinfuse.experiments.subgroups import check_group_column
    from clinfuse.experiments.prognosis import Prognosis

    p = argparse.ArgumentParser(prog="clinfuse evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="predictor folder or MLflow model URI")
    p.add_argument("--root", required=True, help="a labelled cohort folder (docs/formats.md)")
    p.add_argument("--out", required=True, help="folder for report.md, the figures and predictions.csv")
    p.add_argument("--split", default=None, help="only this split of splits.csv")
    p.add_argument("--n-boot", type=n_boot_arg, default=200,
                   help=f"bootstrap resamples for the 95%% intervals (at least {MIN_BOOT}; default 200)")
    p.add_argument("--by", default=None, help="a column of the folder's tabular file: the metric per subgroup")
    a = p.parse_args(list(argv))
    if a.by:  # before the model is loaded or anything scored or written
        try:
            check_group_column(a.root, a.by)
        except ValueError as err:
            p.error(f"argument --by: {err}")
    keep_freed_memory()  # a scoring process: reuse freed tensor memory
    prognosis = Prognosis.load(a.model)
    try:
        check_inputs(prognosis, a.root)
    except ValueError as err:
        p.error(str(err))
    result = validate_cohort(prognosis, a.root, a.out, split=a.split, n_boot=a.n_boot, by=a.by)
    print((Path(a.out) / "report.md").read_text())
    print(f"written to {a.out}: report.md, {', '.join(p.name for p in result['paths'])}, predictions.csv")
