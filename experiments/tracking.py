"""MLflow defaults: an embedded sqlite store in the working directory, no server needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

EXPERIMENT_NAME = "clinfuse"


def default_tracking_uri(workdir: str | os.PathLike | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<workdir>/mlflow.db``."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(workdir or os.getcwd()).resolve() / 'mlflow.db'}"


def default_logger_config(workdir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``trainer.logger`` the CLI uses unless the config names another one."""
    root = Path(workdir or os.getcwd()).resolve()
    return {
        "class_path": "lightning.pytorch.loggers.MLFlowLogger",
        "init_args": {
            "experiment_name": EXPERIMENT_NAME,
            "tracking_uri": default_tracking_uri(root),
            "artifact_location": str(root / "mlartifacts"),
            "log_model": True,  # the checkpoints (best included) become run artifacts after fit
        },
    }


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Records the resolved CLI config as ``config.yaml`` in the MLflow run (any other logger: no-op)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 - Lightning hook
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                text = self.parser.dump(self.config, skip_none=False)
                logger.experiment.log_text(logger.run_id, text, "config.yaml")
