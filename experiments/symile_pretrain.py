"""Symile contrastive pretraining of the encoders, zero-shot retrieval, and the hand-over downstream.

Pretraining: each modality's encoder -> :class:`~clinfuse.fusion.symile.SymileFusion`
representations (a learned embedding where the patient lacks the modality) -> Symile loss (or the
pairwise-CLIP baseline) over the modalities to contrast. No labels are used.

Downstream: build a :class:`~clinfuse.experiments.module.ClinFuseModule` with the same ``d_model``
and encoders and ``fusion=SymileFusion``, then copy the pretrained weights in::

    pre = SymilePretrainModule(spec, d_model=64)
    ...  # trainer.fit(pre, datamodule)
    model = ClinFuseModule(spec, d_model=64, fusion=SymileFusion, task="survival")
    fresh = pre.load_into(model)  # the keys left as initialised: task head, pooling MLP, ...
    ...  # trainer.fit(model, datamodule)

:meth:`SymilePretrainModule.downstream_state` is the state dict that ``load_into`` copies (encoder
and projection weights and missing embeddings, under ClinFuseModule's key names), for saving.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.experiments.module import EncoderFactory
from clinfuse.fusion.symile import SymileFusion
from clinfuse.fusion.symile_loss import NegativeSampling, mip_scores, pairwise_clip_loss, symile_loss

Objective = Literal["symile", "pairwise_clip"]


def retrieve(reps: Mapping[str, torch.Tensor], target: str) -> torch.Tensor:
    """Score every candidate of ``target`` for each sample's other modalities by their MIP.

    ``scores[i, j] = MIP(reps[m1][i], reps[m2][i], ..., reps[target][j])`` over the modalities
    ``m1, m2, ...`` of ``reps`` other than ``target``; the true candidate of query ``i`` is ``j = i``.

    Shapes:
        - reps[m]: ``(N, D)``
        - returns: ``(N, N)``

    Raises:
        ValueError: ``target`` not in ``reps``, fewer than two modalities, or shapes that differ.
    """
    if target not in reps:
        raise ValueError(f"retrieve: target modality {target!r} not among the representations {sorted(reps)}")
    if len(reps) < 2:
        raise ValueError(f"retrieve needs the target and at least one query modality, got {sorted(reps)}")
    queries = [r for m, r in reps.items() if m != target]
    return mip_scores(queries, reps[target])  # (N, N)


def retrieval_accuracy(reps: Mapping[str, torch.Tensor], target: str) -> float:
    """Accuracy@1 of :func:`retrieve`: the share of queries whose top candidate is their own."""
    scores = retrieve(reps, target)  # (N, N)
    return (scores.argmax(1) == torch.arange(scores.shape[0], device=scores.device)).float().mean().item()


class SymilePretrainModule(pl.LightningModule):
    """Pretrain encoders with Symile on unlabeled multimodal batches, missing modalities included.

    Args:
        spec: modality -> input spec (formats.md section 3), as for ``ClinFuseModule``.
        d_model: token and representation width.
        encoders: modality -> encoder factory ``(d_model, spec) -> ModalityEncoder``; modalities not
            named get the default of ``clinfuse.encoders.registry.ENCODERS``.
        modalities: the modalities to contrast (at least two; default every modality of ``spec``).
            Others in a batch are ignored.
        negative_sampling: ``"n"`` or ``"n_squared"`` (see :func:`~clinfuse.fusion.symile_loss.symile_loss`).
        objective: ``"symile"``, or ``"pairwise_clip"`` (the mean CLIP loss over modality pairs).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        init_logit_scale: initial LOG of the learned logit scale (default ``log(1 / 0.07)``, CLIP's).
        dropout: dropout of the (downstream) pooling MLP of ``SymileFusion``.
    """

    def __init__(
        self,
        spec: dict[str, dict] | None = None,
        d_model: int = 64,
        encoders: dict[str, EncoderFactory] | None = None,
        modalities: list[str] | None = None,
        negative_sampling: NegativeSampling = "n",
        objective: Objective = "symile",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        init_logit_scale: float = math.log(1 / 0.07),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not spec:
            raise ValueError("SymilePretrainModule needs the data's modality spec (dict modality -> spec)")
        modalities = list(modalities or spec)
        unknown = sorted(set(modalities) - set(spec))
        if unknown:
            raise ValueError(f"modalities {unknown} are not in the spec, which has {sorted(spec)}")
        if len(set(modalities)) < 2:
            raise ValueError(f"Symile contrasts at least two modalities, got {modalities}")
        if negative_sampling not in ("n", "n_squared"):
            raise ValueError(f"negative_sampling must be 'n' or 'n_squared', got {negative_sampling!r}")
        if objective not in ("symile", "pairwise_clip"):
            raise ValueError(f"objective must be 'symile' or 'pairwise_clip', got {objective!r}")
        from clinfuse.encoders.registry import ENCODERS

        encoders = dict(encoders or {})
        unknown = sorted(set(encoders) - set(spec))
        if unknown:
            raise ValueError(f"encoders are given for modalities {unknown} that the spec lacks ({sorted(spec)})")
        for m in modalities:
            if m not in encoders and m not in ENCODERS:
                raise ValueError(f"no default encoder for modality {m!r}; pass one in encoders")
        self.modalities = modalities
        self.encoders = nn.ModuleDict({m: encoders.get(m, ENCODERS.get(m))(d_model, spec[m]) for m in modalities})
        self.fusion = SymileFusion(d_model, modalities, dropout=dropout)
        # the pooling MLP serves the downstream task only; pretraining leaves it as initialised
        self.fusion.mlp.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def setup(self, stage: str) -> None:
        """With a logger, Lightning merges this module's hyperparameters with the data module's and
        refuses a ``modalities`` that differs between them; say what to pass instead."""
        dm = getattr(self.trainer, "datamodule", None)
        theirs = getattr(dm, "hparams", {}).get("modalities", self.hparams["modalities"])
        if self.trainer.loggers and theirs != self.hparams["modalities"]:
            raise ValueError(
                f"the data module loads modalities {theirs or 'all'} but SymilePretrainModule got modalities="
                f"{self.hparams['modalities']}: pass the same list to both, e.g. ClinicalDataModule(..., "
                f"modalities={self.modalities}) (it then loads only these); Lightning's logger needs them to agree"
            )

    # ------------------------------------------------------------------ representations
    def encode(self, inputs: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, ModalityTokens]:
        """Tokens of the contrasted modalities the batch holds (others are ignored)."""
        return {m: self.encoders[m](inputs[m]) for m in self.modalities if m in inputs}

    def represent(
        self, inputs: Mapping[str, Mapping[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Unit-norm representations (missing embeddings where absent) and presence, per modality.

        Shapes:
            - returns: modality -> ``(B, D)`` and modality -> ``(B,)`` bool
        """
        tokens = self.encode(inputs)
        if not tokens:
            raise ValueError(
                f"the batch holds none of the modalities to contrast {self.modalities}; got {sorted(inputs)}"
            )
        return self.fusion.represent(tokens)

    def loss(self, reps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The pretraining objective on ``(B, D)`` representations of every contrasted modality."""
        ordered = [reps[m] for m in self.modalities]
        if self.hparams.objective == "pairwise_clip":
            return pairwise_clip_loss(ordered, self.logit_scale)
        return symile_loss(ordered, self.logit_scale, self.hparams.negative_sampling)

    # ------------------------------------------------------------------ Lightning
    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        reps, present = self.represent(batch["inputs"])
        loss = self.loss(reps)
        bs = next(iter(reps.values())).shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        if stage == "train":
            self.log("train/logit_scale", self.logit_scale.exp(), on_step=False, on_epoch=True, batch_size=bs)
        else:
            for m in self.modalities:  # retrieval among the batch's patients who have the target
                rows = present[m]
                if int(rows.sum()) >= 2:
                    acc = retrieval_accuracy({k: r[rows] for k, r in reps.items()}, m)
                    self.log(f"{stage}/acc@1_{m}", acc, on_step=False, on_epoch=True, batch_size=int(rows.sum()))
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def zero_shot_retrieval(self, batch_or_representations: Mapping[str, Any], target_modality: str) -> float:
        """Accuracy@1 of retrieving each patient's ``target_modality`` from its other modalities.

        Args:
            batch_or_representations: a batch (a dict with ``"inputs"``), encoded here in eval
                mode, keeping only the patients who have the target modality; or modality ->
                ``(N, D)`` representations, used as they are.
            target_modality: the modality to retrieve; candidates are the N patients' own.

        Returns:
            The share of patients whose own target representation scores highest (MIP).
        """
        if "inputs" in batch_or_representations:
            was_training = self.training
            self.eval()
            try:
                reps, present = self.represent(batch_or_representations["inputs"])
            finally:
                self.train(was_training)
            if target_modality not in reps:
                raise ValueError(
                    f"target modality {target_modality!r} is not contrasted by this model ({self.modalities})"
                )
            rows = present[target_modality]
            reps = {m: r[rows] for m, r in reps.items()}
        else:
            reps = dict(batch_or_representations)
        return retrieval_accuracy(reps, target_modality)

    # ------------------------------------------------------------------ downstream
    def downstream_state(self) -> dict[str, torch.Tensor]:
        """Pretrained weights under ``ClinFuseModule`` names (``encoders.*``, ``fusion.*``).

        Leaves out the logit scale and the pooling MLP (untouched by pretraining), so the state
        also fits a downstream ``SymileFusion`` over more modalities.
        """
        return {
            k: v.detach().clone()
            for k, v in self.state_dict().items()
            if k.startswith(("encoders.", "fusion.")) and not k.startswith("fusion.mlp.")
        }

    def load_into(self, model: nn.Module) -> list[str]:
        """Copy :meth:`downstream_state` into ``model`` (a ``ClinFuseModule`` with ``SymileFusion``).

        Returns:
            The keys of ``model`` left as they were (task head, pooling MLP, other modalities).

        Raises:
            ValueError: a pretrained key that ``model`` lacks or holds with another shape (a
                different fusion head, ``d_model`` or encoder).
        """
        state, target = self.downstream_state(), model.state_dict()
        bad = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape) if k in target else 'absent'}"
               for k, v in state.items() if k not in target or target[k].shape != v.shape]
        if bad:
            raise ValueError(
                f"{type(model).__name__} does not match the pretrained weights ({len(bad)} keys, e.g. {bad[:3]}); "
                "build it with fusion=SymileFusion and the same d_model and encoders"
            )
        model.load_state_dict(state, strict=False)
        return sorted(set(target) - set(state))
