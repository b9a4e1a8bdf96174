"""Symile loss, MIP and CLIP baselines against the ``symile`` package and hand-written references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from clinfuse.fusion.symile_loss import clip_loss, mip, mip_scores, pairwise_clip_loss, symile_loss

LOG_SCALE = math.log(1 / 0.07)


@pytest.fixture
def symile_pkg():
    """The reference implementation (a dev dependency); only the tests that use it skip without it."""
    return pytest.importorskip("symile")


def random_reps(m: int, n: int = 6, d: int = 5, seed: int = 0, dtype=torch.float32, grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    reps = [F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1) for _ in range(m)]
    return [r.requires_grad_(grad) for r in reps]


def hand_clip(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE written out: mean of -log softmax of the diagonal, rows then columns."""
    logits = scale * a @ b.T
    diag = logits.diagonal()
    rows = (logits.exp().sum(1).log() - diag).mean()
    cols = (logits.exp().sum(0).log() - diag).mean()
    return (rows + cols) / 2


def brute_force_symile_n_squared(reps: list[torch.Tensor], scale: float) -> torch.Tensor:
    """Every anchor, every row, every tuple of the other modalities, one MIP at a time."""
    m, n = len(reps), reps[0].shape[0]
    total = 0.0
    for i in range(m):
        others = [r for j, r in enumerate(reps) if j != i]
        for row in range(n):
            logits = [scale * float(mip(reps[i][row], *(o[t] for o, t in zip(others, tup))))
                      for tup in itertools.product(range(n), repeat=m - 1)]
            positive = scale * float(mip(reps[i][row], *(o[row] for o in others)))
            total += math.log(sum(math.exp(v) for v in logits)) - positive
    return torch.tensor(total / (m * n), dtype=torch.float64)


# --------------------------------------------------------------------------- MIP


def test_mip_hand_computed():
    a, b, c = torch.tensor([1.0, 2, 3]), torch.tensor([4.0, 5, 6]), torch.tensor([7.0, 8, 9])
    assert mip(a, b).item() == 32.0
    assert mip(a, b, c).item() == 1 * 4 * 7 + 2 * 5 * 8 + 3 * 6 * 9 == 270
    assert mip(a, b, c, torch.tensor([1.0, 0, -1])).item() == 28 - 162


def test_mip_batched_forms():
    x, y, z = random_reps(3, n=4, d=3, seed=1)
    assert mip(x, y, z).shape == (4,)
    torch.testing.assert_close(mip(x, y, z)[2], (x[2] * y[2] * z[2]).sum())
    pairs = mip(x[:, None], y[None])  # (4, 4)
    torch.testing.assert_close(pairs, x @ y.T)
    triples = mip(x[:, None, None], y[None, :, None], z[None, None])  # (4, 4, 4)
    assert triples[1, 3, 0] == pytest.approx(float((x[1] * y[3] * z[0]).sum()), abs=1e-6)
    scores = mip_scores([x, y], z)  # scores[i, k] = MIP(x[i], y[i], z[k])
    assert scores.shape == (4, 4)
    torch.testing.assert_close(scores, triples.diagonal(dim1=0, dim2=1).T)


def test_mip_scores_match_the_package(symile_pkg):
    x, y, z = random_reps(3, n=5, d=4, seed=2)
    torch.testing.assert_close(mip_scores([y, z], x), symile_pkg.MIPSimilarity()(x, [y, z]))


# --------------------------------------------------------------------------- against the package


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [3, 4])
def test_n_squared_matches_the_package(symile_pkg, m, dtype):
    reps = random_reps(m, n=7 if m == 3 else 5, d=6, seed=m, dtype=dtype)
    log_scale = torch.tensor(LOG_SCALE, dtype=dtype)
    ours = symile_loss(reps, log_scale, "n_squared")
    theirs = symile_pkg.Symile("n_squared")(reps, log_scale.exp())  # the package takes exp(log scale)
    assert abs(ours.item() - theirs.item()) < 1e-6


@pytest.mark.parametrize("m", [2, 3, 4])
def test_n_matches_the_package_with_the_same_seed(symile_pkg, m):
    reps = random_reps(m, n=9, d=6, seed=10 + m)
    torch.manual_seed(123)
    ours = symile_loss(reps, LOG_SCALE, "n")
    torch.manual_seed(123)
    theirs = symile_pkg.Symile("n")(reps, torch.tensor(LOG_SCALE).exp())
    assert abs(ours.item() - theirs.item()) < 1e-6
    # a generator seeded like the global one draws the same permutations, and leaves it alone
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    with_gen = symile_loss(reps, LOG_SCALE, "n", generator=torch.Generator().manual_seed(123))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert abs(with_gen.item() - theirs.item()) < 1e-6


