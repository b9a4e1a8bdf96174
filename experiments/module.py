"""The LightningModule: encoders -> modality dropout -> fusion head -> task head, loss and metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
import numpy as np
import torch
from torch import nn
from torchmetrics import CatMetric

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens, check_finite_tokens
from clinfuse.experiments.metrics import classification_metrics, harrell_c_index
from clinfuse.experiments.survival_curves import BreslowBaseline
from clinfuse.experiments.survival_metrics import curve_metrics, evaluation_times, time_dependent_auc, uno_c_index
from clinfuse.fusion.base import FusionHead, FusionOutput
from clinfuse.fusion.late import late_average
from clinfuse.fusion.modality_dropout import ModalityDropout
from clinfuse.fusion.survival_objective import SurvivalLoss, SurvivalObjective
from clinfuse.fusion.task_heads import Task, TaskHead

#: Builds an encoder from ``(d_model, spec)``; in YAML a ``class_path`` + ``init_args`` of the rest.
EncoderFactory = Callable[[int, dict], ModalityEncoder]
#: Builds a fusion head from ``(d_model, modalities)``.
FusionFactory = Callable[[int, list], FusionHead]

STAGES = ("train", "val", "test")


def monitor_for(task: str) -> str:
    """The validation metric that picks the best checkpoint of a task (higher is better)."""
    return "val/c_index" if task == "survival" else "val/auroc"


def _factory(value: Any, argument: str, what: str) -> Callable[..., nn.Module]:
    """An encoder / fusion-head class or factory: a registry name is looked up (``"masked_mean"``,
    ``"FTTransformerEncoder"``); a built module is refused, since the model builds its own from
    ``d_model`` and the data's spec."""
    from clinfuse.encoders.registry import ENCODER_CLASSES
    from clinfuse.fusion.registry import FUSION_HEADS

    names = FUSION_HEADS if what == "fusion head" else ENCODER_CLASSES
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"{argument}={value!r}: no such {what}; known: {sorted(names)}")
        return names[value]
    if isinstance(value, nn.Module):
        raise TypeError(f"{argument}: pass the {what} class (or a factory such as functools.partial(cls, ...)), "
                        f"not a built {type(value).__name__}: the model builds it from d_model and the data's spec")
    if not callable(value):
        raise TypeError(f"{argument}: expected a {what} class, factory or name, got {type(value).__name__} {value!r:.60}")
    return value


