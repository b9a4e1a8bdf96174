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
