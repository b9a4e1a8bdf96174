"""MLflow defaults: an embedded sqlite store in the working directory, no server needed; run names."""

from __future__ import annotations

import os
from datetime import datetime
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


class WorkdirMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` whose store defaults to the working directory *when the run starts*:
    ``tracking_uri`` None -> :func:`default_tracking_uri` (``MLFLOW_TRACKING_URI`` or
    ``./mlflow.db``), ``artifact_location`` None -> ``./mlartifacts``. The config a run logs then
    says ``null`` for both, so re-running it elsewhere logs there, not into the first run's folder."""

    def __init__(self, *args: Any, tracking_uri: str | None = None, artifact_location: str | None = None,
                 **kwargs: Any) -> None:
        tracking_uri = tracking_uri or default_tracking_uri()
        if artifact_location is None and tracking_uri.startswith("sqlite:///"):
            artifact_location = str(Path.cwd().resolve() / "mlartifacts")
        super().__init__(*args, tracking_uri=tracking_uri, artifact_location=artifact_location, **kwargs)

    def log_hyperparams(self, params: Any) -> None:
        """Lightning's, but a fit resumed into an existing run (``run_id``) with other
        hyperparameters gets a ValueError saying which changed and what to do instead of MLflow's
        bare exception (MLflow params cannot change). Raised before any training step."""
        from mlflow.exceptions import MlflowException

        try:
            super().log_hyperparams(params)
        except MlflowException as err:
            if "Changing param values is not allowed" not in str(err):
                raise
            raise ValueError(
                f"MLflow run {self.run_id} already holds other values of this fit's hyperparameters "
                f"({err.message}); MLflow params cannot change. To fit on with new hyperparameters, "
                "leave out --trainer.logger.init_args.run_id: --ckpt_path still continues from the "
                "checkpoint, in a new run tagged clinfuse.trained_in_run; or resume with the run's own values."
            ) from None


def default_logger_config() -> dict[str, Any]:
    """The ``trainer.logger`` the CLI uses unless the config names another one: a
    :class:`WorkdirMLFlowLogger` (no paths in the config; they are resolved when the run starts)."""
    return {
        "class_path": "clinfuse.experiments.tracking.WorkdirMLFlowLogger",
        "init_args": {
            "experiment_name": EXPERIMENT_NAME,
            "log_model": True,  # the checkpoints (best included) become run artifacts after fit
        },
    }


def fusion_name(fusion: Any) -> str:
    """The fusion head's registry name (``masked_mean``, ``transformer``, ...); for a head outside
    the registry its class name without ``Fusion``, lower case."""
    from clinfuse.fusion.registry import FUSION_HEADS

    for name, cls in FUSION_HEADS.items():
        if type(fusion) is cls:
            return name
    return type(fusion).__name__.removesuffix("Fusion").lower() or "fusion"


def run_name(model: Any, run_id: str, stage: str = "fit", now: datetime | None = None) -> str:
    """``<fusion head>-<task>[-<survival loss>][-<stage>]-<MMDD-HHMMSS>-<run id[:4]>``, e.g.
    ``transformer-survival-cox-0612-153012-9f1c`` (the stage only when it is not ``fit``; the run id
    keeps names of runs started in the same second apart)."""
    hp = model.hparams
    parts = [fusion_name(model.fusion), str(hp.get("task", "model"))]
    if hp.get("task") == "survival" and hp.get("survival_loss"):
        parts.append(str(hp["survival_loss"]))
    if stage != "fit":
        parts.append(stage)
    return "-".join([*parts, (now or datetime.now()).strftime("%m%d-%H%M%S"), run_id[:4]])


def name_run(logger: MLFlowLogger, model: Any, stage: str = "fit") -> None:
    """Give the logger's run a :func:`run_name` unless it has one of its own.

    MLflow names an unnamed run from Python's ``random``, which ``seed_everything`` seeds: every
    seeded fit would get the same name. Kept as they are: a name given to the logger (``run_name``
    or a ``mlflow.runName`` tag, as ``clinfuse sweep`` sets for its trials) and a run that already
    holds params or metrics (one resumed with ``run_id``). The run exists by now (Lightning creates
    it before any callback's ``setup``), so it is renamed.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    if logger._run_name is not None or MLFLOW_RUN_NAME in (logger.tags or {}):
        return
    client = logger.experiment
    run = client.get_run(logger.run_id)
    if run.data.params or run.data.metrics:
        return
    client.update_run(logger.run_id, name=run_name(model, logger.run_id, stage))


def log_run_facts(logger: MLFlowLogger, trainer: Any) -> None:
    """Params the hyperparameters do not show: the modalities actually loaded (``data.modalities``
    is None for "all"), the patients per split and ``trainer.max_epochs``. A resumed run that
    already holds other values keeps them (MLflow params cannot change)."""
    from mlflow.exceptions import MlflowException

    facts: dict[str, Any] = {"trainer.max_epochs": trainer.max_epochs}
    dm = getattr(trainer, "datamodule", None)
    root = str(getattr(dm, "root", "") or "")
    if root and not root.startswith("builtin:"):  # the config holds it as typed (often relative)
        facts["data.root_resolved"] = str(Path(root).resolve())
    cohort = getattr(dm, "_cohort", None)  # loaded by the data module's setup, before callbacks' setup
    if cohort is not None:
        facts["data.loaded_modalities"] = ",".join(cohort.modalities)
        facts.update({f"data.n_{split}": len(ids) for split, ids in cohort.splits.items()})
    for key, value in facts.items():
        try:
            logger.experiment.log_param(logger.run_id, key, value)
        except MlflowException:  # resumed with another value: the first one stays
            pass
    for key, value in code_version().items():
        logger.experiment.set_tag(logger.run_id, key, value)
    # encoders started from a weights file (model.encoder_weights): the file, and the MLflow run
    # of the `clinfuse pretrain` that wrote it, so the fit's run leads to its pretraining
    module = getattr(trainer, "lightning_module", None)
    for m, (path, info) in (getattr(module, "pretrained_from", None) or {}).items():
        logger.experiment.set_tag(logger.run_id, f"clinfuse.encoder_weights.{m}", str(Path(path).resolve()))
        if info.get("mlflow_run_id"):
            logger.experiment.set_tag(logger.run_id, f"clinfuse.encoder_weights.{m}.run_id", info["mlflow_run_id"])


def code_version() -> dict[str, str]:
    """MLflow's source tags for the clinfuse code that runs: its git commit (with ``-dirty`` when
    tracked files differ from it) when the package is a git checkout, and its version. MLflow sets
    the commit itself only for runs it starts from a script in a repository, not for a logger's runs."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    tags = {}
    try:
        tags["clinfuse.version"] = version("clinfuse")
    except PackageNotFoundError:
        pass
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout (an installed wheel)
        return tags
    tags[MLFLOW_GIT_COMMIT] = commit + ("-dirty" if dirty else "")
    return tags


def config_artifact_name(client: Any, run_id: str) -> str:
    """``config.yaml``, or ``config-resumed-<k>.yaml`` (the next free ``k``) when the run holds one
    already: a fit resumed into the same run (``--trainer.logger.init_args.run_id``) keeps the config
    the run was started with and records its own next to it."""
    names = {f.path for f in client.list_artifacts(run_id)}
    if "config.yaml" not in names:
        return "config.yaml"
    k = 1
    while f"config-resumed-{k}.yaml" in names:
        k += 1
    return f"config-resumed-{k}.yaml"


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Names the MLflow run (:func:`name_run`) and records the resolved CLI config as
    ``config.yaml`` in it (``config-resumed-<k>.yaml`` in a run that has one: :func:`config_artifact_name`;
    any other logger: no-op)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 - Lightning hook
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                name_run(logger, pl_module, stage)
                text = self.parser.dump(self.config, skip_none=False)
                name = config_artifact_name(logger.experiment, logger.run_id)
                logger.experiment.log_text(logger.run_id, text, name)
                log_run_facts(logger, trainer)
