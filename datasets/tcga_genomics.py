"""The genomics half of the TCGA converter: MCAT-style genomics and signatures CSVs -> clinfuse files.

``genomics.csv`` of the cohort keeps ``<gene>_rnaseq`` (expression) and ``<gene>_mut`` (0/1
mutations) as they are. Copy number ``<gene>_cnv`` (GISTIC-style levels, -2..2 in MCAT's files) is
ordinal, not a 0/1 mutation, and ``GenomicsReader`` has no third kind: with ``cnv="expression"`` it
is written as ``<gene>_cnv_rnaseq``, so the reader z-scores it on the training cases like
expression and names it ``<gene>_cnv``; with ``cnv="drop"`` it is left out.

``gene_groups.csv`` comes from MCAT's signatures CSV (a column per family, gene names down the
rows, NaN padding): every family lists its genes with an expression column, and their ``_cnv``
features when kept (MCAT groups all omics of a family's genes together). Mutation columns cannot be
grouped (groups index into ``genes``). A signature gene with no column at all is warned about.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.datasets.reader import check_finite, require_columns, to_float

RNA, CNV, MUT = "_rnaseq", "_cnv", "_mut"


def convert_genomics(
    path: Path, signatures: Path | None, cases: list[str], cnv: str
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The cohort's genomics table (``patient_id`` + columns) and gene groups (``gene, group``).

    Args:
        path: the genomics CSV (one row per ``case_id``).
        signatures: MCAT's signatures CSV or None.
        cases: the clinical CSV's cases; rows of other cases are dropped with a warning.
        cnv: ``"expression"`` or ``"drop"``.

    Returns:
        (table, groups); table is None when no clinical case has genomics (with a warning).

    Raises:
        ValueError: naming the file, column and cases: unreadable file, no ``case_id`` column,
            duplicate cases, non-numeric or NaN/inf values, mutations other than 0/1.
    """
    try:
        df = pd.read_csv(path, dtype={"case_id": str}, low_memory=False)
    except Exception as err:  # pandas raises many types; name the file
        raise ValueError(f"{path}: cannot read CSV: {err}") from err
    require_columns(df.columns, ["case_id"], path)
    if df["case_id"].isna().any():
        rows = (np.flatnonzero(df["case_id"].isna().to_numpy()) + 2)[:10].tolist()
        raise ValueError(f"{path}: column 'case_id' is empty in CSV line(s) {rows}")
    dup = df.loc[df["case_id"].duplicated(), "case_id"].unique()[:10].tolist()
    if dup:
        raise ValueError(f"{path}: column 'case_id' has duplicate case(s) {dup} (one row per case expected)")
    known = set(cases)
    extra = df.loc[~df["case_id"].isin(known), "case_id"].tolist()
    if extra:
        warnings.warn(f"{path}: ignoring {len(extra)} case(s) not in the clinical CSV, e.g. {extra[:5]}", stacklevel=3)
        df = df[df["case_id"].isin(known)]
    rna = [c for c in df.columns if c.endswith(RNA)]
    cnvs = [c for c in df.columns if c.endswith(CNV)]
    mut = [c for c in df.columns if c.endswith(MUT)]
    other = [c for c in df.columns if c != "case_id" and c not in rna + cnvs + mut]
    if other:
        warnings.warn(f"{path}: ignoring columns {other[:10]} (not *{RNA}, *{CNV} or *{MUT})", stacklevel=3)
    kept_cnv = cnvs if cnv == "expression" else []
    if not rna and not kept_cnv and not mut:
        raise ValueError(f"{path}: no '*{RNA}', '*{CNV}' or '*{MUT}' column found")
    if df.empty:
        warnings.warn(f"{path}: no case of the clinical CSV has genomics; the modality is absent", stacklevel=3)
        return None, None
    ids = df["case_id"].tolist()
    out = {"patient_id": ids}
    for col in rna + kept_cnv:
        values = to_float(df[col], path, col, ids)
        check_finite(values, ids, path, col)
        out[col if col in rna else col + RNA] = values  # <gene>_cnv -> <gene>_cnv_rnaseq (see module doc)
    for col in mut:
        values = to_float(df[col], path, col, ids)
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            raise ValueError(f"{path}: column '{col}' must be 0/1; case(s) {np.asarray(ids)[bad][:10].tolist()}")
        out[col] = values.astype(np.int64)
    table = pd.DataFrame(out)
    groups = _gene_groups(signatures, path, set(df.columns), cnv == "expression") if signatures is not None else None
    return table, groups


def _gene_groups(signatures: Path, genomics: Path, columns: set[str], keep_cnv: bool) -> pd.DataFrame:
    """``gene, group`` rows from MCAT's signatures CSV, for the genes the genomics CSV has."""
    try:
        sig = pd.read_csv(signatures, dtype=str)
    except Exception as err:  # pandas raises many types; name the file
        raise ValueError(f"{signatures}: cannot read CSV: {err}") from err
    rows, unknown = [], []
    for family in sig.columns:
        for gene in sig[family].dropna().str.strip():
            if not gene:
                continue
            hits = []
            if gene + RNA in columns:
                hits.append(gene)
            if keep_cnv and gene + CNV in columns:
                hits.append(gene + CNV)
            rows.extend((h, family) for h in hits)
            if not hits and gene + MUT not in columns and gene + CNV not in columns:
                unknown.append(f"{gene} ({family})")
    if unknown:
        warnings.warn(
            f"{signatures}: {len(unknown)} signature gene(s) are not in the genomics CSV {genomics} and are "
            f"left out of gene_groups: {unknown[:30]}",
            stacklevel=4,
        )
    return pd.DataFrame(rows, columns=["gene", "group"]).drop_duplicates()
