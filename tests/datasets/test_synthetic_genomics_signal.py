"""The synthetic cohort's ``genomics_signal``: every gene of a pathway follows it, or one per patient."""

import numpy as np
import pytest

from clinfuse.datasets.synthetic.genomics import MUTATIONS, PATHWAYS, gene_groups, render_genomics

N = 400


def _shift(signal: str, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the view adds to each gene's expression (the same draws with u and with u = 0), and the
    mutation flags; (N, 48) and (N, 8)."""
    ids, present = [f"p{i}" for i in range(N)], np.ones(N, dtype=bool)
    genes = [f"{g}_rnaseq" for g in gene_groups()["gene"]]
    with_u = render_genomics(u, ids, present, np.random.default_rng(7), signal)
    without = render_genomics(np.zeros_like(u), ids, present, np.random.default_rng(7), signal)
    return (with_u[genes] - without[genes]).to_numpy(), with_u[[f"{g}_mut" for g in MUTATIONS]].to_numpy()


def test_exclusive_puts_each_pathway_in_one_random_gene_per_patient():
    u = np.random.default_rng(0).choice([-2.0, 2.0], size=(N, 6))  # every pathway clearly on
    co, co_mut = _shift("coexpression", u)
    ex, ex_mut = _shift("exclusive", u)
    pathway = gene_groups()["group"].map({p: j for j, p in enumerate(PATHWAYS)}).to_numpy()
    assert (np.abs(co) > 0.1).all()  # coexpression: every gene moves with its pathway
    carriers = []
    for j in range(len(PATHWAYS)):
        moved = np.abs(ex[:, pathway == j]) > 1e-3  # (N, 8)
        assert (moved.sum(1) == 1).all()  # exactly one gene per pathway and patient
        hit = moved.argmax(1)
        carriers.append(hit)
        # it carries sqrt(8) times what that gene carries under coexpression (same loading, same sign)
        np.testing.assert_allclose(ex[np.arange(N), np.flatnonzero(pathway == j)[hit]],
                                   np.sqrt(8) * co[np.arange(N), np.flatnonzero(pathway == j)[hit]], atol=5e-4)  # 4-decimal files
    counts = np.bincount(np.concatenate(carriers), minlength=8)
    assert counts.min() > 0.6 * counts.mean()  # drawn at random: every member carries in some patients
    np.testing.assert_array_equal(ex_mut, co_mut)  # the mutation flags are the same draws


def test_exclusive_hides_the_pathway_from_the_signed_sum():
    """A linear reading (the signed sum of a pathway's genes) recovers u[j] far worse."""
    u = np.random.default_rng(1).standard_normal((N, 6))
    pathway = gene_groups()["group"].map({p: j for j, p in enumerate(PATHWAYS)}).to_numpy()
    ids, present = [f"p{i}" for i in range(N)], np.ones(N, dtype=bool)
    genes = [f"{g}_rnaseq" for g in gene_groups()["gene"]]
    corr = {}
    for signal in ("coexpression", "exclusive"):
        x = render_genomics(u, ids, present, np.random.default_rng(3), signal)[genes].to_numpy()
        sign = np.sign(np.corrcoef(x.T, u[:, pathway].T).diagonal(48)[:48])  # each gene's loading sign
        total = np.stack([(x[:, pathway == j] * sign[pathway == j]).sum(1) for j in range(6)], 1)
        corr[signal] = np.mean([np.corrcoef(total[:, j], u[:, j])[0, 1] for j in range(6)])
    # measured: 0.978 and 0.845 (theory with unit loadings: 8 / sqrt(64 + 8 * 0.36) = 0.978, 0.857)
    assert corr["coexpression"] > 0.95 and corr["exclusive"] < corr["coexpression"] - 0.08, corr


def test_unknown_signal_is_refused():
    with pytest.raises(ValueError, match="genomics signal must be one of"):
        render_genomics(np.zeros((2, 6)), ["a", "b"], np.ones(2, dtype=bool), np.random.default_rng(0), "pathway")