class ClinFuseModule(pl.LightningModule):
    """A multimodal model for one task, trained with modality dropout.

    Args:
        spec: modality -> input spec (formats.md section 3); normally linked from the data module
            by the CLI, and saved in the checkpoint so the model rebuilds without the data.
        d_model: token width shared by every encoder and the head.
        encoders: modality -> encoder class or factory, or its class name (``"FTTransformerEncoder"``).
            Modalities of ``spec`` not named here get the default encoder of
            ``clinfuse.encoders.registry.ENCODERS``.
        fusion: fusion-head class or factory ``(d_model, modalities) -> head``, or its name in
            ``clinfuse.fusion.registry.FUSION_HEADS`` (``"masked_mean"``); default ``TransformerFusion``.
        task: ``survival``, ``binary`` or ``multiclass``.
        n_classes: classes of the multiclass label (linked from the data module by the CLI).
        modality_dropout: per-modality drop probability during training (a float for all).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        head_dropout: dropout before the task read-out.
        step_loss_weight: when the head returns ``per_step`` states (sequential heads, auxiliary
            predictions after each stage), the task loss of the prediction read from every step is
            averaged and added with this weight.
        cox_ties: handling of tied event times in the Cox partial likelihood (survival task).
        survival_loss: ``cox`` (default), or a discrete-time loss on quantile bins of the training
            event times: ``logistic_hazard``, ``pmf`` or ``deephit`` (``SurvivalObjective``), or with
            competing causes (label ``cause``: 0 censored, 1..R) ``pmf_cr`` or ``deephit_cr``.
        n_time_bins: bins of the discrete-time losses.
        risk_memory: Cox only: recent (risk, time, event) samples kept to enlarge the risk sets of
            tiny batches during training (0 = off; see ``CoxRiskMemory``); emptied at the start of
            each training epoch, so it holds earlier batches of the same epoch only.
        n_causes: competing causes of the ``*_cr`` losses (linked from the data module's largest
            ``cause`` label by the CLI).
        censored_bin: discrete-time losses: a patient censored inside a time bin counts as
            surviving the ``whole`` bin (MCAT's convention, default) or the ``observed`` part of it
            (less biased when many are censored inside bins; ``SurvivalObjective``).
        encoder_weights: modality -> file written by ``clinfuse pretrain`` (or
            ``clinfuse.experiments.encoder_weights.save_encoder_weights``): that encoder starts from
            these weights (checked against its class, shapes and the data's spec), then trains.
    """

    def __init__(
        self,
        spec: dict[str, dict] | None = None,
        d_model: int = 64,
        encoders: dict[str, EncoderFactory] | None = None,
        fusion: FusionFactory | None = None,
        task: Task = "survival",
        n_classes: int = 2,
        modality_dropout: float | dict[str, float] = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        head_dropout: float = 0.1,
        step_loss_weight: float = 1.0,
        cox_ties: Literal["breslow", "efron"] = "breslow",
        survival_loss: SurvivalLoss = "cox",
        n_time_bins: int = 16,
        risk_memory: int = 0,
        n_causes: int = 1,
        censored_bin: Literal["whole", "observed"] = "whole",
        encoder_weights: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        # the starting weights are not a hyperparameter of the trained model: a checkpoint holds
        # its own weights and must rebuild (Prognosis.load) where the starting file is gone
        self.save_hyperparameters(ignore=["encoder_weights"])
        if not spec:
            raise ValueError(
                "ClinFuseModule needs the data's modality spec (dict modality -> spec); the CLI links it "
                "from data.spec, in Python pass ClinicalDataModule(...).spec"
            )
        from clinfuse.encoders.registry import ENCODERS
        from clinfuse.fusion.transformer import TransformerFusion

        # each would be accepted and then ignored or fail deep in torch: lr 0 never updates, a
        # negative step_loss_weight skips the step loss (it is added only when > 0)
        for name, value, ok, want in (("lr", lr, lr > 0, "> 0"), ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
                                      ("step_loss_weight", step_loss_weight, step_loss_weight >= 0, ">= 0"),
                                      ("head_dropout", head_dropout, 0 <= head_dropout < 1, "in [0, 1)")):
            if isinstance(value, bool) or not ok:
                raise ValueError(f"{name} must be {want}, got {value!r}")
        encoders = dict(encoders or {})
        unknown = sorted(set(encoders) - set(spec))
        if unknown:
            raise ValueError(
                f"the config names encoders for modalities {unknown} that the data does not have; "
                f"the data module provides {sorted(spec)}"
            )
        for m in spec:
            if m not in encoders:
                if m not in ENCODERS:
                    raise ValueError(f"no default encoder for modality {m!r}; name one under model.encoders")
                encoders[m] = ENCODERS[m]
            encoders[m] = _factory(encoders[m], f"encoders[{m!r}]", "encoder")
        self.modalities = list(spec)
        self.task = task
        self.n_classes = n_classes
        self.encoders = nn.ModuleDict({m: encoders[m](d_model, spec[m]) for m in self.modalities})
        self._load_encoder_weights(encoder_weights or {}, spec)
        self.fusion = _factory(fusion or TransformerFusion, "fusion", "fusion head")(d_model, self.modalities)
        if isinstance(modality_dropout, Mapping):  # a known modality this run does not load: no effect, say so
            idle = sorted(k for k in modality_dropout if k in ENCODERS and k not in self.modalities)
            if idle:
                rank_zero_warn(f"model.modality_dropout names {idle}, which this run does not load; "
                               f"their rates have no effect (loaded: {self.modalities})")
                modality_dropout = {k: v for k, v in modality_dropout.items() if k not in idle}
        # a name that is no modality at all (a typo) is an error, naming the loaded ones
        self.dropout = ModalityDropout(modality_dropout, modalities=self.modalities)
        self.objective = (
            SurvivalObjective(survival_loss, n_time_bins, cox_ties, risk_memory, n_causes=n_causes, censored_bin=censored_bin)
            if task == "survival" else None
        )
        n_outputs = self.objective.n_outputs if self.objective is not None else 1
        self.head = TaskHead(d_model, task, n_classes, dropout=head_dropout, n_outputs=n_outputs)
        self._collected = nn.ModuleDict(
            {f"{s}_preds": nn.ModuleDict({k: CatMetric() for k in ("out", "target", "time", "event", "raw", "cause")}) for s in STAGES}
        )

    def _load_encoder_weights(self, files: Mapping[str, str], spec: dict) -> None:
        from clinfuse.experiments.encoder_weights import load_encoder_weights

        unknown = sorted(set(files) - set(self.modalities))
        if unknown:
            raise ValueError(f"model.encoder_weights names modalities {unknown} that this run does not load "
                             f"(loaded: {self.modalities})")
        #: modality -> (weights file, its info): the statistics are compared with the data in
        #: setup(); the MLflow callback tags the fit's run with the file and its pretraining run
        self.pretrained_from: dict[str, tuple[str, dict]] = {}
        for m, path in files.items():
            info = load_encoder_weights(self.encoders[m], path, m, spec[m])
            self.pretrained_from[m] = (str(path), info)
            made = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in info.items() if not isinstance(v, (dict, list)))
            rank_zero_info(f"{m} encoder starts from {path}" + (f" ({made})" if made else ""))

    # ------------------------------------------------------------------ forward
    def encode(self, inputs: Mapping[str, Mapping[str, torch.Tensor]], check_finite: bool = True) -> dict[str, ModalityTokens]:
        """Run each modality's encoder; modalities missing from ``inputs`` are simply absent.

        Raises:
            ValueError: naming the modality and batch rows whose real tokens are not finite (NaN or
                infinite inputs at unmasked positions, or diverged weights), instead of letting
                NaN flow into the fusion head and the loss. ``check_finite=False`` leaves them to
                the caller (the prediction API gives such patients their own error).
        """
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown:
            raise ValueError(f"batch holds modalities {unknown} this model has no encoder for ({self.modalities})")
        tokens = {m: self.encoders[m](x) for m, x in inputs.items()}
        if check_finite:
            check_finite_tokens(tokens)
        return tokens

    def forward(self, inputs: Mapping[str, Mapping[str, torch.Tensor]]) -> tuple[torch.Tensor, FusionOutput]:
        """Predict from a batch's ``inputs`` dict.

        Returns:
            The task output (logits or log-risk) and the fusion head's output.

        Shapes:
            out: (B,) binary logit / survival log-risk, (B, C) multiclass logits.
        """
        tokens = self.encode(inputs)
        tokens = self.dropout(tokens)
        fused = self.fusion(tokens)
        if getattr(self.fusion, "late", False):  # late fusion: average per-modality predictions
            return late_average(self.head, fused, self.fusion.modalities), fused
        return self.head(fused.pooled), fused

    def risk(self, out: torch.Tensor) -> torch.Tensor:
        """The survival risk score of the task output (identity for other tasks).

        Shapes:
            out: (B,) or (B, K) -> (B,) for survival; unchanged otherwise.
        """
        return self.objective.risk(out) if self.objective is not None else out

    def setup(self, stage: str) -> None:
        """Check the data module serves the modalities the model was built for; discrete-time
        survival: fit the time bins on the data module's training split."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        data_spec = getattr(datamodule, "spec", None)
        if data_spec is not None and set(data_spec) != set(self.hparams.spec):
            # a modality the data lacks would be "absent" for every patient: trained, tested, all silently without it
            lacking, extra = sorted(set(self.hparams.spec) - set(data_spec)), sorted(set(data_spec) - set(self.hparams.spec))
            raise ValueError(
                f"the model was built for modalities {sorted(self.hparams.spec)}, the data module serves "
                f"{sorted(data_spec)} (lacking {lacking}, extra {extra}): build the model from this data module's "
                "spec (ClinFuseModule(spec=datamodule.spec, ...)) or load the same modalities"
            )
        if stage == "fit":
            self._warn_pretrained_statistics(getattr(datamodule, "cohort", None))
        if self.objective is None or self.objective.fitted:
            return
        cohort = getattr(datamodule, "cohort", None)
        if cohort is None:
            raise ValueError(
                f"survival_loss={self.objective.loss_name!r} needs time bins from the training split: fit "
                f"with a ClinicalDataModule, or call model.objective.fit_bins(train_time, train_event) first"
            )
        if self.objective.competing and "cause" not in cohort.labels.columns:
            raise ValueError(
                f"survival_loss={self.objective.loss_name!r} needs label(s) 'time' and 'event' and 'cause' "
                f"(0 = censored, 1..R); the cohort's labels.parquet has {sorted(cohort.labels.columns)}"
            )
        train = cohort.labels.set_index("patient_id").loc[list(cohort.splits["train"])]
        self.objective.fit_bins(torch.as_tensor(train["time"].to_numpy(float)), torch.as_tensor(train["event"].to_numpy(float)))

    def _warn_pretrained_statistics(self, cohort) -> None:  # noqa: ANN001 - a datasets.cohort.Cohort or None
        """Warn for each pretrained encoder whose pretraining data were standardised with other
        statistics than this cohort's training split
        (:func:`~clinfuse.experiments.encoder_weights.statistics_shift`)."""
        from clinfuse.experiments.encoder_weights import statistics_shift

        readers = getattr(cohort, "readers", None) or {}
        for m, (path, info) in getattr(self, "pretrained_from", {}).items():
            if m in readers:
                message = statistics_shift(info.get("statistics"), readers[m].state_dict()["fitted"], path, m)
                if message:
                    rank_zero_warn(message)

    def step_outputs(self, fused: FusionOutput) -> list[torch.Tensor]:
        """The task head read after every step of a sequential head (empty for other heads)."""
        return [self.head(state) for state in (fused.per_step or [])]

    # ------------------------------------------------------------------ loss
    def loss(self, out: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.task == "survival":
            return self.objective.loss(out, labels["time"], labels["event"], training=self.training, cause=labels.get("cause"))
        if self.task == "binary":
            return nn.functional.binary_cross_entropy_with_logits(out, labels["binary"].float())
        return nn.functional.cross_entropy(out, labels["multiclass"].long())

    def _check_labels(self, labels: Mapping[str, torch.Tensor]) -> None:
        """Raise ``ValueError`` when the batch lacks the labels of this module's task."""
        need = ("time", "event") if self.task == "survival" else (self.task,)
        if self.objective is not None and self.objective.competing:
            need = (*need, "cause")
        if any(k not in labels for k in need):
            raise ValueError(
                f"task {self.task!r} needs label(s) {' and '.join(repr(k) for k in need)}; the cohort's "
                f"labels.parquet has {sorted(labels)}"
            )

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        out, fused = self(batch["inputs"])
        labels = batch["labels"]
        self._check_labels(labels)
        loss = self.loss(out, labels)
        # the task loss alone, comparable across heads: `loss` adds step and auxiliary losses for some
        self.log(f"{stage}/task_loss", loss, on_step=False, on_epoch=True, batch_size=out.shape[0], sync_dist=True)
        steps = self.step_outputs(fused) if self.hparams.step_loss_weight > 0 else []
        if steps:
            step_loss = torch.stack([self.loss(o, labels) for o in steps]).mean()
            self.log(f"{stage}/step_loss", step_loss, on_step=False, on_epoch=True, batch_size=out.shape[0], sync_dist=True)
            loss = loss + self.hparams.step_loss_weight * step_loss
        if fused.aux_loss is not None:
            loss = loss + fused.aux_loss
        penalties = [p for p in (e.penalty() for e in self.encoders.values()) if p is not None]
        if penalties:  # parameter regularisers of the encoders (e.g. the genomics SNN's L1)
            penalty = torch.stack(penalties).sum()
            self.log(f"{stage}/penalty", penalty, on_step=False, on_epoch=True, batch_size=out.shape[0], sync_dist=True)
            loss = loss + penalty
        bs = out.shape[0]
        # sync_dist: under DDP the epoch mean covers every rank's batches (one all-reduce per epoch)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test", batch_size=bs, sync_dist=True)
        col = self._collected[f"{stage}_preds"]
        col["out"].update(self.risk(out).detach().float())
        if self.objective is not None and self.objective.discrete:  # for survival curves at epoch end
            col["raw"].update(out.detach().float())
        target = labels["event"] if self.task == "survival" else labels[self.task]
        col["target"].update(target.float())
        if self.task == "survival":  # only survival metrics read time/event; other cohorts may lack them
            col["time"].update(labels["time"].float())
            col["event"].update(labels["event"].float())
            if self.objective.competing:
                col["cause"].update(labels["cause"].float())
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out, _ = self(batch["inputs"])
        return {"patient_id": batch["patient_id"], "out": self.risk(out).detach().cpu()}

    # ------------------------------------------------------------------ epoch metrics
    def _epoch_metrics(self, stage: str) -> None:
        col = self._collected[f"{stage}_preds"]
        if col["out"].update_count == 0:
            return
        # CatMetric.compute() gathers across processes under DDP
        out, target = col["out"].compute(), col["target"].compute()
        if self.task == "survival":
            risk, time, event = (x.cpu().numpy() for x in (out, col["time"].compute(), col["event"].compute()))
            metrics = {"c_index": harrell_c_index(risk, time, event)}
            if self.objective.competing:
                metrics.update(self._cause_c_indices(stage, time))
            if stage != "train":
                metrics.update(self._ipcw_metrics(stage, risk, time, event))
        else:
            if self.task == "multiclass":
                out = out.reshape(-1, self.n_classes)
            metrics = classification_metrics(out.cpu(), target.cpu(), self.task, self.n_classes)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=stage == "val", sync_dist=False)
        for m in col.values():
            m.reset()

    def _cause_c_indices(self, stage: str, time: np.ndarray) -> dict[str, float]:
        """Cause-specific Harrell C (events of other causes count as censored): ``c_index_cause<r>``,
        ranking by the expected number of bins lost to cause ``r``, ``sum_k CIF_r(k)``."""
        col = self._collected[f"{stage}_preds"]
        raw = col["raw"].compute().reshape(-1, self.objective.n_outputs).cpu()
        cause = col["cause"].compute().cpu().numpy()
        cif = self.objective.cumulative_incidence(raw).sum(-1).numpy()  # (n, R)
        return {f"c_index_cause{r}": harrell_c_index(cif[:, r - 1], time, cause == r)
                for r in range(1, self.objective.n_causes + 1)}

    def _ipcw_metrics(self, stage: str, risk, time, event) -> dict[str, float]:
        """Uno's C-index, mean time-dependent AUC, integrated Brier score and the D-calibration
        p-value, with the censoring model of the train split (grid: ``evaluation_times``, clipped
        to the follow-up of both splits).

        Needs the training labels, read from the trainer's data module when it has a cohort; empty
        otherwise, or when a metric is undefined on this split (e.g. no event inside the grid).
        The curve metrics (``ibs``, ``d_calibration_p``) need S(t | x): discrete-time models read
        it from their bins; Cox models use a Breslow baseline fitted on this epoch's TRAINING
        outputs (train mode, so an approximation; available at validation during ``fit`` only;
        the after-fit report recomputes them on the test split with an eval-mode baseline).
        """
        cohort = getattr(getattr(self._trainer, "datamodule", None), "cohort", None) if self._trainer else None
        if cohort is None:
            return {}
        labels = cohort.labels.set_index("patient_id").loc[list(cohort.splits["train"])]
        train = (labels["time"].to_numpy(float), labels["event"].to_numpy(float))
        surv_fn = self._survival_function(stage, risk)
        try:
            times = evaluation_times(*train, time, event)
            # discrete-time curves may cross: score each time by 1 - S(t), not by one summary risk
            marker = 1.0 - surv_fn(times) if self.objective.discrete else risk
            metrics = {
                "uno_c_index": uno_c_index(train, (time, event), risk, tau=float(times[-1])),
                "td_auc": time_dependent_auc(train, (time, event), marker, times)[1],
            }
        except ValueError as err:  # undefined on this split (e.g. a sanity-check batch without events)
            rank_zero_warn(f"Uno C-index / time-dependent AUC not computed: {err}")
            return {}
        if surv_fn is not None:
            # a discrete model's curve is only held flat after its last finite bin end: the curve
            # metrics stop there
            horizon = float(self.objective.edges[-2]) if self.objective.discrete else None
            curves = curve_metrics(train, (time, event), surv_fn, times, horizon)
            metrics.update({k: v for k, v in curves.items() if np.isfinite(v)})
        return metrics

    def _survival_function(self, stage: str, risk: np.ndarray):
        """``times (T,) -> (n, T)`` survival of this epoch's ``stage`` patients, or None."""
        if self.objective.discrete:
            raw = self._collected[f"{stage}_preds"]["raw"].compute().reshape(-1, self.objective.n_outputs).cpu()
            return lambda t: self.objective.survival(raw, torch.as_tensor(t)).numpy()
        col = self._collected["train_preds"]
        if stage != "val" or col["out"].update_count == 0:
            return None
        tr = [col[k].compute().cpu().numpy() for k in ("out", "time", "event")]
        if tr[2].sum() == 0:
            return None
        baseline = BreslowBaseline().fit(*tr)
        return lambda t: baseline.survival(risk, t)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the global random streams, so that a fit resumed from this checkpoint continues them."""
        from clinfuse.experiments import rng_state

        checkpoint["clinfuse_rng"] = rng_state.capture()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the saved random streams for :meth:`on_train_start` (only a resumed fit sets them:
        loading a model for prediction leaves the caller's generators alone)."""
        self._resume_rng = checkpoint.get("clinfuse_rng")

    def on_train_start(self) -> None:
        """A resumed fit continues the checkpoint's random streams (modality dropout, slide patches)."""
        state = getattr(self, "_resume_rng", None)
        if state is not None:
            from clinfuse.experiments import rng_state

            rng_state.restore(state)
            self._resume_rng = None

    def on_train_epoch_start(self) -> None:
        """Empty the Cox risk memory: within an epoch every patient is seen once, so its risk sets
        never hold a stale copy of a patient (the event's own included) next to the current one."""
        if self.objective is not None and self.objective.memory is not None:
            self.objective.memory.reset()

    def on_train_epoch_end(self) -> None:
        self._epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")

    # ------------------------------------------------------------------ optimisation
    @property
    def monitor(self) -> str:
        """The validation metric used to pick the best checkpoint (higher is better)."""
        return monitor_for(self.task)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
