"""UTDE: irregular time series to reference-time tokens, gating mTAN interpolation and LOCF imputation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens, upcast_half
from clinfuse.encoders.strats import clean_triplets
from clinfuse.encoders.timeseries import TimeSeriesTripletEncoder


def last_observation_carried_forward(
    reference: torch.Tensor,
    valid: torch.Tensor,
    times: torch.Tensor,
    variables: torch.Tensor,
    values: torch.Tensor,
    n_variables: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per reference time and variable: the last value observed at or before it (LOCF).

    Among several observations of a variable at the same time the later one in the sequence wins.
    Where a variable has not been observed yet, the value is 0 (the training mean, values being
    normalised) and the ``seen`` flag is False, so the fill is never silent.

    Args:
        reference: ``(R,)`` reference times in hours.
        valid: ``(B, T)`` bool, True = a real observation.
        times, variables, values: ``(B, T)`` observations; padding must already hold finite fills.
        n_variables: ``V``.

    Returns:
        ``value (B, R, V)``, ``seen (B, R, V)`` bool, ``age (B, R, V)`` hours since that observation
        (0 where not seen).

    Example:
        >>> v, seen, age = last_observation_carried_forward(
        ...     torch.tensor([0.0, 2.0]), torch.tensor([[True]]), torch.tensor([[1.0]]),
        ...     torch.tensor([[0]]), torch.tensor([[5.0]]), 1)
        >>> v[0, :, 0].tolist(), seen[0, :, 0].tolist(), age[0, :, 0].tolist()
        ([0.0, 5.0], [False, True], [0.0, 1.0])
    """
    b, t_len = times.shape
    r_len = reference.shape[0]
    # rank of each observation in time order (stable: ties keep sequence order; padding last)
    order = torch.sort(torch.where(valid, times, float("inf")), dim=1, stable=True).indices  # (B, T)
    positions = torch.arange(t_len, device=times.device).expand(b, -1)  # (B, T)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # (B, T)
    eligible = valid[:, None, :] & (times[:, None, :] <= reference[None, :, None])  # (B, R, T)
    candidate = torch.where(eligible, rank[:, None, :], -1)  # (B, R, T)
    slot = variables[:, None, :].expand(-1, r_len, -1)  # (B, R, T)
    last = torch.full((b, r_len, n_variables), -1, dtype=rank.dtype, device=times.device)
    last = last.scatter_reduce(2, slot, candidate, reduce="amax", include_self=True)  # (B, R, V)
    seen = last >= 0
    index = order.gather(1, last.clamp_min(0).reshape(b, -1))  # (B, R * V) observation positions
    value = torch.where(seen, values.gather(1, index).reshape(b, r_len, n_variables), 0.0)  # (B, R, V)
    when = times.gather(1, index).reshape(b, r_len, n_variables)  # (B, R, V)
    age = torch.where(seen, reference[None, :, None] - when, 0.0)  # (B, R, V)
    return value, seen, age


