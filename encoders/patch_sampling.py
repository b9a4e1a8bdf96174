"""Draw a fixed number of patches per bag, uniformly among the valid ones (training-time subsampling).

Shared by the whole-slide-image encoders (:mod:`clinfuse.encoders.abmil`,
:mod:`clinfuse.encoders.transmil`). Shapes use ``B`` (batch), ``P`` (patches), ``F`` (features) and
``S`` (sampled patches).
"""

from __future__ import annotations

import torch


def sample_valid_patches(
    features: torch.Tensor, valid: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep ``n`` patches per bag, drawn uniformly without replacement among its valid patches.

    A bag with at most ``n`` valid patches keeps all of them (the rest of its ``n`` slots are
    invalid padding). Random keys come from torch's global RNG on ``features.device``, so
    ``seed_everything`` applies. When ``P <= n`` nothing is drawn and the inputs come back as they are.

    Args:
        features: ``(B, P, F)`` patch features (padding may hold anything).
        valid: ``(B, P)`` bool, True marks a real patch.
        n: patches to keep per bag (``>= 1``).

    Returns:
        ``(features, valid, index)``: the kept patches ``(B, S, F)``, their validity ``(B, S)`` and
        their positions in the original bag ``(B, S)`` (long), ``S = min(n, P)``.

    Raises:
        ValueError: ``n < 1``.

    Shapes:
        - features: ``(B, P, F)``, valid: ``(B, P)``
        - returns ``(B, S, F)``, ``(B, S)``, ``(B, S)``
    """
    if n < 1:
        raise ValueError(f"sample_patches must be >= 1, got {n}")
    b, p = valid.shape
    if p <= n:
        return features, valid, torch.arange(p, device=valid.device).expand(b, p)
    # uniform keys in [0, 1) for valid patches, 2 for invalid ones: the n smallest keys are a uniform
    # draw without replacement among the valid patches, topped up with invalid ones if too few
    keys = torch.where(valid, torch.rand(b, p, device=valid.device), 2.0)  # (B, P)
    index = keys.topk(n, dim=1, largest=False).indices  # (B, S)
    kept = torch.gather(features, 1, index[..., None].expand(b, n, features.shape[2]))  # (B, S, F)
    return kept, torch.gather(valid, 1, index), index


def unsample(values: torch.Tensor, index: torch.Tensor | None, n_patches: int) -> torch.Tensor:
    """Place per-sampled-patch values back at their positions in the original bag; zero elsewhere.

    Args:
        values: per-sampled-patch values, first dim ``B``, last dim ``S``.
        index: ``(B, S)`` positions from :func:`sample_valid_patches` (None: nothing was sampled).
        n_patches: ``P`` of the original bag.

    Shapes:
        values ``(B, *, S)``, index ``(B, S)`` -> ``(B, *, P)``.
    """
    if index is None or values.shape[-1] == n_patches:
        return values
    full = values.new_zeros(*values.shape[:-1], n_patches)  # (B, *, P)
    where = index.reshape(index.shape[0], *([1] * (values.dim() - 2)), index.shape[1]).expand_as(values)
    return full.scatter(-1, where, values)
