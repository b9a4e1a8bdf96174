"""A FIFO memory of recent (risk, time, event) triples that widens Cox risk sets for tiny batches.

With a whole-slide-image batch of one or two patients the Cox partial likelihood of the batch is
degenerate (a single sample is its own risk set: loss 0). :class:`CoxRiskMemory` keeps the last
``size`` detached risk scores with their times and events and adds them to the risk sets of the
current batch.

This is an approximation: the remembered risks were produced by OLDER parameters (stale), and they
carry no gradient, so only the current batch's samples are pushed apart from them. Remembered
samples also never contribute their own event terms (they had their turn when they were current).
``ClinFuseModule`` empties the memory at the start of every training epoch, so it only ever holds
other patients of the same epoch (without that, a memory longer than the training split would hold
several stale copies of each patient, the current event's own among them).
The exact alternative is gradient accumulation over a larger effective batch, computing the Cox loss
once on the concatenated risks before ``backward`` (e.g. collect the risks of several forward passes,
or use a small-memory encoder so that a larger batch fits).
"""

from __future__ import annotations

import torch

from clinfuse.fusion.losses import cox_ph_loss


class CoxRiskMemory:
    """Cox loss of the current batch against risk sets enlarged by a memory of recent samples.

    Plain object (not an ``nn.Module``): the memory is training state, not a parameter, and is not
    saved in checkpoints. Its tensors follow the device / dtype of the incoming ``risk``.

    Args:
        size: the most samples kept; the oldest are dropped first (FIFO).

    Example:
        >>> memory = CoxRiskMemory(size=256)
        >>> loss = memory.loss(risk, time, event)  # then pushes (risk.detach(), time, event)
    """

    def __init__(self, size: int = 1024) -> None:
        if size < 0:
            raise ValueError(f"CoxRiskMemory: size must be >= 0, got {size}")
        self.size = size
        self.reset()

    def reset(self) -> None:
        """Empty the memory (e.g. at the start of each epoch, or after a large parameter change)."""
        self.risk = torch.empty(0)
        self.time = torch.empty(0)
        self.event = torch.empty(0)

    def __len__(self) -> int:
        return int(self.risk.numel())

    def push(self, risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> None:
        """Append a batch (risk detached) and keep only the newest ``size`` samples.

        Shapes:
            risk, time, event: (B,)
        """
        self._check(risk, time, event)
        dev, dt = risk.device, risk.dtype
        self.risk = torch.cat([self.risk.to(dev, dt), risk.detach().to(dt)])[-self.size :]
        self.time = torch.cat([self.time.to(dev, time.dtype), time.detach()])[-self.size :]
        self.event = torch.cat([self.event.to(dev, dt), event.detach().to(dt)])[-self.size :]
        if self.size == 0:
            self.reset()

    def loss(
        self,
        risk: torch.Tensor,
        time: torch.Tensor,
        event: torch.Tensor,
        update: bool = True,
    ) -> torch.Tensor:
        """Negative Breslow partial log-likelihood of the batch's events, averaged over them.

        Each event ``i`` of the current batch has the risk set ``{j in batch + memory : time_j >=
        time_i}``; memory risks are detached (no gradient). With an empty memory this is exactly
        :func:`cox_ph_loss`. When the batch has no event the loss is ``0 * risk.sum()``.

        Args:
            risk, time, event: the current batch (as in :func:`cox_ph_loss`).
            update: push the batch into the memory afterwards (turn off for validation).

        Shapes:
            risk, time, event: (B,) -> scalar
        """
        self._check(risk, time, event)
        mem_n = len(self)
        all_risk = torch.cat([risk, self.risk.to(risk.device, risk.dtype)])
        all_time = torch.cat([time, self.time.to(time.device, time.dtype)])
        # only the CURRENT batch's events are terms of the likelihood; memory enlarges risk sets
        all_event = torch.cat([event.to(risk.dtype), risk.new_zeros(mem_n)])
        out = cox_ph_loss(all_risk, all_time, all_event)  # Breslow
        if update:
            self.push(risk, time, event)
        return out

    @staticmethod
    def _check(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> None:
        if not (risk.shape == time.shape == event.shape) or risk.dim() != 1:
            raise ValueError(
                f"CoxRiskMemory wants risk, time, event of one shape (B,), got "
                f"{tuple(risk.shape)}, {tuple(time.shape)}, {tuple(event.shape)}"
            )
