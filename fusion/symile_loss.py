"""The Symile contrastive loss, the multilinear inner product, and the CLIP baselines.

Symile (Saporta et al., "Contrasting with Symile: Simple Model-Agnostic Representation Learning
for Unlimited Modalities", NeurIPS 2024) scores a tuple of representations by their multilinear
inner product ``MIP(a, b, c, ...) = sum_d a_d * b_d * c_d * ...`` and, taking each modality in turn
as the anchor, classifies the positive tuple (same patient everywhere) against negative tuples.

Conventions (the tests check them against the ``symile`` package, version 0.1.0):

- ``logit_scale`` is the LOG of the scale: the loss multiplies logits by ``logit_scale.exp()``.
  The package's ``Symile()(reps, scale)`` takes the already exponentiated scale (its authors pass
  ``self.logit_scale.exp()``), so ``symile_loss(reps, s) == symile.Symile()(reps, s.exp())``.
- ``negative_sampling="n"`` draws, for each anchor ``i`` in order and then for each other modality
  ``j != i`` in order, one ``torch.randperm(N)`` (from torch's global CPU generator, or from
  ``generator`` on its device), exactly as the package does; with the same seed both give the
  same loss.
- ``negative_sampling="n_squared"`` uses every tuple of the non-anchor modalities as a candidate
  (``N ** (M - 1)`` per anchor row). The MIP tensor over all ``N ** M`` tuples is shared by every
  anchor, so it is built once (in cache-sized blocks of anchor rows, recomputed in the backward
  pass above ``RECOMPUTE_ABOVE`` entries) instead of once per anchor as in the package. (The
  package fails for M = 2 with ``"n_squared"``; here that case is the symmetric CLIP loss.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

NegativeSampling = Literal["n", "n_squared"]

#: ``n_squared``: entries of one block of the MIP tensor (2 MiB in float32: stays in cache)
BLOCK_ELEMENTS = 2**19
#: ``n_squared``: above this many MIP entries, blocks are recomputed in the backward pass
RECOMPUTE_ABOVE = 2**26


def mip(*xs: torch.Tensor) -> torch.Tensor:
    """Multilinear inner product ``sum_d x1_d * x2_d * ...`` over the last dimension.

    Leading dimensions broadcast, so ``mip(a[:, None], b[None])`` gives all pairs.

    Args:
        *xs: two or more tensors whose last dimensions agree.

    Returns:
        The MIP, with the broadcast leading shape.

    Shapes:
        - each x: ``(..., D)``
        - returns: ``(...)`` (the broadcast of the leading shapes)

    Raises:
        ValueError: fewer than two tensors, or shapes that disagree on ``D`` or do not broadcast.
    """
    if len(xs) < 2:
        raise ValueError(f"mip needs at least two tensors, got {len(xs)}")
    shapes = [tuple(x.shape) for x in xs]
    if any(x.dim() == 0 for x in xs) or len({s[-1] for s in shapes}) != 1:
        raise ValueError(f"mip: the last dimension D must agree, got shapes {shapes}")
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError as err:
        raise ValueError(f"mip: shapes {shapes} do not broadcast") from err
    prod = xs[0]
    for x in xs[1:]:
        prod = prod * x
    return prod.sum(-1)


def mip_scores(queries: Sequence[torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
    """MIP of each query tuple with every candidate: ``scores[i, k] = MIP(q1[i], q2[i], ..., c[k])``.

    The same scores as ``symile.MIPSimilarity()(candidates, queries)``.

    Shapes:
        - each query: ``(N, D)``; candidates: ``(K, D)``
        - returns: ``(N, K)``
    """
    if len(queries) == 0:
        raise ValueError("mip_scores needs at least one query modality")
    shapes = [tuple(q.shape) for q in queries]
    ok = all(len(s) == 2 for s in shapes) and len(set(shapes)) == 1
    if not ok or candidates.dim() != 2 or candidates.shape[1] != shapes[0][1]:
        raise ValueError(
            f"mip_scores wants queries of one shape (N, D) and candidates (K, D), got queries {shapes} "
            f"and candidates {tuple(candidates.shape)}"
        )
    prod = queries[0]
    for q in queries[1:]:
        prod = prod * q  # (N, D)
    return prod @ candidates.T  # (N, K)


# --------------------------------------------------------------------------- validation


def _check(representations: Sequence[torch.Tensor], fn: str, at_least: int = 2) -> list[torch.Tensor]:
    reps = list(representations)
    if len(reps) < at_least:
        raise ValueError(f"{fn} needs at least {at_least} modalities' representations, got {len(reps)}")
    shapes = [tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__ for r in reps]
    if not all(isinstance(r, torch.Tensor) and r.dim() == 2 for r in reps) or len(set(shapes)) != 1:
        raise ValueError(f"{fn}: every representation must be a tensor of one shape (N, D), got shapes {shapes}")
    if shapes[0][0] == 0:
        raise ValueError(f"{fn}: representations hold no samples (N=0), shapes {shapes}")
    return reps


def _scale(logit_scale: torch.Tensor | float, like: torch.Tensor, fn: str) -> torch.Tensor:
    s = torch.as_tensor(logit_scale, dtype=like.dtype, device=like.device)
    if s.numel() != 1:
        raise ValueError(f"{fn}: logit_scale must be a scalar (the log of the scale), got shape {tuple(s.shape)}")
    return s.reshape(()).exp()


# --------------------------------------------------------------------------- Symile


def symile_loss(
    representations: Sequence[torch.Tensor],
    logit_scale: torch.Tensor | float,
    negative_sampling: NegativeSampling = "n",
    generator: torch.Generator | None = None,
    *,
    block_elements: int = BLOCK_ELEMENTS,
    recompute: bool | None = None,
) -> torch.Tensor:
    """The Symile loss: mean over anchors of the cross-entropy of the positive tuple.

    For anchor modality ``i`` and sample ``n`` the logits are ``exp(logit_scale) * MIP(x_i[n],
    candidates)``; the positive is the tuple of sample ``n`` in every modality.

    Args:
        representations: one ``(N, D)`` tensor per modality (M >= 2), rows aligned by sample.
        logit_scale: scalar LOG scale (a learned parameter; ``log(1 / 0.07)`` as in CLIP is a
            common start). The logits are multiplied by its exponential.
        negative_sampling: ``"n"``: N - 1 negatives per positive, each non-anchor modality's rows
            shuffled by a random permutation (a negative can rarely coincide with the positive);
            ``"n_squared"``: every tuple of the non-anchor modalities, ``N ** (M - 1) - 1``
            negatives per positive (O(N ** M) time).
        generator: random generator of the ``"n"`` permutations (None: torch's global one).
        block_elements: ``"n_squared"`` only; the MIP tensor is built in blocks of whole anchor
            rows of about this many entries (cache-sized blocks are several times faster).
        recompute: ``"n_squared"`` only; recompute each block in the backward pass instead of
            keeping it (memory O(block) instead of O(N ** M)). None: only when the MIP tensor
            has more than ``RECOMPUTE_ABOVE`` entries.

    Returns:
        A scalar. For M = 2 with ``"n_squared"`` it equals the symmetric CLIP loss.

    Shapes:
        - each representation: ``(N, D)``
        - returns: ``()``

    Raises:
        ValueError: fewer than two modalities, shapes that differ, a non-scalar ``logit_scale``,
            or an unknown ``negative_sampling``.
    """
    reps = _check(representations, "symile_loss")
    scale = _scale(logit_scale, reps[0], "symile_loss")
    if negative_sampling == "n":
        return _symile_n(reps, scale, generator)
    if negative_sampling == "n_squared":
        return _symile_n_squared(reps, scale, block_elements, recompute)
    raise ValueError(f"symile_loss: negative_sampling must be 'n' or 'n_squared', got {negative_sampling!r}")


def _symile_n(reps: list[torch.Tensor], scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    m, (n, _) = len(reps), reps[0].shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    positive = mip(*reps) * scale  # (N,): the positive MIP is the same for every anchor
    labels = torch.arange(n, device=reps[0].device)
    losses = []
    for i in range(m):  # the package's order of randperm draws: anchors, then non-anchors, in order
        shuffled = None
        for j in range(m):
            if j != i:
                perm = torch.randperm(n, generator=generator, device=gen_device).to(reps[j].device)
                shuffled = reps[j][perm] if shuffled is None else shuffled * reps[j][perm]  # (N, D)
        logits = (reps[i] * scale) @ shuffled.T  # (N, N)
        logits = logits.diagonal_scatter(positive)  # positives on the diagonal
        losses.append(F.cross_entropy(logits, labels))
    return torch.stack(losses).mean()


def _lse_block(scale: torch.Tensor, first: torch.Tensor, *rest: torch.Tensor) -> list[torch.Tensor]:
    """Per-axis log-sum-exp of one block of the scaled MIP tensor.

    The block is ``T[b, t2, ..., tM] = scale * MIP(first[b], rest[0][t2], ..., rest[-1][tM])``.
    Returns, for axis 0, the log-sum-exp over all other axes ``(C,)``; for axis ``a > 0``, the
    log-sum-exp over every axis but ``a`` ``(N,)`` (partial: over this block's rows of axis 0).
    """
    left = first * scale  # (C, D)
    for r in rest[:-1]:
        left = left.unsqueeze(-2) * r  # (C, N, ..., N, D)
    t = left @ rest[-1].T  # (C, N, ..., N): M axes
    axes = tuple(range(t.dim()))
    return [t.logsumexp(dim=tuple(b for b in axes if b != a)) for a in axes]


def _symile_n_squared(
    reps: list[torch.Tensor], scale: torch.Tensor, block_elements: int, recompute: bool | None
) -> torch.Tensor:
    m, (n, d) = len(reps), reps[0].shape
    per_row = max(n ** (m - 1), n ** (m - 2) * d)  # entries per anchor row: MIP block, product block
    rows = max(1, min(n, block_elements // per_row))
    if recompute is None:
        recompute = n * per_row > RECOMPUTE_ABOVE
    recompute = recompute and torch.is_grad_enabled() and (scale.requires_grad or any(r.requires_grad for r in reps))
    parts = []
    for lo in range(0, n, rows):
        args = (scale, reps[0][lo : lo + rows], *reps[1:])
        parts.append(checkpoint(_lse_block, *args, use_reentrant=False) if recompute else _lse_block(*args))
    lse = [torch.cat([p[0] for p in parts])]  # (N,): each block holds whole rows of axis 0
    lse += [torch.stack([p[a] for p in parts]).logsumexp(0) for a in range(1, m)]  # (N,) each
    positive = mip(*reps) * scale  # (N,)
    return (torch.stack(lse) - positive).mean()  # (M, N) -> mean over anchors and rows


# --------------------------------------------------------------------------- CLIP baselines


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric CLIP (InfoNCE) loss between two modalities.

    ``(CE(s * a @ b.T, diag) + CE(s * b @ a.T, diag)) / 2`` with ``s = exp(logit_scale)``.

    Shapes:
        - a, b: ``(N, D)``
        - returns: ``()``
    """
    a, b = _check([a, b], "clip_loss")
    logits = (a * _scale(logit_scale, a, "clip_loss")) @ b.T  # (N, N)
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def pairwise_clip_loss(representations: Sequence[torch.Tensor], logit_scale: torch.Tensor | float) -> torch.Tensor:
    """The Symile paper's baseline: CLIP on every pair of modalities, averaged over the pairs.

    (The paper's own code sums the pairs instead; the mean keeps the scale independent of M.)

    Shapes:
        - each representation: ``(N, D)``
        - returns: ``()``
    """
    reps = _check(representations, "pairwise_clip_loss")
    losses = [clip_loss(x, y, logit_scale) for x, y in itertools.combinations(reps, 2)]
    return torch.stack(losses).mean()
