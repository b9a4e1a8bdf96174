"""MultiModN-style sequential fusion: one module per modality updates a shared state in turn.

After Swamy et al., "MultiModN — Multimodal, Multi-Task, Interpretable Modular Networks"
(NeurIPS 2023). A state vector starts from a learned initial state; each modality's module reads
that modality's tokens and the current state and writes a new state. A patient lacking a modality
skips that step (its state passes through unchanged) while the rest of the batch is updated, so a
missing modality never injects anything -- not even zeros -- into a patient's state. Because the
state after every step is returned, a task decoder can be read after each step (an interpretable
trajectory of predictions, see :func:`step_predictions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.base import FusionHead, FusionOutput


class _ModalityStep(nn.Module):
    """One modality's state update: per-token MLP, masked mean, GRU-gated update of the state."""

    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.read = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU())
        self.dropout = nn.Dropout(dropout)
        self.cell = nn.GRUCell(d_model, d_model)

    def forward(self, toks: ModalityTokens, state: torch.Tensor) -> torch.Tensor:
        """The updated state of every patient (callers keep the old state for absent ones).

        Shapes:
            - toks.tokens: ``(B, N, D)``, toks.mask: ``(B, N)``, state: ``(B, D)``
            - returns ``(B, D)``
        """
        mask = (toks.mask & toks.present[:, None])[..., None]  # (B, N, 1)
        # zero padding BEFORE the MLP too, so NaN/inf padding cannot reach a gradient
        x = torch.where(mask, toks.tokens, torch.zeros_like(toks.tokens))  # (B, N, D)
        h = torch.where(mask, self.read(x), torch.zeros_like(x))  # (B, N, D)
        summary = h.sum(1) / mask.sum(1).clamp(min=1).to(h.dtype)  # (B, D)
        return self.cell(self.dropout(summary), state)  # (B, D)


