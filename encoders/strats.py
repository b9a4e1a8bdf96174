"""STraTS: a transformer over (time, variable, value) triplets with continuous-value embeddings."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.timeseries import TimeSeriesTripletEncoder


def clean_triplets(
    encoder: ModalityEncoder, inputs: dict[str, torch.Tensor], n_variables: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate a timeseries batch and replace every padding slot by a fixed fill.

    Padding (``mask`` False, or an absent patient) is overwritten with ``torch.where`` BEFORE any
    arithmetic, so NaN/inf or out-of-range garbage there cannot reach the output.

    Args:
        encoder: the calling encoder (named in errors).
        inputs: ``times``, ``variables``, ``values``, ``mask`` and ``present``.
        n_variables: ``V``; variable ids at valid positions must lie in ``[0, V)``.

    Returns:
        ``valid (B, T) bool`` (= mask & present), ``times (B, T)`` (0 at padding),
        ``variables (B, T) long`` (0 at padding), ``values (B, T)`` (0 at padding).

    Raises:
        ValueError: a key is missing, a shape disagrees or a variable id is out of range.
    """
    b = encoder.require(inputs, "times", "variables", "values", "mask")
    encoder.check_shape("mask", inputs["mask"], (b, None))
    t_len = inputs["mask"].shape[1]
    for key in ("times", "variables", "values"):
        encoder.check_shape(key, inputs[key], (b, t_len))
    valid = inputs["mask"].bool() & inputs["present"][:, None]  # (B, T)
    encoder.check_indices("variables", inputs["variables"], valid, n_variables)
    times = torch.where(valid, inputs["times"].float(), 0.0)  # (B, T)
    values = torch.where(valid, inputs["values"].float(), 0.0)  # (B, T)
    variables = torch.where(valid, inputs["variables"].long(), 0)  # (B, T)
    return valid, times, variables, values


class ContinuousValueEmbedding(nn.Module):
    """CVE of STraTS: a scalar ``x`` becomes ``W2 tanh(W1 x + b1)`` (1 -> hidden -> D, no output bias).

    Args:
        d_model: output width ``D``.
        hidden: width of the tanh layer; ``None`` = ``round(sqrt(D))`` as in the paper.

    Example:
        >>> cve = ContinuousValueEmbedding(16)
        >>> cve(torch.zeros(2, 5)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, d_model: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(1, round(math.sqrt(d_model)))
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, d_model, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed every scalar.

        Shapes:
            - x: ``(B, T)``; output: ``(B, T, D)``
        """
        return self.net(x[..., None])  # (B, T, D)


