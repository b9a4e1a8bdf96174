"""``scipy.signal.resample_poly`` for many rows at once, as matrix products in torch.

``resample_poly(x, up, down, window=h)`` (``padtype="constant"``) is
``upfirdn(pad(h * up), x, up, down)`` cropped to the output samples centred on the input: an FIR
filter evaluated every ``down``-th sample of the zero-stuffed input. scipy does this one record at
a time with a scalar C loop; the prognosis API resamples hundreds of 12-lead ECGs per call. Here
the same sums run for all rows together as two GEMMs: the output is cut into blocks of ``T``
samples, block ``b`` reads input block ``b`` (``T * down`` samples) through a banded matrix ``A``
plus the first ``K - down`` samples of block ``b + 1`` through ``B``. That is about twice as fast on
CPU as a depthwise ``conv1d`` (and five times a plain ``conv1d`` or scipy) for the 500 -> 100 Hz
case; ``tests/datasets/test_ecg_resample.py`` checks it against scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: minimum output samples per block (the block also has to cover the filter's spill-over)
_MIN_BLOCK = 16


def resample_poly_rows(
    x: torch.Tensor | Sequence[torch.Tensor], up: int, down: int, window: np.ndarray | torch.Tensor,
    n_keep: int | None = None,
) -> torch.Tensor:
    """``scipy.signal.resample_poly(x, up, down, axis=-1, window=window)`` for every row of ``x``.

    Args:
        x: the signals, one per row, all at the same rate and length; or several such blocks of
            rows (stacked in order, without a concatenated copy: each is copied once, into the
            zero-stuffed buffer).
        up, down: the rate change ``up / down`` (any common factor is removed first, as scipy does).
        window: the FIR filter taps (e.g. ``firwin``'s), odd or even length.
        n_keep: return only the first ``n_keep`` output samples (default: all ``ceil(S * up / down)``).

    Returns:
        The resampled rows, in ``x``'s dtype and device.

    Shapes:
        - x: ``(R, S)`` -> ``(R, min(n_keep, ceil(S * up / down)))``
    """
    blocks = [x] if isinstance(x, torch.Tensor) else list(x)
    x = blocks[0]
    g = np.gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    if up == down == 1:
        return torch.cat(blocks)[:, :n_keep]
    h = torch.tensor(np.asarray(window), dtype=x.dtype, device=x.device) * up
    half_len = (h.shape[0] - 1) // 2
    rows, n_in = sum(b.shape[0] for b in blocks), x.shape[1]
    n_out = -(-n_in * up // down)
    n_out = n_out if n_keep is None else min(n_out, n_keep)
    # scipy's alignment: pre-pad h so output 0 sits at input 0, then drop n_pre_remove outputs
    n_pre_pad = down - half_len % down
    n_pre_remove = (half_len + n_pre_pad) // down
    w = torch.cat([h.new_zeros(n_pre_pad), h]).flip(0)  # (K,) correlation taps
    k = w.shape[0]
    # output i = sum_j w[j] * xu[s0 + i * down + j], where xu is x zero-stuffed (xu[j * up] = x[j])
    # and zero outside; xp[:, i] = xu[s0 + i] is built with one allocation and one copy
    s0 = n_pre_remove * down - (k - 1)
    spill = max(k - down, 0)
    t = max(_MIN_BLOCK, -(-spill // down))  # outputs per block; a block covers the spill-over
    td = t * down
    n_blocks = -(-n_out // t)
    total = (n_blocks + 1) * td
    j_lo = max(0, -(-s0 // up))  # first input sample at a position >= 0
    j_hi = min(n_in - 1, (total - 1 + s0) // up)  # last one before the end
    i_lo, i_hi = j_lo * up - s0, j_hi * up - s0
    xp = x.new_zeros(rows, total) if up > 1 or j_hi < j_lo else x.new_empty(rows, total)
    if j_hi >= j_lo:
        r0 = 0
        for block in blocks:
            dst, src = xp[r0 : r0 + block.shape[0], i_lo : i_hi + 1 : up], block[:, j_lo : j_hi + 1]
            if dst.device.type == "cpu" and not src.requires_grad:
                # numpy's strided copy: torch's took 80x longer for Fortran-order (transposed) rows
                dst.numpy()[...] = src.numpy()
            else:
                dst.copy_(src)
            r0 += block.shape[0]
        if up == 1:
            xp[:, :i_lo] = 0
            xp[:, i_hi + 1 :] = 0
    xp = xp.view(rows, n_blocks + 1, td)
    band = w.new_zeros(td + spill, t)  # column i holds w at rows i * down ... i * down + K - 1
    cols = torch.arange(t, device=x.device)
    band[(cols * down)[:, None] + torch.arange(k, device=x.device), cols[:, None]] = w
    y = xp[:, :n_blocks] @ band[:td]  # (R, n_blocks, T)
    if spill:
        y += xp[:, 1:, :spill] @ band[td:]
    return y.reshape(rows, n_blocks * t)[:, :n_out]