class LearnedTimeEmbedding(nn.Module):
    """mTAN time embedding ``phi(t) = [w0 t / horizon + b0, sin(w_i t + b_i)]`` with learned w, b.

    Frequencies start at periods spaced geometrically from 1 h to ``4 * horizon`` (a learnable
    initialisation that resolves both hours and the whole stay).

    Args:
        dim: embedding width (>= 2).
        horizon: hours that scale the linear component.
    """

    def __init__(self, dim: int, horizon: float) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"LearnedTimeEmbedding: dim must be >= 2, got {dim}")
        self.horizon = horizon
        periods = torch.logspace(0.0, math.log10(4 * max(horizon, 1.0)), dim - 1)
        self.linear = nn.Linear(1, 1)
        self.frequency = nn.Parameter(2 * math.pi / periods)
        self.phase = nn.Parameter(torch.zeros(dim - 1))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Shapes: ``t (...)`` hours -> ``(..., dim)``."""
        periodic = torch.sin(t[..., None] * self.frequency + self.phase)  # (..., dim - 1)
        return torch.cat([self.linear((t / self.horizon)[..., None]), periodic], dim=-1)  # (..., dim)


class MultiTimeAttention(nn.Module):
    """mTAN multi-time attention: each reference time attends to each variable's OWN observations.

    ``x_hat[h, r, v] = sum_j softmax_j(q_h(r) . k_h(t_j) / sqrt(E)) x_j`` over the observations ``j``
    of variable ``v`` only (Shukla & Marlin, ICLR 2021). A variable without observations gets 0 and
    ``observed`` False (masked fill, no 0/0). Vectorised with per-variable scatter reductions over the
    ``(B, H, R, T)`` score tensor, so memory does not grow with ``V``.

    Args:
        d_time: time-embedding width.
        n_heads: attention heads ``H`` (each gives its own interpolation).
        d_key: query/key width ``E`` per head.
        horizon: hours (scales the linear time component).
    """

    def __init__(self, d_time: int, n_heads: int, d_key: int, horizon: float) -> None:
        super().__init__()
        self.n_heads, self.d_key = n_heads, d_key
        self.embed = LearnedTimeEmbedding(d_time, horizon)
        self.query = nn.Linear(d_time, n_heads * d_key)
        self.key = nn.Linear(d_time, n_heads * d_key)

    def forward(
        self,
        reference: torch.Tensor,
        valid: torch.Tensor,
        times: torch.Tensor,
        variables: torch.Tensor,
        values: torch.Tensor,
        n_variables: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Interpolate every variable at every reference time.

        Returns:
            ``x_hat (B, R, H, V)`` and ``observed (B, V)`` bool (the variable has any observation).

        Shapes:
            - reference: ``(R,)``; valid, times, variables, values: ``(B, T)`` (finite fills at padding)
        """
        b, t_len = times.shape
        r_len, h, v = reference.shape[0], self.n_heads, n_variables
        q = self.query(self.embed(reference)).view(r_len, h, self.d_key)  # (R, H, E)
        k = self.key(self.embed(times)).view(b, t_len, h, self.d_key)  # (B, T, H, E)
        score = upcast_half(torch.einsum("rhe,bthe->bhrt", q, k)) / math.sqrt(self.d_key)  # (B, H, R, T)
        keep = valid[:, None, None, :].expand_as(score)  # (B, H, R, T)
        slot = variables[:, None, None, :].expand_as(score)  # (B, H, R, T)
        # per-variable max for a stable softmax (a constant shift, so no gradient needed)
        floor = torch.finfo(score.dtype).min
        peak = torch.full((b, h, r_len, v), floor, dtype=score.dtype, device=score.device)
        peak = peak.scatter_reduce(-1, slot, torch.where(keep, score, floor).detach(), reduce="amax")  # (B, H, R, V)
        shifted = torch.where(keep, score - peak.gather(-1, slot), 0.0)  # (B, H, R, T), <= 0 where kept
        weight = torch.where(keep, shifted.exp(), 0.0)  # (B, H, R, T) unnormalised
        zeros = torch.zeros(b, h, r_len, v, dtype=score.dtype, device=score.device)
        numerator = zeros.scatter_add(-1, slot, weight * values[:, None, None, :])  # (B, H, R, V)
        denominator = zeros.scatter_add(-1, slot, weight)  # (B, H, R, V), >= 1 for observed variables
        count = torch.zeros(b, v, dtype=score.dtype, device=score.device).scatter_add(1, variables, valid.to(score.dtype))
        observed = count > 0  # (B, V)
        obs = observed[:, None, None, :]  # (B, 1, 1, V)
        x_hat = torch.where(obs, numerator / torch.where(obs, denominator, 1.0), 0.0)  # (B, H, R, V)
        return x_hat.permute(0, 2, 1, 3), observed  # (B, R, H, V)


