"""``clinfuse predict``: the predictions ``trainer.predict`` returned, as one CSV row per patient.

The file is written on the local disk only (``<trainer.default_root_dir>/predictions_<split>.csv``)
and never logged to MLflow: it holds patient ids, which no MLflow record may hold.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch


def predictions_frame(batches: Sequence[dict[str, Any]], task: str, splits: dict[str, str]) -> pd.DataFrame:
    """One row per patient from ``ClinFuseModule.predict_step`` outputs.

    Columns: ``patient_id``, ``split``, then by task: ``risk`` (survival; higher = earlier event),
    ``logit`` and ``probability`` (binary), ``probability_<k>`` per class (multiclass).

    Raises:
        ValueError: no batch at all (an empty split).
    """
    if not batches:
        raise ValueError("trainer.predict returned no batch: the chosen predict_split has no patient")
    ids = [pid for b in batches for pid in b["patient_id"]]
    out = torch.cat([b["out"].float() for b in batches]).numpy()
    table: dict[str, Any] = {"patient_id": ids, "split": [splits.get(pid, "") for pid in ids]}
    if task == "multiclass":
        out = out.reshape(len(ids), -1)
        shifted = np.exp(out - out.max(1, keepdims=True))
        probs = shifted / shifted.sum(1, keepdims=True)
        table.update({f"probability_{k}": probs[:, k] for k in range(probs.shape[1])})
    elif task == "binary":
        table.update({"logit": out, "probability": 1.0 / (1.0 + np.exp(-out))})
    else:
        table["risk"] = out
    return pd.DataFrame(table)


def write_predictions(cli: Any) -> Path | None:
    """After ``clinfuse predict``: write the table next to the run's checkpoints and print where."""
    trainer, dm = cli.trainer, cli.datamodule
    batches = trainer.predict_loop.predictions
    if not trainer.is_global_zero or batches is None:
        return None
    if trainer.world_size > 1:
        warnings.warn("predictions from several processes: the file holds this process's share only", stacklevel=2)
    frame = predictions_frame(batches, cli.model.task, dm.predict_patient_splits())
    path = Path(trainer.default_root_dir) / f"predictions_{dm.predict_split}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    print(f"predictions for {len(frame)} patients ({dm.predict_split}) written to {path}")
    return path
