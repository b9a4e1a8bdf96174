"""After training: survival curves for the test split and the plots people look at, logged to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinfuse.experiments.survival_curves import BreslowBaseline
from clinfuse.experiments.survival_plots import calibration_plot, km_by_risk_group


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


def survival_figures(model: Any, datamodule: Any, outdir: str | Path) -> dict[str, Any]:
    """Fit the Breslow baseline on the train split, then plot the test split.

    Writes ``km_risk_groups.png`` (Kaplan-Meier curves of predicted-risk tertiles with the
    log-rank p-value) and ``calibration.png`` (predicted vs Kaplan-Meier survival at the median
    test follow-up) into ``outdir``.

    Returns:
        The baseline, the log-rank p-value, the horizon and the PNG paths.
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
    _, p_value = km_by_risk_group(te_risk, time, event, n_groups=3, path=km_path)
    horizon = float(np.median(time))
    if baseline is not None:
        surv = baseline.survival_at(te_risk, horizon)
    else:
        surv = objective.survival(torch.as_tensor(te_out), torch.tensor([horizon]))[:, 0].numpy()
    calibration_plot(surv, time, event, horizon, path=cal_path)
    return {"baseline": baseline, "logrank_p": p_value, "horizon": horizon, "paths": [km_path, cal_path]}