class UTDEEncoder(ModalityEncoder):
    """Unified Time-Discretization Embedding (UTDE) of irregular time series into reference-time tokens.

    Follows Zhang et al., "Improving Medical Predictions by Irregular Multimodal Electronic Health
    Records Modeling", ICML 2023, with mTAN time attention (Shukla & Marlin, ICLR 2021).

    At ``R`` reference times evenly spaced over ``[0, horizon_hours]`` two embeddings are built:

    - mTAN: :class:`MultiTimeAttention` interpolates each variable from its own observations
      (``H`` heads), concatenated with a per-variable "observed at all" flag, then an MLP;
    - imputation: per variable the last value carried forward, a "seen yet" flag and the hours since
      that observation (divided by the horizon), then an MLP (:func:`last_observation_carried_forward`).

    A learned scalar gate per reference time, ``g = sigmoid(MLP([mtan, imputation]))``, mixes them as
    ``g * mtan + (1 - g) * imputation``; a learned position embedding of the reference index is added
    and a small transformer runs over the ``R`` tokens.

    Mask rule: all ``R`` reference tokens of a patient are real as soon as the patient has at least one
    observation (``mask & present`` anywhere), and all are masked when it has none (absent or empty).
    Reference tokens before a variable's first observation stay real: the "seen" flag tells the model.
    Output ``times`` are the reference times. Observations after the horizon feed the interpolation but
    never the carry-forward (no reference time lies after them).

    Args:
        d_model: width ``D`` of each token.
        spec: ``{"variables": [...], "horizon_hours": float}`` (``docs/formats.md`` section 3).
        n_reference: number ``R`` of reference times (>= 2).
        time_heads: mTAN attention heads ``H``.
        d_time: width of the learned time embedding.
        d_key: mTAN query/key width per head.
        n_layers: transformer layers over the reference tokens.
        n_heads: transformer attention heads (must divide ``d_model``).
        dropout: dropout after mixing and inside the transformer.
        ff_mult: feed-forward width of the transformer as a multiple of ``d_model``.
    """

    modality = "timeseries"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_reference: int = 16,
        time_heads: int = 4,
        d_time: int = 16,
        d_key: int = 16,
        n_layers: int = 1,
        n_heads: int = 4,
        dropout: float = 0.1,
        ff_mult: int = 2,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "variables", "horizon_hours")
        self.n_variables = len(spec["variables"])
        self.horizon = float(spec["horizon_hours"])
        name = type(self).__name__
        if self.n_variables == 0:
            raise ValueError(f"{name}: the spec lists no variables")
        if not self.horizon > 0:
            raise ValueError(f"{name}: spec horizon_hours must be > 0, got {self.horizon}")
        if n_reference < 2 or time_heads < 1 or n_layers < 1:
            raise ValueError(f"{name}: need n_reference >= 2, time_heads >= 1, n_layers >= 1")
        if d_model % n_heads:
            raise ValueError(f"{name}: n_heads={n_heads} must divide d_model={d_model}")
        v = self.n_variables
        self.register_buffer("reference", torch.linspace(0.0, self.horizon, n_reference), persistent=False)
        self.time_attention = MultiTimeAttention(d_time, time_heads, d_key, self.horizon)
        self.mtan_mlp = nn.Sequential(nn.Linear(time_heads * v + v, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.imputation_mlp = nn.Sequential(nn.Linear(3 * v, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.gate = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Linear(d_model, 1))
        self.position = nn.Parameter(torch.randn(n_reference, d_model) * 0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, ff_mult * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def mtan_embedding(
        self, valid: torch.Tensor, times: torch.Tensor, variables: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """The mTAN branch at every reference time. Shapes: ``(B, T)`` inputs -> ``(B, R, D)``."""
        x_hat, observed = self.time_attention(self.reference, valid, times, variables, values, self.n_variables)
        b, r_len = x_hat.shape[:2]
        flags = observed[:, None, :].expand(-1, r_len, -1).to(x_hat.dtype)  # (B, R, V)
        return self.mtan_mlp(torch.cat([x_hat.reshape(b, r_len, -1), flags], dim=-1))  # (B, R, D)

    def imputation_embedding(
        self, valid: torch.Tensor, times: torch.Tensor, variables: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """The LOCF branch at every reference time. Shapes: ``(B, T)`` inputs -> ``(B, R, D)``."""
        value, seen, age = last_observation_carried_forward(
            self.reference, valid, times, variables, values, self.n_variables
        )  # (B, R, V) each
        features = torch.cat([value, seen.to(value.dtype), age / self.horizon], dim=-1)  # (B, R, 3V)
        return self.imputation_mlp(features)  # (B, R, D)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode the observations into ``R`` reference-time tokens.

        Args:
            inputs: ``times``, ``variables``, ``values``, ``mask`` and ``present``.

        Returns:
            ``N = R`` tokens per patient, all real when it has any observation, else all masked.

        Shapes:
            - times, values: ``(B, T)`` float; variables: ``(B, T)`` long; mask: ``(B, T)`` bool
            - output tokens: ``(B, R, D)``; mask and times: ``(B, R)``
        """
        valid, times, variables, values = clean_triplets(self, inputs, self.n_variables)
        mtan = self.mtan_embedding(valid, times, variables, values)  # (B, R, D)
        imputation = self.imputation_embedding(valid, times, variables, values)  # (B, R, D)
        gate = torch.sigmoid(self.gate(torch.cat([mtan, imputation], dim=-1)))  # (B, R, 1)
        tokens = self.dropout(gate * mtan + (1 - gate) * imputation) + self.position  # (B, R, D)
        tokens = self.norm(self.transformer(tokens))  # (B, R, D)
        b, r_len = tokens.shape[:2]
        mask = valid.any(1)[:, None].expand(-1, r_len)  # (B, R)
        return ModalityTokens.from_tokens(tokens, mask, None, self.reference.expand(b, -1))

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return TimeSeriesTripletEncoder.example_spec()

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """The batch of :meth:`TimeSeriesTripletEncoder.example_inputs` (same input format).

        Example:
            >>> UTDEEncoder.example_inputs()["mask"].shape
            torch.Size([3, 10])
        """
        return TimeSeriesTripletEncoder.example_inputs(batch_size, seed)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"n_reference": 6, "time_heads": 2, "d_time": 8, "d_key": 8, "n_heads": 2}
