"""A simple tabular encoder: observed-flagged numerics and categorical embeddings through an MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens


class TabularMLPEncoder(ModalityEncoder):
    """One token per patient from a row of numeric and categorical features.

    Each numeric feature enters as the pair ``(value * observed, observed)``, so a missing value is
    visible to the model instead of silently imputed as 0. Each categorical feature has its own
    embedding table in which index 0 (missing) and 1 (unseen level) are ordinary learned rows.

    Args:
        d_model: width ``D`` of the output token.
        spec: ``{"numeric_features": [...], "categorical_features": [...],
            "categorical_cardinalities": [...]}`` (``docs/formats.md`` section 3).
        embed_dim: width of each categorical embedding.
        hidden: width of the MLP's hidden layer.
        dropout: dropout after the hidden layer.
    """

    modality = "tabular"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        embed_dim: int = 8,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "numeric_features", "categorical_features", "categorical_cardinalities")
        self.n_numeric = len(spec["numeric_features"])
        cards = [int(c) for c in spec["categorical_cardinalities"]]
        if len(cards) != len(spec["categorical_features"]):
            raise ValueError(
                f"TabularMLPEncoder: spec has {len(spec['categorical_features'])} categorical_features "
                f"but {len(cards)} categorical_cardinalities"
            )
        if any(c < 2 for c in cards):
            raise ValueError(
                f"TabularMLPEncoder: every categorical cardinality counts 0 = missing and 1 = unseen, "
                f"so must be >= 2; got {dict(zip(spec['categorical_features'], cards))}"
            )
        if self.n_numeric + len(cards) == 0:
            raise ValueError("TabularMLPEncoder: the spec lists no numeric and no categorical features")
        self.categorical_features = list(spec["categorical_features"])
        self.cardinalities = cards
        # one table for all features; feature f owns rows offsets[f] .. offsets[f] + cards[f] - 1
        offsets = torch.tensor([0, *cards[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.embedding = nn.Embedding(sum(cards), embed_dim) if cards else None
        n_in = 2 * self.n_numeric + embed_dim * len(cards)
        self.mlp = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_model),
            nn.LayerNorm(d_model),
        )

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode one row per patient into one token.

        Args:
            inputs: ``numeric``, ``numeric_observed``, ``categorical`` and ``present``.

        Returns:
            One token per patient (``N = 1``), masked for absent patients; ``times`` is None.

        Shapes:
            - numeric: ``(B, F_num)`` float, numeric_observed: ``(B, F_num)`` bool
            - categorical: ``(B, F_cat)`` long, present: ``(B,)`` bool
            - output tokens: ``(B, 1, D)``, mask: ``(B, 1)``
        """
        b = self.require(inputs, "numeric", "numeric_observed", "categorical")
        present = inputs["present"]
        self.check_shape("numeric", inputs["numeric"], (b, self.n_numeric))
        self.check_shape("numeric_observed", inputs["numeric_observed"], (b, self.n_numeric))
        self.check_shape("categorical", inputs["categorical"], (b, len(self.cardinalities)))

        observed = inputs["numeric_observed"].bool() & present[:, None]  # (B, F_num)
        values = torch.where(observed, inputs["numeric"], torch.zeros_like(inputs["numeric"]))
        parts = [values, observed.to(values.dtype)]
        if self.cardinalities:
            cat = inputs["categorical"].long()
            rows = present[:, None].expand_as(cat)  # (B, F_cat)
            for f, card in enumerate(self.cardinalities):
                self.check_indices(f"categorical[{self.categorical_features[f]}]", cat[:, f], rows[:, f], card)
            cat = torch.where(rows, cat, torch.zeros_like(cat))  # absent rows: never read
            emb = self.embedding(cat + self.offsets)  # (B, F_cat, E)
            parts.append(emb.flatten(1))  # (B, F_cat * E)
        x = torch.cat(parts, dim=1)  # (B, 2 * F_num + F_cat * E)
        tokens = self.mlp(x)[:, None, :]  # (B, 1, D)
        return ModalityTokens.from_tokens(tokens, present[:, None], present)

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {
            "numeric_features": ["age", "heart_rate", "creatinine", "lactate"],
            "categorical_features": ["sex", "admission_type"],
            "categorical_cardinalities": [4, 5],
        }

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Patient 0 misses ``lactate`` and its admission type; the last patient is absent.

        Example:
            >>> x = TabularMLPEncoder.example_inputs()
            >>> sorted(x)
            ['categorical', 'numeric', 'numeric_observed', 'present']
        """
        g = torch.Generator().manual_seed(seed)
        b = batch_size
        cards = cls.example_spec()["categorical_cardinalities"]
        observed = torch.rand(b, 4, generator=g) < 0.75
        numeric = torch.randn(b, 4, generator=g) * observed  # 0 where missing
        categorical = torch.stack([torch.randint(0, c, (b,), generator=g) for c in cards], dim=1)
        observed[0, 3] = False
        numeric[0, 3] = 0.0
        categorical[0, 1] = 0  # missing
        present = torch.ones(b, dtype=torch.bool)
        present[-1] = False
        # the absent patient's row is padding: fill it with garbage an encoder must ignore
        numeric[-1] = torch.randn(4, generator=g) * 100
        observed[-1] = torch.rand(4, generator=g) < 0.5
        categorical[-1] = torch.stack([torch.randint(0, c, (1,), generator=g)[0] for c in cards])
        return {"numeric": numeric, "numeric_observed": observed, "categorical": categorical, "present": present}