@pytest.mark.parametrize("mode", ["n", "n_squared"])
def test_gradients_match_the_package(symile_pkg, mode):
    reps = random_reps(3, n=6, d=4, seed=5, dtype=torch.float64, grad=True)
    log_scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(9)
    ours = torch.autograd.grad(symile_loss(reps, log_scale, mode), [*reps, log_scale])
    torch.manual_seed(9)
    theirs = torch.autograd.grad(symile_pkg.Symile(mode)(reps, log_scale.exp()), [*reps, log_scale])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("recompute", [False, True])
def test_n_squared_blocks_and_recompute_change_nothing(symile_pkg, recompute):
    reps = random_reps(3, n=8, d=4, seed=6, dtype=torch.float64, grad=True)
    whole = symile_loss(reps, 0.5, "n_squared")
    blocked = symile_loss(reps, 0.5, "n_squared", block_elements=20, recompute=recompute)  # 3 rows a block
    theirs = symile_pkg.Symile("n_squared")(reps, math.exp(0.5))
    torch.testing.assert_close(blocked, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(whole, theirs, rtol=0, atol=1e-12)
    g_blocked = torch.autograd.grad(blocked, reps)
    g_theirs = torch.autograd.grad(theirs, reps)
    for a, b in zip(g_blocked, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- independent references


@pytest.mark.parametrize("m", [2, 3, 4])
def test_n_squared_equals_brute_force(m):
    reps = random_reps(m, n=3, d=4, seed=20 + m, dtype=torch.float64)
    expected = brute_force_symile_n_squared(reps, scale=2.0)
    torch.testing.assert_close(symile_loss(reps, math.log(2.0), "n_squared"), expected, rtol=0, atol=1e-10)


def test_two_modalities_reduce_to_symmetric_clip():
    a, b = random_reps(2, n=8, d=5, seed=3, dtype=torch.float64)
    expected = hand_clip(a, b, scale=1 / 0.07)
    torch.testing.assert_close(symile_loss([a, b], LOG_SCALE, "n_squared"), expected)
    torch.testing.assert_close(clip_loss(a, b, LOG_SCALE), expected)
    torch.testing.assert_close(clip_loss(b, a, torch.tensor(LOG_SCALE)), expected)


def test_pairwise_clip_is_the_mean_over_pairs():
    x, y, z = random_reps(3, n=6, d=4, seed=4, dtype=torch.float64)
    expected = (hand_clip(x, y, 3.0) + hand_clip(x, z, 3.0) + hand_clip(y, z, 3.0)) / 3
    torch.testing.assert_close(pairwise_clip_loss([x, y, z], math.log(3.0)), expected)
    torch.testing.assert_close(pairwise_clip_loss([x, y], math.log(3.0)), hand_clip(x, y, 3.0))


def test_one_hot_tuples_hand_computed():
    # one-hot representations identical across modalities: the positive MIP is 1, every negative 0
    eye = torch.eye(4)
    loss = symile_loss([eye, eye, eye], math.log(3.0), "n_squared")
    expected = math.log(math.exp(3.0) + 15) - 3.0  # 16 tuples per row, 15 with MIP 0
    assert loss.item() == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_name_the_shapes():
    a, b = torch.randn(4, 8), torch.randn(5, 8)
    with pytest.raises(ValueError, match=r"\(4, 8\), \(5, 8\)"):
        symile_loss([a, b, a], 0.0)
    with pytest.raises(ValueError, match=r"\(4, 8\), \(4, 7\)"):
        symile_loss([a, torch.randn(4, 7)], 0.0, "n_squared")
    with pytest.raises(ValueError, match="at least 2"):
        symile_loss([a], 0.0)
    with pytest.raises(ValueError, match=r"\(4, 8\), \(8,\)"):
        pairwise_clip_loss([a, torch.randn(8)], 0.0)
    with pytest.raises(ValueError, match="negative_sampling.*'n_cubed'"):
        symile_loss([a, a], 0.0, "n_cubed")
    with pytest.raises(ValueError, match="logit_scale.*scalar"):
        symile_loss([a, a], torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(4, 8\), \(5, 8\)"):
        clip_loss(a, b, 0.0)
    with pytest.raises(ValueError, match=r"\(4, 8\), \(4, 7\)"):
        mip(a, torch.randn(4, 7))
    with pytest.raises(ValueError, match="at least two"):
        mip(a)
    with pytest.raises(ValueError, match=r"\(4, 8\), \(5, 8\)"):
        mip(a, b)
    with pytest.raises(ValueError, match=r"candidates \(3, 7\)"):
        mip_scores([a], torch.randn(3, 7))
