"""The token contract: ModalityTokens validation, from_tokens, select, and the encoder base helpers."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens


@pytest.fixture
def parts():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 4, 2, generator=g)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False], [True, False, True, False]])
    return tokens, mask, mask.any(1)


def test_valid_tokens_pass(parts):
    tokens, mask, present = parts
    t = ModalityTokens(tokens, mask, present, torch.zeros(3, 4))
    assert (t.batch_size, t.d_model) == (3, 2)


@pytest.mark.parametrize(
    "field, bad, pattern",
    [
        ("tokens", torch.zeros(3, 4), r"tokens must be a \(B, N, D\) tensor, got shape \(3, 4\)"),
        ("tokens", torch.zeros(3, 4, 2, dtype=torch.long), "floating point"),
        ("mask", torch.zeros(3, 5, dtype=torch.bool), r"mask .*\(B, N\)=\(3, 4\), got \(3, 5\)"),
        ("mask", torch.zeros(3, 4), r"mask must be a bool tensor"),
        ("present", torch.zeros(4, dtype=torch.bool), r"present .*\(B,\)=\(3,\), got \(4,\)"),
        ("present", torch.zeros(3, 1, dtype=torch.bool), r"present .*got \(3, 1\)"),
        ("times", torch.zeros(3, 5), r"times must have shape \(B, N\)=\(3, 4\), got \(3, 5\)"),
    ],
)
def test_validation_names_the_bad_shape(parts, field, bad, pattern):
    tokens, mask, present = parts
    kwargs = {"tokens": tokens, "mask": mask, "present": present, "times": None, field: bad}
    with pytest.raises(ValueError, match=pattern):
        ModalityTokens(**kwargs)


def test_present_must_equal_mask_any(parts):
    tokens, mask, _ = parts
    with pytest.raises(ValueError, match=r"present must equal mask.any\(1\)"):
        ModalityTokens(tokens, mask, torch.tensor([True, True, True]))
    with pytest.raises(ValueError, match=r"present must equal mask.any\(1\)"):
        ModalityTokens(tokens, mask, torch.tensor([False, False, True]))


def test_validate_uses_the_given_name(parts):
    tokens, mask, present = parts
    t = ModalityTokens(tokens, mask, present)
    t.mask = mask[:, :2]
    with pytest.raises(ValueError, match=r"^ecg: mask"):
        t.validate("ecg")


def test_from_tokens_zeroes_masked_positions_and_derives_present(parts):
    tokens, mask, _ = parts
    times = torch.arange(12.0).reshape(3, 4) + 1
    t = ModalityTokens.from_tokens(tokens, mask, times=times)
    assert torch.equal(t.present, torch.tensor([True, False, True]))
    assert torch.equal(t.tokens[mask], tokens[mask])
    assert (t.tokens[~mask] == 0).all()
    assert torch.equal(t.times, torch.tensor([[1.0, 2, 0, 0], [0, 0, 0, 0], [9, 0, 11, 0]]))


def test_from_tokens_present_masks_absent_patients(parts):
    tokens, mask, _ = parts
    t = ModalityTokens.from_tokens(tokens, mask, torch.tensor([False, True, True]), times=torch.full((3, 4), float("nan")))
    assert torch.equal(t.present, torch.tensor([False, False, True]))
    assert (t.tokens[0] == 0).all() and not t.mask[0].any()
    assert torch.equal(t.times[~t.mask], torch.zeros(int((~t.mask).sum())))


def test_select_makes_patients_absent_and_keeps_the_rest(parts):
    t = ModalityTokens.from_tokens(*parts)
    s = t.select(torch.tensor([False, True, True]))
    assert torch.equal(s.present, torch.tensor([False, False, True]))
    assert (s.tokens[0] == 0).all() and torch.equal(s.tokens[2], t.tokens[2])


class _Toy(ModalityEncoder):
    modality = "toy"


def test_encoder_base_helpers_name_the_problem():
    with pytest.raises(ValueError, match="d_model must be positive"):
        _Toy(0)
    enc = _Toy(4)
    with pytest.raises(ValueError, match=r"lack keys \['values'\]"):
        enc.require({"present": torch.ones(2, dtype=torch.bool)}, "values")
    with pytest.raises(ValueError, match="'present' must be a"):
        enc.require({"present": torch.ones(2)})
    assert enc.require({"present": torch.ones(2, dtype=torch.bool)}) == 2
    with pytest.raises(ValueError, match=r"'values' must have shape \(2, \*\), got \(2, 3, 1\)"):
        enc.check_shape("values", torch.zeros(2, 3, 1), (2, None))
    enc.check_shape("values", torch.zeros(2, 3), (2, None))
    ids = torch.tensor([[0, 7], [9, 1]])
    enc.check_indices("ids", ids, torch.tensor([[True, True], [False, True]]), 8)
    with pytest.raises(ValueError, match=r"'ids' holds 9 at index \(1, 0\), outside \[0, 8\)"):
        enc.check_indices("ids", ids, torch.ones(2, 2, dtype=torch.bool), 8)
    with pytest.raises(ValueError, match=r"spec lacks keys \['vocab_size'\]"):
        _Toy.require_spec({}, "vocab_size")
    with pytest.raises(NotImplementedError):
        _Toy.example_inputs()