class MultiModNFusion(FusionHead):
    """Sequential fusion: a state updated by one module per modality, skipped per patient.

    The state starts from a learned vector ``initial_state``. For each modality in the step order,
    that modality's module (per-token MLP, masked mean over real tokens, ``nn.GRUCell`` whose gates
    see both the summary and the state) proposes a new state; patients who have the modality take
    it, patients who lack it keep their previous state (``torch.where`` per sample, never a skip of
    the whole batch). A modality omitted from the input dict is a step that nobody takes, so every
    forward has exactly ``M`` steps.

    Outputs:
        - ``pooled``: the final state.
        - ``per_step``: ``[initial state, state after step 1, ..., after step M]`` (``M + 1``
          tensors), in the step order used; feed it to :func:`step_predictions`.
        - ``per_modality[m]``: the state right after ``m``'s step for patients who have ``m``;
          zero for patients who lack it (the conformance contract for absent modalities; their
          state at that step is ``per_step`` at the same position, i.e. unchanged).
        - ``extras["step_order"]``: ``(M,)`` long indices into ``modalities`` of the step order;
          the same order as names is kept in the attribute ``last_order``.
        - ``aux_loss``: ``state_change_penalty`` times the mean, over the (step, patient) pairs
          that were updated, of ``||s_t - s_{t-1}||^2``; None when the penalty is 0.

    Args:
        d_model: width ``D`` of tokens and state.
        modalities: the modality names this head accepts.
        order: the fixed step order, a permutation of ``modalities``; default ``modalities``.
        shuffle_order: draw a random step order (``torch.randperm``, global RNG) on every forward
            in training mode; eval mode always uses ``order``.
        state_change_penalty: weight of the state-change penalty returned as ``aux_loss``.
        dropout: dropout on each modality's summary before the state update.
    """

    def __init__(
        self,
        d_model: int,
        modalities: Sequence[str],
        order: list[str] | None = None,
        shuffle_order: bool = False,
        state_change_penalty: float = 0.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(d_model, modalities)
        self.order = self.check_order(order)
        if state_change_penalty < 0:
            raise ValueError(f"MultiModNFusion: state_change_penalty must be >= 0, got {state_change_penalty}")
        self.shuffle_order = shuffle_order
        self.state_change_penalty = float(state_change_penalty)
        self.initial_state = nn.Parameter(torch.randn(d_model) * 0.02)
        # a ModuleList indexed like ``modalities`` (ModuleDict rejects names containing '.')
        self.steps = nn.ModuleList(_ModalityStep(d_model, dropout) for _ in self.modalities)
        #: the step order (modality names) used by the most recent forward; None before any
        self.last_order: list[str] | None = None

    def step_order(self) -> list[str]:
        """The step order for the next forward: shuffled in training if ``shuffle_order``."""
        if self.training and self.shuffle_order:
            return [self.order[i] for i in torch.randperm(len(self.order)).tolist()]
        return list(self.order)

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """Run the modality steps in order, skipping each patient's missing modalities.

        Args:
            inputs: modality -> tokens; absent modalities may be omitted or have ``present=False``.

        Returns:
            ``pooled`` (final state), ``per_step`` (``M + 1`` states), ``per_modality`` (one entry
            per modality of the head), ``extras["step_order"]`` and the optional ``aux_loss``.

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - pooled, every per_step and per_modality value: ``(B, D)``
            - extras["step_order"]: ``(M,)`` long
        """
        b = self.check_inputs(inputs)
        ref = self.reference(inputs)
        order = self.step_order()
        state = self.initial_state.expand(b, -1)  # (B, D)
        per_step, per_modality = [state], {}
        change_sum, n_changed = ref.new_zeros(()), 0
        for name in order:
            toks = inputs.get(name)
            if toks is None or not bool(toks.present.any()):
                per_modality[name] = ref.new_zeros(b, self.d_model)
                per_step.append(state)
                continue
            present = toks.present[:, None]  # (B, 1)
            proposed = self.steps[self.modalities.index(name)](toks, state)  # (B, D)
            new = torch.where(present, proposed, state)  # (B, D): absent patients keep their state
            if self.state_change_penalty > 0:
                sq = (new - state).square().sum(1)  # (B,), zero where absent
                change_sum = change_sum + sq.sum()
                n_changed += int(toks.present.sum())
            per_modality[name] = torch.where(present, new, torch.zeros_like(new))  # (B, D)
            state = new
            per_step.append(state)
        self.last_order = order
        step_order = torch.tensor([self.modalities.index(m) for m in order], dtype=torch.long, device=ref.device)
        aux = None
        if self.state_change_penalty > 0:
            aux = self.state_change_penalty * change_sum / max(n_changed, 1)
        return FusionOutput(
            pooled=state,
            per_modality={m: per_modality[m] for m in self.modalities},
            per_step=per_step,
            aux_loss=aux,
            extras={"step_order": step_order},
        )


def step_predictions(output: FusionOutput, decoder: nn.Module) -> torch.Tensor:
    """The decoder's prediction after every step of a sequential head (the trajectory).

    Args:
        output: a :class:`FusionOutput` with ``per_step`` (e.g. from :class:`MultiModNFusion`).
        decoder: maps a ``(B, D)`` state to ``(B, ...)`` predictions (e.g. the task head).

    Returns:
        ``decoder(per_step[t])`` stacked on dim 1; ``[:, 0]`` is the prediction from the initial
        state (no data), ``[:, -1]`` the prediction from the final state.

    Shapes:
        - output.per_step: ``S`` tensors ``(B, D)`` (``S = M + 1`` for MultiModN)
        - returns ``(B, S, ...)``

    Raises:
        ValueError: ``output.per_step`` is None or empty (the head is not sequential).
    """
    if not output.per_step:
        raise ValueError("step_predictions: output.per_step is empty; the fusion head is not sequential")
    return torch.stack([decoder(s) for s in output.per_step], dim=1)  # (B, S, ...)
