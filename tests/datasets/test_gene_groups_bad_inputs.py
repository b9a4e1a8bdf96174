"""gene_groups.csv mistakes: an empty group or gene, a gene listed twice in one group."""

from __future__ import annotations

import pandas as pd
import pytest

from clinfuse.datasets.genomics import GenomicsReader


def _groups(tiny) -> pd.DataFrame:
    return pd.read_csv(tiny.root / "gene_groups.csv", dtype=str)


@pytest.mark.parametrize("column", ["group", "gene"])
def test_an_empty_entry_is_refused(tiny, column):
    df = _groups(tiny)
    df.loc[1, column] = None
    df.to_csv(tiny.root / "gene_groups.csv", index=False)
    with pytest.raises(ValueError, match=rf"gene_groups.csv: column '{column}' is empty in row\(s\) \[1\]"):
        GenomicsReader(tiny.root)


def test_a_gene_twice_in_a_group_is_refused_but_in_two_groups_is_fine(tiny):
    df = _groups(tiny)
    gene, group = df.loc[0, "gene"], df.loc[0, "group"]
    other = next(g for g in df["group"] if g != group)
    pd.concat([df, pd.DataFrame({"gene": [gene], "group": [other]})]).to_csv(tiny.root / "gene_groups.csv", index=False)
    spec = GenomicsReader(tiny.root).fit(tiny.train).spec()
    (idx,) = spec["gene_groups"][group]  # the tiny cohort's first group has this one gene
    assert spec["gene_groups"][other].count(idx) == 1  # a gene may sit in two pathways
    pd.concat([df, df.iloc[[0]]]).to_csv(tiny.root / "gene_groups.csv", index=False)
    with pytest.raises(ValueError, match=rf"gene '{gene}' is listed twice in group '{group}'"):
        GenomicsReader(tiny.root)
