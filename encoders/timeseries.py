"""A simple time-series encoder: one token per (time, variable, value) observation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens


class TimeSeriesTripletEncoder(ModalityEncoder):
    """Encode each observation of a long event table as its own token.

    A token is ``MLP([value, time features]) + embedding(variable)`` followed by a LayerNorm. The time
    features are ``t / horizon`` and sines/cosines of ``t`` at periods spaced geometrically from 1 h
    to ``4 * horizon_hours``. Observations are encoded independently, so padding (``mask`` False)
    cannot influence any real token; tokens carry the observation times.

    Args:
        d_model: width ``D`` of each token.
        spec: ``{"variables": [...], "horizon_hours": float}`` (``docs/formats.md`` section 3).
        n_frequencies: number of sinusoidal time frequencies.
        hidden: width of the MLP's hidden layer.
        dropout: dropout after the hidden layer.
    """

    modality = "timeseries"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_frequencies: int = 8,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "variables", "horizon_hours")
        self.n_variables = len(spec["variables"])
        self.horizon = float(spec["horizon_hours"])
        if self.n_variables == 0:
            raise ValueError("TimeSeriesTripletEncoder: the spec lists no variables")
        if not self.horizon > 0:
            raise ValueError(f"TimeSeriesTripletEncoder: horizon_hours must be > 0, got {self.horizon}")
        if n_frequencies < 1:
            raise ValueError(f"TimeSeriesTripletEncoder: n_frequencies must be >= 1, got {n_frequencies}")
        periods = torch.logspace(0.0, math.log10(4 * max(self.horizon, 1.0)), n_frequencies)
        self.register_buffer("angular", 2 * math.pi / periods, persistent=False)
        self.variable_embedding = nn.Embedding(self.n_variables, d_model)
        self.mlp = nn.Sequential(
            nn.Linear(2 + 2 * n_frequencies, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_model),
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode every observation into one token.

        Args:
            inputs: ``times``, ``variables``, ``values``, ``mask`` and ``present``.

        Returns:
            ``N = T`` tokens per patient, masked where ``mask`` is False or the patient is absent;
            ``times`` are the observation times in hours.

        Shapes:
            - times, values: ``(B, T)`` float; variables: ``(B, T)`` long; mask: ``(B, T)`` bool
            - output tokens: ``(B, T, D)``, mask and times: ``(B, T)``
        """
        b = self.require(inputs, "times", "variables", "values", "mask")
        present = inputs["present"]
        self.check_shape("mask", inputs["mask"], (b, None))
        t_len = inputs["mask"].shape[1]
        for key in ("times", "variables", "values"):
            self.check_shape(key, inputs[key], (b, t_len))
        mask = inputs["mask"].bool() & present[:, None]  # (B, T)
        self.check_indices("variables", inputs["variables"], mask, self.n_variables)

        if not self.training:
            # inference: only real observations are encoded (a third or more of a padded batch is
            # padding); each token depends on its own observation alone, so nothing else changes
            real = mask.nonzero(as_tuple=True)  # ((R,), (R,))
            real_tokens = self._encode(inputs["times"][real], inputs["values"][real], inputs["variables"][real].long())
            tokens = real_tokens.new_zeros(b, t_len, self.d_model)  # (B, T, D)
            tokens[real] = real_tokens
            times = inputs["times"].masked_fill(~mask, 0.0)  # (B, T)
            return ModalityTokens(tokens, mask, mask.any(1), times)
        # padding is replaced before any arithmetic, so NaN or garbage there cannot leak
        times = torch.where(mask, inputs["times"], torch.zeros_like(inputs["times"]))
        values = torch.where(mask, inputs["values"], torch.zeros_like(inputs["values"]))
        variables = torch.where(mask, inputs["variables"].long(), torch.zeros_like(inputs["variables"].long()))
        tokens = self._encode(times, values, variables)  # (B, T, D)
        return ModalityTokens.from_tokens(tokens, mask, present, times=inputs["times"])

    def _encode(self, times: torch.Tensor, values: torch.Tensor, variables: torch.Tensor) -> torch.Tensor:
        """One token per observation.

        Shapes:
            times, values, variables: any shape ``(*S)`` -> ``(*S, D)``
        """
        phase = times[..., None] * self.angular  # (*S, n_frequencies)
        features = torch.cat(
            [values[..., None], (times / self.horizon)[..., None], phase.sin(), phase.cos()], dim=-1
        )  # (*S, 2 + 2 * n_frequencies)
        return self.norm(self.mlp(features) + self.variable_embedding(variables))  # (*S, D)

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {"variables": ["heart_rate", "sbp", "spo2", "temperature", "lactate"], "horizon_hours": 48.0}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Up to 10 observations per patient, padded at the end; the last patient is absent.

        Example:
            >>> x = TimeSeriesTripletEncoder.example_inputs()
            >>> x["values"].shape
            torch.Size([3, 10])
        """
        g = torch.Generator().manual_seed(seed)
        b, t_len, n_var = batch_size, 10, 5
        lengths = torch.randint(2, t_len + 1, (b,), generator=g)
        mask = torch.arange(t_len)[None, :] < lengths[:, None]
        times = torch.sort(torch.rand(b, t_len, generator=g) * 48.0, dim=1).values * mask
        variables = torch.randint(0, n_var, (b, t_len), generator=g) * mask
        values = torch.randn(b, t_len, generator=g) * mask
        present = torch.ones(b, dtype=torch.bool)
        present[-1] = False
        # the absent patient's row is padding: fill it with garbage an encoder must ignore
        mask[-1] = torch.rand(t_len, generator=g) < 0.5
        times[-1] = torch.rand(t_len, generator=g) * 1000
        variables[-1] = torch.randint(0, n_var, (t_len,), generator=g)
        values[-1] = torch.randn(t_len, generator=g) * 100
        return {"times": times, "variables": variables, "values": values, "mask": mask, "present": present}
