"""Conformance suite: every encoder in ENCODERS and every head in FUSION_HEADS obeys the contract.

Adding a component to a registry adds it here. Encoders are exercised through their own
``example_inputs``/``example_spec``; heads through random ``ModalityTokens`` with random masks and
absent patients. Equality checks run in eval mode (no dropout).
"""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.encoders.registry import ENCODER_CLASSES, ENCODERS
from clinfuse.fusion.modality_dropout import ModalityDropout
from clinfuse.fusion.registry import FUSION_HEADS

D = 16
B = 4
EXACT = {"rtol": 0.0, "atol": 0.0}
CLOSE = {"rtol": 1e-5, "atol": 1e-6}

# --------------------------------------------------------------------------- encoder helpers


def build_encoder(name: str, train: bool = False):
    cls = ENCODER_CLASSES[name]
    torch.manual_seed(0)
    return cls(D, cls.example_spec(), **cls.example_kwargs()).train(train)


def take(inputs: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    """The patients ``idx`` (a list) of an input batch."""
    return {k: v[idx] for k, v in inputs.items()}


def expand_left(where: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Broadcast ``where`` (a prefix of ``t``'s shape) over ``t``'s trailing dimensions."""
    return where.reshape(*where.shape, *([1] * (t.dim() - where.dim()))).expand_as(t)


def garbage(t: torch.Tensor, where: torch.Tensor, gen: torch.Generator, mode: str) -> torch.Tensor:
    """``t`` with the positions ``where`` (broadcast from the left) replaced by garbage.

    ``mode="random"``: large finite floats, small ints, random bools; ``mode="nan"``: NaN/inf floats
    and out-of-range ints (-7 or huge) -- padding that an encoder must never even look at.
    """
    where = expand_left(where, t)
    if t.dtype == torch.bool:
        noise = torch.rand(t.shape, generator=gen) < 0.5
    elif t.is_floating_point():
        noise = torch.randn(t.shape, generator=gen) * 1e3
        if mode == "nan":
            noise = torch.where(torch.rand(t.shape, generator=gen) < 0.5, float("nan"), float("inf"))
    else:
        noise = torch.randint(0, 3, t.shape, generator=gen)
        if mode == "nan":
            noise = torch.where(torch.rand(t.shape, generator=gen) < 0.5, -7, 10**6)
    return torch.where(where, noise.to(t.dtype), t)


def _pad_positions(modality: str, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per input key, the positions of PRESENT patients that are padding (docs/formats.md)."""
    if modality == "tabular":
        return {"numeric": ~x["numeric_observed"]}
    if modality == "timeseries":
        return {k: ~x["mask"] for k in ("times", "variables", "values")}
    if modality == "ecg":
        return {"signal": ~x["lead_mask"]}
    if modality == "notes":
        pad_note = ~x["note_mask"]
        if "embeddings" in x:  # frozen pretrained note embeddings instead of token ids
            return {"embeddings": pad_note, "note_times": pad_note}
        return {
            "token_ids": ~x["token_mask"] | pad_note[..., None],
            "token_mask": pad_note,
            "note_times": pad_note,
        }
    if modality == "wsi":
        return {"features": ~x["mask"]}
    if modality == "genomics":
        return {}
    pytest.fail(f"no padding rule for modality {modality!r}: add one to _pad_positions")


def perturb_padding(modality: str, x: dict[str, torch.Tensor], seed: int, mode: str) -> dict[str, torch.Tensor]:
    """Garbage in every padding slot: masked positions of present patients, all of absent ones."""
    gen = torch.Generator().manual_seed(seed)
    present = x["present"]
    pad = _pad_positions(modality, x)
    out = {}
    for key, t in x.items():
        if key == "present":
            out[key] = t
            continue
        where = expand_left(~present, t)
        if key in pad:
            where = where | expand_left(pad[key] & expand_left(present, pad[key]), t)
        out[key] = garbage(t, where, gen, mode)
    changed = [k for k in x if not torch.equal(x[k], out[k])]
    assert changed, "the perturbation changed nothing; the padding test would be vacuous"
    return out


def assert_contract(out, batch: int) -> None:
    assert isinstance(out, ModalityTokens)
    out.validate()
    assert out.tokens.shape[0] == batch and out.tokens.shape[2] == D
    assert out.tokens.dtype == torch.float32
    assert torch.isfinite(out.tokens).all()
    assert (out.tokens[~out.mask] == 0).all(), "tokens must be exactly zero where mask is False"
    if out.times is not None:
        assert torch.isfinite(out.times).all()


def assert_tokens_equal(a: ModalityTokens, b: ModalityTokens, **tol) -> None:
    torch.testing.assert_close(a.tokens, b.tokens, **tol)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.present, b.present)
    assert (a.times is None) == (b.times is None)
    if a.times is not None:
        torch.testing.assert_close(a.times, b.times, **tol)


# --------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_output_is_valid_tokens(name):
    enc, cls = build_encoder(name), ENCODER_CLASSES[name]
    assert ENCODERS[cls.modality].modality == cls.modality
    x = cls.example_inputs(batch_size=B)
    out = enc(x)
    assert_contract(out, B)
    assert torch.equal(out.present, x["present"])
    assert not x["present"][-1]
    assert not out.mask[-1].any() and (out.tokens[-1] == 0).all()
    assert (out.tokens[out.mask] != 0).any(dim=-1).all(), "a real token came out all zero"


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_runs_under_bf16_autocast_in_eval(name):
    """Prognosis(precision="bf16-mixed") runs encoders under CPU autocast: no dtype clash, the
    contract holds, and the tokens stay near float32's (bfloat16 keeps ~3 significant digits)."""
    enc, cls = build_encoder(name), ENCODER_CLASSES[name]
    x = cls.example_inputs(batch_size=B)
    with torch.inference_mode():
        ref = enc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = enc(x).float()
    assert_contract(out, B)
    assert torch.equal(out.mask, ref.mask)
    scale = ref.tokens[ref.mask].abs().max()
    assert (out.tokens - ref.tokens).abs().max() <= 0.05 * scale + 1e-3


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_example_inputs_are_seeded_with_fixed_shapes(name):
    cls = ENCODER_CLASSES[name]
    a, b, c = cls.example_inputs(B, seed=0), cls.example_inputs(B, seed=0), cls.example_inputs(B, seed=1)
    assert sorted(a) == sorted(c) and "present" in a
    for k in a:
        assert torch.equal(a[k], b[k])
        assert a[k].shape == c[k].shape and a[k].shape[0] == B


@pytest.mark.parametrize("mode", ["random", "nan"])
@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_ignores_padding_content(name, mode):
    enc = build_encoder(name)
    x = ENCODER_CLASSES[name].example_inputs(batch_size=B)
    ref = enc(x)
    for seed in range(2):
        assert_tokens_equal(enc(perturb_padding(ENCODER_CLASSES[name].modality, x, seed, mode)), ref, **EXACT)


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_samples_are_independent(name):
    enc, cls = build_encoder(name), ENCODER_CLASSES[name]
    x = cls.example_inputs(batch_size=B)
    ref = enc(x)
    for i in range(B):
        alone = enc(take(x, [i]))
        torch.testing.assert_close(alone.tokens[0], ref.tokens[i], rtol=1e-5, atol=1e-5)
        assert torch.equal(alone.mask[0], ref.mask[i])
    # replace patient 0 by another patient: nobody else may notice
    other = cls.example_inputs(batch_size=B, seed=1)
    x2 = {k: torch.cat([other[k][:1], v[1:]]) for k, v in x.items()}
    out2 = enc(x2)
    torch.testing.assert_close(out2.tokens[1:], ref.tokens[1:], **CLOSE)
    assert torch.equal(out2.mask[1:], ref.mask[1:])
    assert not torch.allclose(out2.tokens[0], ref.tokens[0]), "patient 0 changed but its tokens did not"


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_every_parameter_gets_a_gradient(name):
    enc = build_encoder(name, train=True)
    out = enc(ENCODER_CLASSES[name].example_inputs(batch_size=B))
    weight = torch.randn(out.tokens.shape, generator=torch.Generator().manual_seed(0))
    (out.tokens * weight)[out.present].sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all() and (p.grad != 0).any(), f"{name}: {pname} has a zero/NaN gradient"


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_penalty_is_a_differentiable_scalar_of_parameters_only(name):
    """An encoder's penalty (None for most) is a finite scalar >= 0 that changes with its
    parameters and not with the inputs it has seen."""
    enc = build_encoder(name, train=True)
    before = enc.penalty()
    enc(ENCODER_CLASSES[name].example_inputs(batch_size=B))
    after = enc.penalty()
    if before is None:
        assert after is None
        return
    assert after.shape == () and torch.isfinite(after) and after >= 0
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    after.backward()
    assert any(p.grad is not None and (p.grad != 0).any() for p in enc.parameters()), f"{name}: penalty has no gradient"


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_all_absent_batch_is_finite_and_empty(name):
    enc, cls = build_encoder(name), ENCODER_CLASSES[name]
    for batch in (cls.example_inputs(batch_size=B), cls.example_inputs(batch_size=1)):
        batch = dict(batch, present=torch.zeros_like(batch["present"]))
        out = enc(batch)
        assert_contract(out, batch["present"].shape[0])
        assert not out.present.any() and not out.mask.any() and (out.tokens == 0).all()


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_all_padding_input_is_finite(name):
    """Present patients whose every mask is False and every value 0: finite, contract holds."""
    enc = build_encoder(name)
    x = ENCODER_CLASSES[name].example_inputs(batch_size=B)
    x = {k: v if k == "present" else torch.zeros_like(v) for k, v in x.items()}
    assert_contract(enc(x), B)


@pytest.mark.parametrize("name", sorted(ENCODER_CLASSES))
def test_encoder_rejects_bad_spec_and_missing_keys(name):
    cls = ENCODER_CLASSES[name]
    with pytest.raises(ValueError, match="spec"):
        cls(D, {})
    enc = build_encoder(name)
    x = cls.example_inputs(batch_size=B)
    key = next(k for k in x if k != "present")
    with pytest.raises(ValueError, match=key):
        enc({k: v for k, v in x.items() if k != key})
    with pytest.raises(ValueError, match=key):
        enc(dict(x, **{key: x[key][:, None]}))


# --------------------------------------------------------------------------- head helpers


def random_tokens(names: list[str], batch: int, seed: int) -> dict[str, ModalityTokens]:
    """Random tokens with 1-5 tokens per modality, random masks and absent patients.

    Patient 0 has every modality; the last patient has none; the rest are random.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for j, name in enumerate(names):
        n = int(torch.randint(1, 6, (1,), generator=g))
        row = torch.rand(batch, generator=g) < 0.6
        row[0], row[-1] = True, False
        mask = (torch.rand(batch, n, generator=g) < 0.6) & row[:, None]
        mask[:, 0] |= row  # every present patient has at least one token
        tokens = torch.randn(batch, n, D, generator=g)
        times = torch.rand(batch, n, generator=g) * 48 if j % 2 == 0 else None
        out[name] = ModalityTokens.from_tokens(tokens, mask, None, times)
    return out


def take_tokens(t: ModalityTokens, idx) -> ModalityTokens:
    return ModalityTokens(t.tokens[idx], t.mask[idx], t.present[idx], None if t.times is None else t.times[idx])


def absent(t: ModalityTokens) -> ModalityTokens:
    return t.select(torch.zeros_like(t.present))


def build_head(name: str, names: list[str], train: bool = False):
    torch.manual_seed(0)
    return FUSION_HEADS[name](D, names).train(train)


def assert_outputs_close(a, b, **tol) -> None:
    torch.testing.assert_close(a.pooled, b.pooled, **tol)
    for m in set(a.per_modality or {}) & set(b.per_modality or {}):
        torch.testing.assert_close(a.per_modality[m], b.per_modality[m], **tol)
    assert (a.per_step is None) == (b.per_step is None)
    for sa, sb in zip(a.per_step or [], b.per_step or []):
        torch.testing.assert_close(sa, sb, **tol)
    if a.aux_loss is not None and b.aux_loss is not None:
        torch.testing.assert_close(a.aux_loss, b.aux_loss, **tol)


def assert_output_valid(out, inputs: dict[str, ModalityTokens], batch: int) -> None:
    assert out.pooled.shape == (batch, D) and torch.isfinite(out.pooled).all()
    for m, v in (out.per_modality or {}).items():
        assert v.shape == (batch, D) and torch.isfinite(v).all()
        present = inputs[m].present if m in inputs else torch.zeros(batch, dtype=torch.bool)
        assert (v[~present] == 0).all(), f"per_modality[{m!r}] must be zero for absent patients"


HEAD_CASES = [(h, n) for h in sorted(FUSION_HEADS) for n in (3, 6)]


@pytest.fixture(params=HEAD_CASES, ids=[f"{h}-{n}mod" for h, n in HEAD_CASES])
def head_case(request):
    head_name, n = request.param
    names = [f"mod{i}" for i in range(n)]
    return head_name, names, random_tokens(names, batch=5, seed=n)


# --------------------------------------------------------------------------- heads: the five rules


def test_head_rule1_absent_modality_omitted_or_present_false(head_case):
    head_name, names, inputs = head_case
    head = build_head(head_name, names)
    gone = names[1]
    with_absent = dict(inputs, **{gone: absent(inputs[gone])})
    omitted = {m: t for m, t in inputs.items() if m != gone}
    out_absent, out_omitted = head(with_absent), head(omitted)
    assert_outputs_close(out_absent, out_omitted, **CLOSE)
    assert_output_valid(out_absent, with_absent, 5)
    assert not torch.allclose(head(inputs).pooled[0], out_absent.pooled[0]), "dropping a modality changed nothing"
    # per patient: only what the patient has (others omitted) == its row of the full batch
    full = head(inputs)
    for i in range(5):
        mine = {m: take_tokens(t, [i]) for m, t in inputs.items() if t.present[i]}
        alone = head(mine or {m: take_tokens(t, [i]) for m, t in inputs.items()})
        torch.testing.assert_close(alone.pooled[0], full.pooled[i], rtol=1e-5, atol=1e-5)


def test_head_rule2_dict_order_never_matters(head_case):
    head_name, names, inputs = head_case
    head = build_head(head_name, names)
    reordered = dict(reversed(list(inputs.items())))
    assert list(reordered) != list(inputs)
    assert_outputs_close(head(reordered), head(inputs), **CLOSE)


def test_head_rule3_padding_noise_is_ignored(head_case):
    head_name, names, inputs = head_case
    head = build_head(head_name, names)
    g = torch.Generator().manual_seed(7)
    noisy = {}
    for m, t in inputs.items():
        noise = torch.randn(t.tokens.shape, generator=g) * 100
        tokens = torch.where(t.mask[..., None], t.tokens, noise)  # (B, N, D)
        times = None if t.times is None else torch.where(t.mask, t.times, torch.rand(t.mask.shape, generator=g) * 1e4)
        noisy[m] = ModalityTokens(tokens, t.mask, t.present, times)  # deliberately breaks "zero where masked"
    assert_outputs_close(head(noisy), head(inputs), **CLOSE)


def test_head_rule4_nothing_at_all_is_finite(head_case):
    head_name, names, inputs = head_case
    head = build_head(head_name, names)
    assert not any(t.present[-1] for t in inputs.values())  # the last patient has nothing
    assert_output_valid(head(inputs), inputs, 5)
    empty = {m: absent(t) for m, t in inputs.items()}
    out = head(empty)
    assert_output_valid(out, empty, 5)
    torch.testing.assert_close(out.pooled[0], out.pooled[1], **EXACT)  # nothing is nothing
    with torch.no_grad():
        assert_output_valid(head(empty), empty, 5)
        assert_output_valid(head({names[0]: empty[names[0]]}), empty, 5)


def test_head_rule5_every_parameter_gets_a_gradient(head_case):
    head_name, names, inputs = head_case
    head = build_head(head_name, names, train=True)
    out = head(inputs)
    g = torch.Generator().manual_seed(0)
    loss = (out.pooled * torch.randn(out.pooled.shape, generator=g)).sum()
    for v in (out.per_modality or {}).values():
        loss = loss + (v * torch.randn(v.shape, generator=g)).sum()
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    loss.backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None, f"{head_name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all() and (p.grad != 0).any(), f"{head_name}: {pname} has a zero/NaN gradient"


def test_head_rule5_no_leakage_between_samples(head_case):
    head_name, names, inputs = head_case
    head = build_head(head_name, names)
    ref = head(inputs)
    other = random_tokens(names, batch=5, seed=99)
    # give patient 0 another patient's tokens and masks (only where shapes allow: same N)
    changed = {}
    for m, t in inputs.items():
        o = other[m]
        if o.tokens.shape[1] != t.tokens.shape[1]:
            o = ModalityTokens.from_tokens(torch.randn(t.tokens.shape), torch.ones_like(t.mask))
        rows = torch.arange(5)[:, None] == 0
        changed[m] = ModalityTokens.from_tokens(
            torch.where(rows[..., None], o.tokens, t.tokens), torch.where(rows, o.mask, t.mask), None, t.times
        )
    out = head(changed)
    torch.testing.assert_close(out.pooled[1:], ref.pooled[1:], **CLOSE)
    for m in ref.per_modality or {}:
        torch.testing.assert_close(out.per_modality[m][1:], ref.per_modality[m][1:], **CLOSE)
    assert not torch.allclose(out.pooled[0], ref.pooled[0]), "patient 0 changed but its output did not"


def test_head_inference_mode_matches_eval_with_grad(head_case):
    """Under no_grad torch may take fused fast paths; results must not change."""
    head_name, names, inputs = head_case
    head = build_head(head_name, names)
    ref = head(inputs)
    with torch.no_grad():
        assert_outputs_close(head(inputs), ref, rtol=1e-4, atol=1e-5)


def test_head_runs_under_bf16_autocast_in_eval(head_case):
    """Prognosis(precision="bf16-mixed") runs the head under CPU autocast in inference mode."""
    head_name, names, inputs = head_case
    head = build_head(head_name, names)
    with torch.inference_mode():
        ref = head(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head(inputs)
    assert_output_valid(out, inputs, 5)
    scale = ref.pooled.abs().max()
    assert (out.pooled.float() - ref.pooled).abs().max() <= 0.05 * scale + 1e-3


@pytest.mark.parametrize("head_name", sorted(FUSION_HEADS))
def test_head_rejects_unknown_modality_and_wrong_width(head_name):
    head = build_head(head_name, ["a", "b"])
    toks = random_tokens(["a", "c"], batch=3, seed=0)
    with pytest.raises(ValueError, match="unknown modalities"):
        head(toks)
    with pytest.raises(ValueError, match="no modalities"):
        head({})
    wide = ModalityTokens.from_tokens(torch.randn(3, 2, D + 1), torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="width"):
        head({"a": wide})


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("head_name", sorted(FUSION_HEADS))
def test_encoders_chain_into_head(head_name):
    torch.manual_seed(0)
    encoders = torch.nn.ModuleDict({m: cls(D, cls.example_spec(), **cls.example_kwargs()) for m, cls in ENCODERS.items()})
    head = FUSION_HEADS[head_name](D, list(ENCODERS))
    batch = {m: cls.example_inputs(batch_size=B, seed=1) for m, cls in ENCODERS.items()}
    tokens = {m: encoders[m](x) for m, x in batch.items()}
    out = head(tokens)
    assert_output_valid(out, tokens, B)
    out.pooled.square().sum().backward()
    for pname, p in [*encoders.named_parameters(), *head.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # with modality dropout in between (training): still finite, and nobody loses everything
    dropout = ModalityDropout(0.5).train()
    dropped = dropout(tokens)
    had = torch.stack([t.present for t in tokens.values()], 1).any(1)
    kept = torch.stack([t.present for t in dropped.values()], 1).any(1)
    assert torch.equal(had, kept)
    assert_output_valid(head.train()(dropped), dropped, B)
