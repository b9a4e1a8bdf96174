"""TimeSeriesTripletEncoder: inference encodes only the real observations, with the same tokens."""

from __future__ import annotations

import torch

from clinfuse.encoders.timeseries import TimeSeriesTripletEncoder


def test_eval_encodes_real_observations_only_with_the_training_maths():
    torch.manual_seed(0)
    enc = TimeSeriesTripletEncoder(16, TimeSeriesTripletEncoder.example_spec(), dropout=0.0)
    x = TimeSeriesTripletEncoder.example_inputs(batch_size=5, seed=2)
    x["times"][0, -1] = float("nan")  # padding (patient 0 has fewer than 10 events) must not leak
    assert not x["mask"][0, -1]
    train = enc.train()(x)  # dropout 0: the training path is the reference maths
    out = enc.eval()(x)
    assert torch.equal(out.mask, train.mask) and torch.equal(out.present, train.present)
    torch.testing.assert_close(out.tokens, train.tokens, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.times, train.times)
    assert (out.tokens[~out.mask] == 0).all() and (out.times[~out.mask] == 0).all()
    # a batch where nobody has an observation: empty and finite
    x["present"][:] = False
    none = enc(x)
    assert not none.mask.any() and torch.isfinite(none.tokens).all() and (none.tokens == 0).all()
