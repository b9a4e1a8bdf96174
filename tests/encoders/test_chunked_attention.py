"""The chunked online-softmax pool equals an ordinary masked softmax; a 100,000-patch bag encodes in
linear memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from clinfuse.encoders.chunked_attention import chunked_attention_pool

B, H, K, P, DV = 3, 2, 4, 23, 5


def _inputs(seed: int = 0):
    """Random scores/values with ragged masks; row 1 has no valid patch at all."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, H, K, P, generator=g) * 3
    values = torch.randn(B, H, P, DV, generator=g)
    valid = torch.rand(B, P, generator=g) < 0.6
    valid[0, 0] = True
    valid[1] = False
    return scores, values, valid


def _by_chunks(scores, values):
    return lambda s, e: (scores[..., s:e], values[..., s:e, :])


def _reference(scores, values, valid):
    """The textbook masked softmax over the whole bag (torch.softmax + logsumexp), empty rows -> 0."""
    masked = scores.masked_fill(~valid[:, None, None, :], float("-inf"))  # (B, H, K, P)
    weights = torch.softmax(masked, -1).nan_to_num(0.0)  # an all -inf row gives NaN: no patch, no weight
    return weights @ values, torch.logsumexp(masked, -1), weights


@pytest.mark.parametrize("chunk_size", [1, 4, 7, P, 1000])
def test_chunked_equals_full_masked_softmax(chunk_size):
    scores, values, valid = _inputs()
    out = chunked_attention_pool(_by_chunks(scores, values), valid, chunk_size, return_weights=True)
    pooled, lse, weights = _reference(scores, values, valid)
    torch.testing.assert_close(out.pooled, pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.weights, weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.lse[0], lse[0], rtol=1e-5, atol=1e-5)
    # the all-masked row: exactly zero output, zero weights, -inf log-sum-exp, no NaN
    assert (out.pooled[1] == 0).all() and (out.weights[1] == 0).all()
    assert torch.isneginf(out.lse[1]).all()
    assert torch.isfinite(out.pooled).all()


def test_values_shared_across_heads_broadcast():
    scores, values, valid = _inputs(1)
    shared = values[:, :1]  # (B, 1, P, DV): one value set for every head/branch
    out = chunked_attention_pool(_by_chunks(scores, shared), valid, 5)
    torch.testing.assert_close(out.pooled, _reference(scores, shared.expand_as(values), valid)[0], rtol=1e-5, atol=1e-5)


def test_gradients_match_full_softmax():
    scores, values, valid = _inputs(2)
    s1, v1 = scores.clone().requires_grad_(), values.clone().requires_grad_()
    s2, v2 = scores.clone().requires_grad_(), values.clone().requires_grad_()
    w = torch.randn(B, H, K, DV, generator=torch.Generator().manual_seed(9))
    (chunked_attention_pool(_by_chunks(s1, v1), valid, 4).pooled * w).sum().backward()
    (_reference(s2, v2, valid)[0] * w).sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v1.grad, v2.grad, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(s1.grad).all() and (s1.grad[:, :, :, ~valid.any(0)] == 0).all()


def test_garbage_at_invalid_patches_never_leaks():
    scores, values, valid = _inputs(3)
    ref = chunked_attention_pool(_by_chunks(scores, values), valid, 6, return_weights=True)
    bad = ~valid[:, None, None, :].expand_as(scores)
    noisy_s = torch.where(bad, float("nan"), scores)
    noisy_v = torch.where(~valid[:, None, :, None].expand_as(values), float("inf"), values)
    out = chunked_attention_pool(_by_chunks(noisy_s, noisy_v), valid, 6, return_weights=True)
    assert torch.equal(out.pooled, ref.pooled) and torch.equal(out.weights, ref.weights)


def test_empty_bag_axis_and_bad_chunk_size():
    scores, values, valid = _inputs()
    out = chunked_attention_pool(_by_chunks(scores[..., :0], values[:, :, :0]), valid[:, :0], 4, return_weights=True)
    assert out.pooled.shape == (B, H, K, DV) and (out.pooled == 0).all() and out.weights.shape == (B, H, K, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_attention_pool(_by_chunks(scores, values), valid, 0)
    with pytest.raises(ValueError, match="scores"):
        chunked_attention_pool(lambda s, e: (scores, values[..., s:e, :]), valid, 4)


# --------------------------------------------------------------------------- a 100,000 x 1024 bag

_BIG_BAG = """
import json, resource, sys, time
import torch
from clinfuse.encoders.registry import ENCODER_CLASSES
torch.manual_seed(0)
p = 100_000
x = {"features": torch.randn(1, p, 1024), "mask": torch.arange(p)[None] < p - 500,
     "present": torch.ones(1, dtype=torch.bool)}
x["features"][0, -500:] = float("nan")  # padding garbage, never looked at
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak bytes (Linux: KiB)
res = {"input_bytes": x["features"].numel() * 4, "peak_before": rss()}
for name in sys.argv[1:]:
    enc = ENCODER_CLASSES[name](64, {"feature_dim": 1024}).eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = enc(x)
    res[name] = {"seconds": time.perf_counter() - t0, "finite": bool(torch.isfinite(out.tokens).all()),
                 "real": bool(out.mask.all())}
res["peak_after"] = rss()
print(json.dumps(res))
"""


def test_100k_patch_bag_encodes_in_linear_memory():
    """Both WSI encoders, eval + no_grad, in a fresh process so the peak RSS is theirs alone.

    The peak right after building the bag is (about) the bag itself; each encoder then starts from
    at least that, so the final peak minus it bounds the extra memory of either encoder. An
    unchunked pass would copy the masked (P, F) features (400 MB) and hold (P, D) activations
    (measured: +570 MB with ``chunk_size=10**9``); full self-attention over the patches would need a
    (P, P) matrix (40 GB). The chunked pass needs a few (chunk_size, F) buffers (measured: +37 MB).
    """
    names = ["ABMILEncoder", "TransMILEncoder"]
    run = subprocess.run([sys.executable, "-c", _BIG_BAG, *names], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    res = json.loads(run.stdout.strip().splitlines()[-1])
    for name in names:
        assert res[name]["finite"] and res[name]["real"], name
    extra = res["peak_after"] - res["peak_before"]
    assert extra < 2 * 1024**3
    assert extra < res["input_bytes"] / 2, f"encoding grew the peak by {extra / 2**20:.0f} MiB"
