"""UTDEEncoder: hand-checked LOCF imputation, mTAN time attention vs a loop reference, mask rule."""

from __future__ import annotations

import math

import pytest
import torch

from clinfuse.encoders.strats import clean_triplets
from clinfuse.encoders.utde import MultiTimeAttention, UTDEEncoder, last_observation_carried_forward

SPEC = {"variables": ["hr", "sbp", "lactate"], "horizon_hours": 6.0}


def build(**kwargs) -> UTDEEncoder:
    torch.manual_seed(0)
    args = {"n_reference": 4, "time_heads": 2, "d_time": 8, "d_key": 8, "n_heads": 2, **kwargs}
    return UTDEEncoder(16, SPEC, **args).eval()


def single(obs: list[tuple[float, int, float]], t_len: int = 4) -> dict[str, torch.Tensor]:
    """One present patient with observations ``(time, variable, value)``, padded to ``t_len``."""
    x = {
        "times": torch.zeros(1, t_len),
        "variables": torch.zeros(1, t_len, dtype=torch.long),
        "values": torch.zeros(1, t_len),
        "mask": torch.zeros(1, t_len, dtype=torch.bool),
        "present": torch.ones(1, dtype=torch.bool),
    }
    for j, (t, v, val) in enumerate(obs):
        x["times"][0, j], x["variables"][0, j], x["values"][0, j], x["mask"][0, j] = t, v, val, True
    return x


def test_reference_times_span_the_horizon():
    assert build().reference.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_locf_hand_checked():
    # variable 0 observed at hours 5 (value -2) and 1 (value 3), given out of time order;
    # variable 1 at hour 4 twice (the later row, 9, wins the tie); variable 2 never; one padding slot
    x = single([(5.0, 0, -2.0), (1.0, 0, 3.0), (4.0, 1, 8.0), (4.0, 1, 9.0)], t_len=5)
    x["times"][0, 4], x["values"][0, 4] = 0.5, 100.0  # padding: must not count
    value, seen, age = last_observation_carried_forward(
        torch.tensor([0.0, 2.0, 4.0, 6.0]), x["mask"], x["times"], x["variables"], x["values"], 3
    )
    assert value[0, :, 0].tolist() == [0.0, 3.0, 3.0, -2.0]
    assert seen[0, :, 0].tolist() == [False, True, True, True]
    assert age[0, :, 0].tolist() == [0.0, 1.0, 3.0, 1.0]
    assert value[0, :, 1].tolist() == [0.0, 0.0, 9.0, 9.0]
    assert seen[0, :, 1].tolist() == [False, False, True, True]
    assert age[0, :, 1].tolist() == [0.0, 0.0, 0.0, 2.0]
    assert not seen[0, :, 2].any() and (value[0, :, 2] == 0).all() and (age[0, :, 2] == 0).all()


def test_imputation_branch_sees_locf_features():
    enc = build()
    a = enc.imputation_embedding(*_clean(enc, single([(1.0, 0, 3.0), (5.0, 0, -2.0)])))
    # reference times 2 and 4 carry the same value but a different age: different embeddings
    assert not torch.allclose(a[0, 1], a[0, 2])
    # before the first observation: the "seen" flag differs from a real 0 observed at hour 0
    b = enc.imputation_embedding(*_clean(enc, single([(0.0, 0, 0.0)])))
    assert not torch.allclose(a[0, 0], b[0, 0])


def _clean(enc, x):
    return clean_triplets(enc, x, enc.n_variables)


def test_time_attention_to_one_observation_returns_its_value_at_any_time():
    enc = build()
    embeddings = []
    for t in (0.5, 3.0, 5.9):
        valid, times, variables, values = _clean(enc, single([(t, 1, 1.7)]))
        x_hat, observed = enc.time_attention(enc.reference, valid, times, variables, values, 3)
        assert x_hat.shape == (1, 4, 2, 3) and observed.tolist() == [[False, True, False]]
        torch.testing.assert_close(x_hat[0, :, :, 1], torch.full((4, 2), 1.7))
        assert (x_hat[..., [0, 2]] == 0).all()  # unobserved variables: masked fill, no NaN
        embeddings.append(enc.mtan_embedding(valid, times, variables, values))
    for e in embeddings[1:]:
        torch.testing.assert_close(e, embeddings[0])
    torch.testing.assert_close(embeddings[0][0, 0], embeddings[0][0, 3])


def test_time_attention_matches_a_per_variable_loop():
    torch.manual_seed(1)
    att = MultiTimeAttention(d_time=8, n_heads=3, d_key=4, horizon=48.0)
    g = torch.Generator().manual_seed(2)
    b, t_len, v = 3, 9, 4
    times = torch.rand(b, t_len, generator=g) * 48
    variables = torch.randint(0, v, (b, t_len), generator=g)
    values = torch.randn(b, t_len, generator=g)
    valid = torch.rand(b, t_len, generator=g) < 0.7
    variables[0] = torch.where(variables[0] == 3, 2, variables[0])  # patient 0 never has variable 3
    reference = torch.linspace(0, 48, 5)
    x_hat, observed = att(reference, valid, times, variables, values, v)
    with torch.no_grad():
        q = att.query(att.embed(reference)).view(5, 3, 4)
        for i in range(b):
            for d in range(v):
                sel = valid[i] & (variables[i] == d)
                assert bool(observed[i, d]) == bool(sel.any())
                if not sel.any():
                    assert (x_hat[i, :, :, d] == 0).all()
                    continue
                k = att.key(att.embed(times[i, sel])).view(-1, 3, 4)  # (n, H, E)
                for h in range(3):
                    w = torch.softmax(q[:, h] @ k[:, h].T / math.sqrt(4), dim=-1)  # (R, n)
                    torch.testing.assert_close(x_hat[i, :, h, d], w @ values[i, sel], rtol=1e-5, atol=1e-6)


def test_mask_rule_and_reference_times():
    enc = build()
    x = {k: torch.cat([a, b, c]) for (k, a), b, c in zip(
        single([(1.0, 0, 0.3)]).items(), single([]).values(), single([(2.0, 2, 1.0)]).values()
    )}
    x["present"][2] = False
    out = enc(x)
    assert out.tokens.shape == (3, 4, 16)
    assert out.mask.tolist() == [[True] * 4, [False] * 4, [False] * 4]
    assert out.times[0].tolist() == [0.0, 2.0, 4.0, 6.0] and (out.times[1:] == 0).all()
    assert (out.tokens[1:] == 0).all()


def test_observation_after_horizon_is_fine_and_gradients_are_finite():
    enc = build().train()
    x = single([(1.0, 0, 0.5), (30.0, 1, -1.0), (3.0, 0, 2.0)])  # hour 30 > horizon 6
    out = enc(x)
    assert torch.isfinite(out.tokens).all() and out.mask.all()
    out.tokens.square().sum().backward()  # variable 2 never observed: still no NaN gradient
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    _, seen, _ = last_observation_carried_forward(enc.reference, *_clean(enc, x), 3)
    assert not seen[0, :, 1].any()  # the late observation is never carried back in time


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_reference"):
        UTDEEncoder(16, SPEC, n_reference=1)
    with pytest.raises(ValueError, match="n_heads"):
        UTDEEncoder(16, SPEC, n_heads=3)
    with pytest.raises(ValueError, match="variables"):
        build()(single([(1.0, 3, 0.0)]))
