"""A simple whole-slide-image encoder: a per-patch MLP and a masked mean over the bag."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens, upcast_half


#: real patches per block in the eval path (:meth:`WSIMeanEncoder._mean_eval`)
_EVAL_BLOCK = 4096


class WSIMeanEncoder(ModalityEncoder):
    """Encode a bag of pre-extracted patch features into one token.

    Every patch goes through the same MLP; the token is the masked mean over real patches followed by
    a LayerNorm. Memory is ``O(B * P * hidden)``, fine for bags of a few thousand patches.

    Args:
        d_model: width ``D`` of the output token.
        spec: ``{"feature_dim": int}`` (``docs/formats.md`` section 3).
        hidden: width of the per-patch MLP's hidden layer.
        dropout: dropout after the hidden layer.
    """

    modality = "wsi"

    def __init__(self, d_model: int, spec: dict[str, Any], hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "feature_dim")
        self.feature_dim = int(spec["feature_dim"])
        if self.feature_dim < 1:
            raise ValueError(f"WSIMeanEncoder: feature_dim must be >= 1, got {self.feature_dim}")
        self.patch_mlp = nn.Sequential(
            nn.Linear(self.feature_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_model),
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode each patient's bag of patches into one token.

        Args:
            inputs: ``features``, ``mask`` and ``present``.

        Returns:
            One token per patient (``N = 1``), real when the patient has at least one patch;
            ``times`` is None.

        Shapes:
            - features: ``(B, P, F)`` float; mask: ``(B, P)`` bool
            - output tokens: ``(B, 1, D)``, mask: ``(B, 1)``
        """
        b = self.require(inputs, "features", "mask")
        present = inputs["present"]
        self.check_shape("features", inputs["features"], (b, None, self.feature_dim))
        self.check_shape("mask", inputs["mask"], (b, inputs["features"].shape[1]))
        mask = inputs["mask"].bool() & present[:, None]  # (B, P)
        if self.training:
            feats = torch.where(mask[..., None], inputs["features"], torch.zeros_like(inputs["features"]))
            h = self.patch_mlp(feats) * mask[..., None].to(feats.dtype)  # (B, P, D)
            count = mask.sum(1, keepdim=True).clamp(min=1).to(h.dtype)  # (B, 1)
            pooled = self.norm(h.sum(1) / count)  # (B, D)
        else:
            pooled = self.norm(self._mean_eval(inputs["features"], mask))  # (B, D)
        has_wsi = mask.any(1)  # (B,)
        return ModalityTokens.from_tokens(pooled[:, None, :], has_wsi[:, None], has_wsi)  # (B, 1, D)

    def _mean_eval(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The masked mean of ``patch_mlp`` over real patches, computed the cheap way (eval only):
        only real patches go through the first layer, and the last layer (linear, after an
        identity dropout) is applied once to the mean instead of to every patch.

        Shapes:
            features: ``(B, P, F)``, mask: ``(B, P)`` -> ``(B, D)``
        """
        first, act, last = self.patch_mlp[0], self.patch_mlp[1], self.patch_mlp[3]
        rows = mask.nonzero()[:, 0]  # (P_real,) patient of each real patch
        real = features[mask]  # (P_real, F)
        sums = None
        # in blocks of patches, so each block's hidden activations are summed while still in the
        # CPU cache (one pass over all of them made three trips through memory: ~20% slower)
        for start in range(0, max(len(real), 1), _EVAL_BLOCK):
            hidden = upcast_half(act(first(real[start : start + _EVAL_BLOCK])))  # float32 sums under autocast
            if sums is None:
                sums = hidden.new_zeros(mask.shape[0], hidden.shape[1])  # (B, hidden)
            sums.index_add_(0, rows[start : start + _EVAL_BLOCK], hidden)
        count = mask.sum(1, keepdim=True).clamp(min=1).to(sums.dtype)  # (B, 1)
        return last(sums / count)  # (B, D); absent patients are masked by the caller

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {"feature_dim": 32}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Bags of up to 20 patches with 32 features; the last patient is absent.

        Example:
            >>> x = WSIMeanEncoder.example_inputs()
            >>> x["features"].shape
            torch.Size([3, 20, 32])
        """
        g = torch.Generator().manual_seed(seed)
        b, p, f = batch_size, 20, 32
        n_patches = torch.randint(3, p + 1, (b,), generator=g)
        mask = torch.arange(p)[None, :] < n_patches[:, None]  # (B, P)
        features = torch.randn(b, p, f, generator=g) * mask[..., None]
        present = torch.ones(b, dtype=torch.bool)
        present[-1] = False
        # the absent patient's row is padding: fill it with garbage an encoder must ignore
        features[-1] = torch.randn(p, f, generator=g) * 100
        mask[-1] = torch.rand(p, generator=g) < 0.5
        return {"features": features, "mask": mask, "present": present}
