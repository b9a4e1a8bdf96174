"""ModalityDropout: per-patient drop rates, never everything, identity in eval."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.modality_dropout import ModalityDropout


def batch(names, n_patients: int, seed: int = 0, p_present: float = 1.0) -> dict[str, ModalityTokens]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in names:
        present = torch.rand(n_patients, generator=g) < p_present
        mask = torch.stack([present, present & (torch.rand(n_patients, generator=g) < 0.5)], 1)
        out[name] = ModalityTokens.from_tokens(torch.randn(n_patients, 2, 3, generator=g), mask)
    return out


def presence(tokens: dict[str, ModalityTokens]) -> torch.Tensor:
    return torch.stack([t.present for t in tokens.values()], 1)  # (B, M)


@pytest.mark.parametrize("n_mod, p", [(4, 0.3), (2, 0.5), (3, 0.8)])
def test_rates_match_p_with_the_rescue(n_mod, p):
    """Drop rate of each modality is p - p**M / M (the kept one is uniform among M)."""
    torch.manual_seed(0)
    x = batch([f"m{i}" for i in range(n_mod)], 20_000)
    dropped = ~presence(ModalityDropout(p).train()(x))
    expected = p - p**n_mod / n_mod
    torch.testing.assert_close(dropped.float().mean(0), torch.full((n_mod,), expected), atol=0.015, rtol=0)
    assert dropped.any(1).float().mean() > 0.5 * p  # something is dropped at all


def test_dict_rates_and_unnamed_modalities():
    torch.manual_seed(1)
    x = batch(["a", "b", "c"], 20_000)
    out = ModalityDropout({"a": 0.5, "b": 0.0}).train()(x)
    assert torch.equal(out["b"].present, x["b"].present) and torch.equal(out["c"].present, x["c"].present)
    assert abs((~out["a"].present).float().mean().item() - 0.5) < 0.015


def test_never_removes_every_modality_and_zeroes_what_it_drops():
    torch.manual_seed(2)
    x = batch(["a", "b", "c", "d"], 5_000, p_present=0.5)
    had = presence(x)
    assert (~had.any(1)).any() and (had.sum(1) == 1).any()  # the batch covers both edge cases
    out = ModalityDropout(0.9).train()(x)
    kept = presence(out)
    assert torch.equal(kept.any(1), had.any(1)), "a patient lost everything (or gained something)"
    assert not (kept & ~had).any()
    assert torch.equal(kept[had.sum(1) == 1], had[had.sum(1) == 1]), "a sole modality was dropped"
    for name, t in out.items():
        t.validate(name)
        assert (t.tokens[~t.present] == 0).all() and not t.mask[~t.present].any()
        assert torch.equal(t.tokens[t.present], x[name].tokens[t.present])
        assert torch.equal(t.mask[t.present], x[name].mask[t.present])


def test_patient_with_nothing_stays_empty():
    x = batch(["a", "b"], 3)
    x = {m: t.select(torch.tensor([True, True, False])) for m, t in x.items()}
    out = ModalityDropout(0.99).train()(x)
    assert not presence(out)[2].any()
    assert presence(out)[:2].any(1).all()


def test_identity_in_eval_and_when_p_is_zero():
    x = batch(["a", "b"], 50)
    for module in (ModalityDropout(0.7).eval(), ModalityDropout(0.0).train(), ModalityDropout({"a": 0.0}).train()):
        out = module(x)
        assert list(out) == list(x) and all(out[m] is x[m] for m in x)


@pytest.mark.parametrize(
    "p", [-0.1, 1.0, 1.5, float("nan"), "0.3", True, {"a": 1.0}, {"a": -0.5}, {"": 0.1}, {3: 0.1}]
)
def test_bad_p_raises(p):
    with pytest.raises(ValueError):
        ModalityDropout(p)


def test_dict_keys_checked_against_known_modalities():
    with pytest.raises(ValueError, match=r"unknown modalities \['ecgs'\]"):
        ModalityDropout({"ecgs": 0.2}, modalities=["ecg", "notes"])
    assert ModalityDropout({"ecg": 0.2}, modalities=["ecg", "notes"]).rate("notes") == 0.0


def test_rates_naming_no_modality_of_the_batch_warn_once():
    drop = ModalityDropout({"ecgg": 0.5}).train()
    toks = batch(["ecg", "tabular"], 64)
    with pytest.warns(UserWarning, match=r"p names \['ecgg'\], none of which is in the batch .*nothing is dropped"):
        out = drop(toks)
    assert torch.equal(presence(out), presence(toks))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drop(toks)  # once only
        ModalityDropout({"ecg": 0.5}).train()(toks)  # a named modality: no warning


def test_from_tokens_zeroes_masked_positions_even_when_they_hold_nan():
    tokens = torch.randn(2, 3, 4)
    tokens[0, 2] = float("nan")
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = ModalityTokens.from_tokens(tokens, mask)
    assert torch.equal(out.tokens[0, 2], torch.zeros(4)) and torch.isfinite(out.tokens).all()
    assert torch.equal(out.tokens[0, :2], tokens[0, :2])

