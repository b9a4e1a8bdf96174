"""Genomics modality: per-patient expression and mutation columns (``genomics.csv``, ``gene_groups.csv``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.reader import (
    ModalityReader,
    read_patient_table,
    check_finite,
    require_columns,
    to_float,
)

EXPRESSION_SUFFIX, MUTATION_SUFFIX = "_rnaseq", "_mut"
#: what to do about a NaN in genomics.csv (the batch has no missing-value mask for genes)
NAN_HINT = "drop that gene column, or the patient's row (a patient without genomics is simply absent)"


class GenomicsReader(ModalityReader):
    """Reads ``<gene>_rnaseq`` (expression) and ``<gene>_mut`` (0/1 mutation) columns.

    Expression is z-scored with the training patients' mean and population std (std 1 for a
    constant gene). Genes are named without their suffix. ``gene_groups.csv`` (``gene, group``;
    ``gene`` with or without the ``_rnaseq`` suffix) becomes the spec's ``gene_groups``: group ->
    indices into ``genes``, groups in order of first appearance; without that file it is ``{}``.
    Expression has no missing-value mask in the batch format, so a NaN (expression or mutation)
    is an error that says what to do: drop the gene column, or the patient's row (a patient
    without genomics is absent).

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet`` (``None`` skips the check).

    Raises:
        ValueError: a missing column, duplicate/unknown patients, non-numeric/NaN/inf expression,
            mutations other than 0/1, a grouped gene without an expression column, or an empty
            or repeated ``gene_groups.csv`` entry, naming the file, column and patients (or rows).
    """

    name = "genomics"
    filename = "genomics.csv"

    def __init__(self, root: str | Path, known_ids: Iterable[str] | None = None) -> None:
        super().__init__(root, known_ids)
        df = read_patient_table(self.path, self.known_ids)
        ids = df["patient_id"].tolist()
        expr_cols = [c for c in df.columns if c.endswith(EXPRESSION_SUFFIX)]
        mut_cols = [c for c in df.columns if c.endswith(MUTATION_SUFFIX)]
        if not expr_cols and not mut_cols:
            raise ValueError(f"{self.path}: no '*{EXPRESSION_SUFFIX}' or '*{MUTATION_SUFFIX}' column found")
        self.genes = [c[: -len(EXPRESSION_SUFFIX)] for c in expr_cols]
        self.mutations = [c[: -len(MUTATION_SUFFIX)] for c in mut_cols]
        self._expr = np.zeros((len(ids), len(expr_cols)))
        self._mut = np.zeros((len(ids), len(mut_cols)), dtype=np.float32)
        other = [c for c in df.columns if c != "patient_id" and c not in expr_cols and c not in mut_cols]
        if other:
            warnings.warn(f"{self.path}: ignoring columns {other[:10]} (neither *_rnaseq nor *_mut)", stacklevel=2)
        for j, col in enumerate(expr_cols):
            self._expr[:, j] = to_float(df[col], self.path, col, ids)
            check_finite(self._expr[:, j], ids, self.path, col, nan_hint=NAN_HINT)
        for j, col in enumerate(mut_cols):
            self._mut[:, j] = to_float(df[col], self.path, col, ids)
            bad = ~np.isin(self._mut[:, j], (0.0, 1.0))
            if bad.any():
                who = np.asarray(ids)[bad][:10].tolist()
                hint = f"; NaN is not allowed: {NAN_HINT}" if np.isnan(self._mut[bad, j]).any() else ""
                raise ValueError(f"{self.path}: column '{col}' must be 0/1; patient(s) {who}{hint}")
        self.gene_groups = self._read_groups()
        self._index = {pid: i for i, pid in enumerate(ids)}

    def _read_groups(self) -> dict[str, list[int]]:
        path = self.root / "gene_groups.csv"
        if not path.exists():
            return {}
        try:
            df = pd.read_csv(path, dtype=str)
        except Exception as err:  # name the file
            raise ValueError(f"{path}: cannot read table: {err}") from err
        require_columns(df.columns, ["gene", "group"], path)
        for col in ("gene", "group"):
            if df[col].isna().any():
                rows = np.flatnonzero(df[col].isna().to_numpy())[:5].tolist()
                raise ValueError(f"{path}: column '{col}' is empty in row(s) {rows}")
        dup = df.duplicated(["gene", "group"])
        if dup.any():
            gene, group = df.loc[dup, ["gene", "group"]].iloc[0]
            raise ValueError(f"{path}: gene '{gene}' is listed twice in group '{group}'")
        position = {g: i for i, g in enumerate(self.genes)}
        groups: dict[str, list[int]] = {}
        for gene, group in zip(df["gene"], df["group"]):
            name = gene[: -len(EXPRESSION_SUFFIX)] if str(gene).endswith(EXPRESSION_SUFFIX) else gene
            if name not in position:
                raise ValueError(
                    f"{path}: gene '{gene}' has no '{name}{EXPRESSION_SUFFIX}' column in {self.path}"
                )
            groups.setdefault(str(group), []).append(position[name])
        return groups

    def config(self) -> dict[str, Any]:
        return {}

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        x = self._expr[[self._index[p] for p in train_ids]]
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return {
            "genes": list(self.genes),
            "mutations": list(self.mutations),
            "mean": mean.tolist(),
            "std": std.tolist(),
        }

    def _apply(self) -> None:
        s = self._state
        if s["genes"] != self.genes or s["mutations"] != self.mutations:
            raise ValueError(f"{self.path}: columns differ from the saved state's genes/mutations")
        self._z = ((self._expr - np.asarray(s["mean"])) / np.asarray(s["std"])).astype(np.float32)

    def _spec(self) -> dict[str, Any]:
        return {
            "genes": list(self.genes),
            "mutations": list(self.mutations),
            "gene_groups": {g: list(idx) for g, idx in self.gene_groups.items()},
        }

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        i = self._index[patient_id]
        return {"expression": self._z[i], "mutations": self._mut[i]}

    def collate(self, items: Sequence[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        """Stack genomics items.

        Shapes:
            expression ``(B, G)`` float, mutations ``(B, G_mut)`` float, present ``(B,)`` bool.
        """
        n_genes, n_mut = len(self.genes), len(self.mutations)
        return {
            "expression": pad_stack(pick(items, "expression"), (n_genes,), np.float32, "genomics.expression"),
            "mutations": pad_stack(pick(items, "mutations"), (n_mut,), np.float32, "genomics.mutations"),
            "present": present_mask(items),
        }
