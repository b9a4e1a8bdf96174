"""Self-supervised forecasting pretraining of a time-series encoder (the "S" of STraTS).

Follows Tipirneni & Reddy, "Self-Supervised Transformer for Sparse and Irregularly Sampled
Multivariate Clinical Time-Series" (ACM TKDD 2022): the encoder reads a patient's observations up
to a cut-off time and a linear head predicts each variable's value in the ``forecast_hours`` after
it; the loss is the squared error over the variables observed there (values are already
normalised per variable by the reader). No labels are used. The cut-off is drawn per patient and
step uniformly between the patient's first and last observation times, so every patient yields
many tasks.

Usage (the encoder is trained in place, then fine-tuned with the task)::

    model = ClinFuseModule(spec=dm.spec, encoders={"timeseries": STraTSEncoder}, ...)
    pre = ForecastPretrainModule(model.encoders["timeseries"])
    pl.Trainer(max_epochs=10).fit(pre, datamodule=dm)
    pl.Trainer(...).fit(model, datamodule=dm)
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder


def forecast_targets(inputs: dict[str, torch.Tensor], cutoff: torch.Tensor, window: float, n_variables: int):
    """Split each patient's observations at ``cutoff``: what the encoder may read, and the mean value
    of each variable in ``[cutoff, cutoff + window)``.

    Returns:
        ``(encoder inputs, targets, target mask)``: the inputs with ``mask`` keeping only
        observations before the cut-off (``present`` False where none is left); the targets
        ``(B, V)`` (0 where unobserved) and their mask ``(B, V)`` (observed in the window).

    Shapes:
        - inputs: ``times``, ``variables``, ``values``, ``mask`` ``(B, T)``, ``present`` ``(B,)``; cutoff ``(B,)``
    """
    valid = inputs["mask"].bool() & inputs["present"][:, None]  # (B, T)
    times = inputs["times"].float()
    before = valid & (times < cutoff[:, None])  # (B, T)
    ahead = valid & (times >= cutoff[:, None]) & (times < cutoff[:, None] + window)  # (B, T)
    variables = torch.where(ahead, inputs["variables"].long(), 0)  # (B, T)
    values = torch.where(ahead, inputs["values"].float(), 0.0)  # (B, T)
    b = times.shape[0]
    sums = times.new_zeros(b, n_variables).scatter_add_(1, variables, values)  # (B, V)
    counts = times.new_zeros(b, n_variables).scatter_add_(1, variables, ahead.float())  # (B, V)
    seen = counts > 0
    encoder_inputs = {**inputs, "mask": before, "present": before.any(1)}
    return encoder_inputs, torch.where(seen, sums / counts.clamp(min=1), 0.0), seen


class ForecastPretrainModule(pl.LightningModule):
    """Trains ``encoder`` (any time-series encoder of the token contract) to forecast.

    The patient's representation is the masked mean of the encoder's output tokens; a linear head
    maps it to one value per variable. Patients with no observation before their cut-off or none
    in the window add nothing to the loss.

    Args:
        encoder: the time-series encoder to pretrain (trained in place; its ``n_variables`` and
            ``d_model`` size the head).
        forecast_hours: the forecast window after the cut-off (STraTS: 2 h).
        lr, weight_decay: AdamW.
        val_seed: validation draws its cut-offs from a generator seeded with this at the start of
            every validation run, so each epoch's validation loss (early stopping's monitor) is
            measured at the same cut-offs and the training's random stream is left alone; None:
            from the global random stream, like training.
    """

    def __init__(self, encoder: ModalityEncoder, forecast_hours: float = 2.0, lr: float = 1e-3,
                 weight_decay: float = 1e-4, val_seed: int | None = 0) -> None:
        super().__init__()
        if encoder.modality != "timeseries":
            raise ValueError(f"ForecastPretrainModule: needs a time-series encoder, got {type(encoder).__name__} "
                             f"(modality {encoder.modality!r})")
        if not forecast_hours > 0:
            raise ValueError(f"ForecastPretrainModule: forecast_hours must be > 0, got {forecast_hours}")
        self.encoder = encoder
        self.n_variables = int(encoder.n_variables)
        self.forecast_hours, self.lr, self.weight_decay = float(forecast_hours), lr, weight_decay
        self.head = nn.Linear(encoder.d_model, self.n_variables)
        self.val_seed = val_seed
        self._val_generator: torch.Generator | None = None

    def loss(self, inputs: dict[str, torch.Tensor], cutoff: torch.Tensor) -> torch.Tensor:
        """Masked mean squared forecasting error of one batch at the given cut-offs.

        Shapes:
            - inputs as :func:`forecast_targets`; cutoff ``(B,)``
        """
        enc_in, target, seen = forecast_targets(inputs, cutoff, self.forecast_hours, self.n_variables)
        toks = self.encoder(enc_in)
        m = toks.mask & toks.present[:, None]  # (B, N)
        pooled = (toks.tokens * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        seen = seen & enc_in["present"][:, None]  # (B, V) nothing to forecast from: no target
        err = (self.head(pooled) - target) ** 2 * seen  # (B, V)
        return err.sum() / seen.sum().clamp(min=1)

    def draw_cutoffs(self, inputs: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Per patient, uniform between its first and last observation time (0 without any),
        drawn from ``generator`` (default: the global random stream).

        Shapes:
            - returns ``(B,)``
        """
        valid = inputs["mask"].bool() & inputs["present"][:, None]
        times = inputs["times"].float()
        first = torch.where(valid, times, torch.inf).amin(1)
        last = torch.where(valid, times, -torch.inf).amax(1)
        has = valid.any(1)
        first, last = torch.where(has, first, 0.0), torch.where(has, last, 0.0)
        u = torch.rand(first.shape, generator=generator, dtype=first.dtype, device=first.device)  # (B,)
        return first + u * (last - first)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        if "timeseries" not in batch["inputs"]:
            raise ValueError(f"ForecastPretrainModule: the batch holds no time series (modalities "
                             f"{sorted(batch['inputs'])}); give it a data module that loads 'timeseries'")
        inputs = batch["inputs"]["timeseries"]
        loss = self.loss(inputs, self.draw_cutoffs(inputs, self._val_generator if stage == "val" else None))
        # per epoch (the mean over its batches) for both: what MLflow shows and early stopping reads
        self.log(f"pretrain/{stage}_loss", loss, prog_bar=True, on_step=False, on_epoch=True,
                 batch_size=inputs["mask"].shape[0])
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def on_validation_epoch_start(self) -> None:
        if self.val_seed is not None:
            self._val_generator = torch.Generator(device=self.device).manual_seed(self.val_seed)

    def on_validation_epoch_end(self) -> None:
        self._val_generator = None

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
