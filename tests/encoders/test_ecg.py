"""ECGConvEncoder: inference skips absent patients without changing anyone's tokens."""

from __future__ import annotations

import torch

from clinfuse.encoders.ecg import ECGConvEncoder


def test_eval_tokens_equal_encoding_each_patient_alone():
    torch.manual_seed(0)
    enc = ECGConvEncoder(8, ECGConvEncoder.example_spec(), channels=8, n_tokens=4, groups=2).eval()
    x = ECGConvEncoder.example_inputs(batch_size=5)
    x["present"][1] = False  # an absent patient in the middle too
    out = enc(x)
    assert not out.present[1] and not out.present[-1]
    for i in range(5):
        alone = enc({k: v[i : i + 1] for k, v in x.items()})
        torch.testing.assert_close(out.tokens[i], alone.tokens[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(out.mask[i], alone.mask[0])


def test_eval_path_equals_the_training_maths_with_missing_leads_and_nan_padding():
    """Inference splits the first convolution (signal half, missing-indicator half for patients
    with a gap): the same numbers as the (B, 2L, S) network of the training path."""
    torch.manual_seed(0)
    enc = ECGConvEncoder(16, ECGConvEncoder.example_spec(), dropout=0.0)
    x = ECGConvEncoder.example_inputs(batch_size=6, seed=3)
    x["lead_mask"][2, :5] = False  # a second patient with gaps
    x["lead_mask"][3] = True  # and complete ones
    x["signal"][2, :5] = float("nan")  # padding an encoder must never read
    x["present"][4] = False
    lead_mask = x["lead_mask"] & x["present"][:, None]
    signal = torch.where(lead_mask[..., None], x["signal"], 0.0)
    full = torch.cat([signal, (~lead_mask).float()[..., None].expand_as(signal)], dim=1)  # (B, 2L, S)
    with torch.no_grad():
        ref = enc.proj(enc.pool(enc.cnn(full)).transpose(1, 2))  # (B, N, D)
        out = enc.eval()(x)
        assert torch.equal(out.present, lead_mask.any(1))
        keep = out.present
        torch.testing.assert_close(out.tokens[keep], ref[keep], rtol=1e-5, atol=1e-5)
        assert (out.tokens[~keep] == 0).all()
        # every patient complete: no gap branch; and every patient absent: empty, finite
        x["lead_mask"][:] = True
        x["present"][:] = True
        x["signal"][2, :5] = 0.5
        full = torch.cat([x["signal"], torch.zeros_like(x["signal"])], dim=1)
        torch.testing.assert_close(enc(x).tokens, enc.proj(enc.pool(enc.cnn(full)).transpose(1, 2)), rtol=1e-5, atol=1e-5)
        x["present"][:] = False
        none = enc(x)
        assert not none.mask.any() and torch.isfinite(none.tokens).all()