class STraTSEncoder(ModalityEncoder):
    """Self-supervised Transformer for Time-Series (STraTS) triplet encoder.

    Follows Tipirneni & Reddy, "Self-Supervised Transformer for Sparse and Irregularly Sampled
    Multivariate Clinical Time-Series", ACM TKDD 2022. Its self-supervised forecasting task is
    :class:`clinfuse.experiments.forecast_pretrain.ForecastPretrainModule` (run before the task).

    Each observation is one token ``E_var(variable) + CVE_value(value) + CVE_time(time / horizon)``
    (times are divided by ``horizon_hours`` so the CVE's tanh is not saturated at hour 48; values are
    already normalised per variable). A transformer runs over the observed triplets only (padding is
    excluded from the keys), so the model is a set model: permuting the observations permutes the
    output tokens and leaves the summary tokens unchanged.

    Output tokens: ``n_summary_tokens`` summary tokens, then the ``T`` contextual triplet tokens.
    Summary token ``k`` is the STraTS "fusion self-attention" pooling ``sum_i a_ki c_i`` with
    ``a_k = softmax_i(u_k . tanh(W c_i + b))`` over the patient's observed triplets ``c_i``, plus a
    learned embedding of ``k`` (so a fusion head can tell summaries from triplets). Summary tokens
    are real whenever the patient has at least one observation; their ``times`` are the patient's
    LAST observed time (the moment the summary is up to date with). Triplet tokens are real where
    ``mask & present``; their ``times`` are the observation times.

    Args:
        d_model: width ``D`` of each token.
        spec: ``{"variables": [...], "horizon_hours": float}`` (``docs/formats.md`` section 3).
        n_layers: transformer layers over the triplets.
        n_heads: attention heads (must divide ``d_model``).
        dropout: dropout after the attention and feed-forward blocks of the transformer.
        attention_dropout: dropout on the attention weights (a ``(B, heads, T, T)`` mask: costly on CPU).
        n_summary_tokens: attention-pooled summary tokens prepended to the output (0 = none).
        cve_hidden: hidden width of the CVEs; ``None`` = ``round(sqrt(d_model))``.
        ff_mult: feed-forward width of the transformer as a multiple of ``d_model``.
    """

    modality = "timeseries"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        n_summary_tokens: int = 1,
        cve_hidden: int | None = None,
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
        if n_layers < 1 or n_summary_tokens < 0:
            raise ValueError(f"{name}: need n_layers >= 1 and n_summary_tokens >= 0, got {n_layers}, {n_summary_tokens}")
        if d_model % n_heads:
            raise ValueError(f"{name}: n_heads={n_heads} must divide d_model={d_model}")
        self.n_summary = int(n_summary_tokens)
        self.variable_embedding = nn.Embedding(self.n_variables, d_model)
        self.value_cve = ContinuousValueEmbedding(d_model, cve_hidden)
        self.time_cve = ContinuousValueEmbedding(d_model, cve_hidden)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, ff_mult * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        layer.self_attn.dropout = attention_dropout  # the layer's `dropout` also sets this; keep them apart
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        if self.n_summary:
            # fusion self-attention of STraTS, one score vector u_k per summary token
            self.pool_score = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, self.n_summary))
            self.summary_embedding = nn.Parameter(torch.randn(self.n_summary, d_model) * 0.02)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Contextualise every observed triplet; prepend the summary tokens.

        Args:
            inputs: ``times``, ``variables``, ``values``, ``mask`` and ``present``.

        Returns:
            ``N = n_summary_tokens + T`` tokens per patient (summaries first).

        Shapes:
            - times, values: ``(B, T)`` float; variables: ``(B, T)`` long; mask: ``(B, T)`` bool
            - output tokens: ``(B, S + T, D)`` with ``S = n_summary_tokens``; mask and times: ``(B, S + T)``
        """
        valid, times, variables, values = clean_triplets(self, inputs, self.n_variables)
        tokens = (
            self.variable_embedding(variables) + self.value_cve(values) + self.time_cve(times / self.horizon)
        )  # (B, T, D)
        has_any = valid.any(1)  # (B,)
        # a patient without observations attends over its (fixed, zero-filled) padding instead of over
        # nothing, which would give NaN; its tokens are masked out below
        attend = valid | ~has_any[:, None]  # (B, T)
        # torch wants True = ignore this key: the opposite of our mask convention
        ctx = self.norm(self.transformer(tokens, src_key_padding_mask=~attend))  # (B, T, D)
        if not self.n_summary:
            return ModalityTokens.from_tokens(ctx, valid, None, times)

        score = self.pool_score(ctx).masked_fill(~attend[..., None], float("-inf"))  # (B, T, S)
        weight = score.softmax(dim=1)  # (B, T, S)
        summary = torch.einsum("bts,btd->bsd", weight, ctx) + self.summary_embedding  # (B, S, D)
        last = torch.where(valid, times, torch.finfo(times.dtype).min).amax(1)  # (B,)
        last = torch.where(has_any, last, 0.0)
        out = torch.cat([summary, ctx], dim=1)  # (B, S + T, D)
        mask = torch.cat([has_any[:, None].expand(-1, self.n_summary), valid], dim=1)  # (B, S + T)
        out_times = torch.cat([last[:, None].expand(-1, self.n_summary), times], dim=1)  # (B, S + T)
        return ModalityTokens.from_tokens(out, mask, None, out_times)

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return TimeSeriesTripletEncoder.example_spec()

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """The batch of :meth:`TimeSeriesTripletEncoder.example_inputs` (same input format).

        Example:
            >>> STraTSEncoder.example_inputs()["times"].shape
            torch.Size([3, 10])
        """
        return TimeSeriesTripletEncoder.example_inputs(batch_size, seed)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"n_layers": 1, "n_heads": 2, "n_summary_tokens": 2}
