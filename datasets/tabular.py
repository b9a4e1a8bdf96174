"""Tabular modality: one row per patient of numeric and categorical columns (``tabular.parquet``)."""

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
    case_collisions,
    huge_values,
    read_patient_table,
    require_columns,
)


#: a text column with more distinct values than this, nearly all numbers, gets a warning
NUMERIC_TEXT_LEVELS = 20


class TabularReader(ModalityReader):
    """Reads ``tabular.parquet``: numeric columns are z-scored, categorical ones become level ids.

    Numeric columns (any numeric or bool dtype) are standardised with the training patients' mean
    and population std (ddof=0; a constant or all-missing column uses std 1 and mean 0). A missing
    value (NaN) is NOT imputed: ``numeric_observed`` is False there and the value is 0. Categorical
    columns (string/object/category dtype) map to 0 = missing (null), 1 = a level not seen in
    training, 2.. = the training levels in sorted order.

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet`` (``None`` skips the check).

    Raises:
        ValueError: missing ``patient_id``, no feature column, duplicate patients, unknown patients,
            inf values, a column of unsupported dtype or a text column holding non-strings (lists,
            bytes), each naming the file (and column, patients).
    Warns:
        UserWarning: a text column whose values are nearly all numbers (a numeric column stored as
        text would silently become one categorical level per value); at ``fit``, a categorical
        column whose values differ only in case or surrounding whitespace (``'F'``, ``'f'``,
        ``'F '``): they stay different levels, matched exactly.
    """

    name = "tabular"
    filename = "tabular.parquet"

    def __init__(self, root: str | Path, known_ids: Iterable[str] | None = None) -> None:
        super().__init__(root, known_ids)
        df = read_patient_table(self.path, self.known_ids)
        ids = df["patient_id"].tolist()
        self._raw = df.set_index("patient_id")
        self._columns = {"numeric": [], "categorical": []}
        for col in self._raw.columns:
            dtype = self._raw[col].dtype
            if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
                values = self._raw[col].to_numpy(dtype=np.float64, na_value=np.nan)
                for bad, what in ((np.isinf(values), "inf values"), (huge_values(values), "values beyond float32's range (|x| > 3.4e38)")):
                    if bad.any():
                        raise ValueError(f"{self.path}: column '{col}' has {what} for patient(s) {self._raw.index[bad][:10].tolist()}")
                self._columns["numeric"].append(col)
            elif isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
                if not isinstance(dtype, pd.CategoricalDtype):
                    self._check_text(col)
                self._columns["categorical"].append(col)
            else:
                raise ValueError(f"{self.path}: column '{col}' has unsupported dtype {dtype}")
        if not self._raw.columns.size:
            raise ValueError(f"{self.path}: no feature columns besides patient_id")
        self._index = {pid: i for i, pid in enumerate(ids)}

    def _check_text(self, col: str) -> None:
        """A text column must hold strings (not lists, bytes, dicts); one whose values are nearly all
        numbers with many distinct values is almost surely a numeric column stored as text: warn,
        since it would become one categorical level per distinct value."""
        values = self._raw[col].dropna()
        odd = values[[not isinstance(v, str) for v in values]]
        if len(odd):
            raise ValueError(
                f"{self.path}: column '{col}' has unsupported values of type {type(odd.iloc[0]).__name__} "
                f"(e.g. patient {odd.index[0]}: {odd.iloc[0]!r}); expected numbers or strings"
            )
        distinct = pd.unique(values)
        parsed = pd.to_numeric(pd.Series(distinct), errors="coerce")
        if len(distinct) > NUMERIC_TEXT_LEVELS and parsed.notna().mean() >= 0.9:
            not_numbers = [str(v) for v in distinct[parsed.isna().to_numpy()]][:5]
            warnings.warn(
                f"{self.path}: column '{col}' is text, but {parsed.notna().sum()} of its {len(distinct)} distinct values "
                f"are numbers (not numbers: {not_numbers}); it is treated as categorical, one level per distinct "
                f"value. Store it as a numeric column (NaN where missing), or as pandas 'category' to keep it "
                f"categorical without this warning.",
                stacklevel=3,
            )

    def config(self) -> dict[str, Any]:
        return {}

    def _numeric(self, columns: list[str], rows: slice | list[int] = slice(None)) -> np.ndarray:
        frame = self._raw[columns].iloc[rows]
        if not columns:  # a categorical-only table: (n, 0), which reshape(-1, 0) cannot infer
            return np.zeros((len(frame), 0))
        return frame.to_numpy(dtype=np.float64, na_value=np.nan)

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        rows = [self._index[p] for p in train_ids]
        num_cols = self._columns["numeric"]
        x = self._numeric(num_cols, rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns handled below
            mean = np.nanmean(x, axis=0) if len(num_cols) else np.zeros(0)
            std = np.nanstd(x, axis=0) if len(num_cols) else np.zeros(0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        levels = {}
        for col in self._columns["categorical"]:
            self._warn_case_collisions(col)
            values = self._raw[col].iloc[rows]
            levels[col] = sorted({str(v) for v in values[values.notna()]})
        return {
            "numeric_features": list(num_cols),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "categorical_features": list(self._columns["categorical"]),
            "levels": levels,
        }

    def _warn_case_collisions(self, col: str) -> None:
        """Warn when values of the categorical column ``col`` (any patient of the file) collide
        after ``str.strip().casefold()``: each stays its own level (or an unseen one)."""
        values = self._raw[col].dropna().astype(str)
        groups = case_collisions(pd.unique(values))
        if groups:
            examples = {v: values.index[values.to_numpy() == v][:3].tolist() for v in groups[0]}
            warnings.warn(
                f"{self.path}: column '{col}' has values that differ only in case or surrounding whitespace: "
                f"{groups[:10]} (patients, e.g. {examples}); they are treated as different levels (matching is "
                f"exact, at prediction too). Normalise them before writing the file, e.g. with "
                f"df[{col!r}].str.strip() and one spelling per level.",
                stacklevel=4,
            )

    def _apply(self) -> None:
        s = self._state
        require_columns(self._raw.columns, s["numeric_features"] + s["categorical_features"], self.path)
        x = self._numeric(s["numeric_features"])
        observed = ~np.isnan(x)
        z = (x - np.asarray(s["mean"])) / np.asarray(s["std"])
        self._num = np.where(observed, z, 0.0).astype(np.float32)
        self._obs = observed
        codes = np.zeros((len(self._raw), len(s["categorical_features"])), dtype=np.int64)
        for j, col in enumerate(s["categorical_features"]):
            raw = self._raw[col]
            known = pd.Categorical(raw.astype("string"), categories=s["levels"][col]).codes
            codes[:, j] = np.where(raw.isna().to_numpy(), 0, np.where(known < 0, 1, known + 2))
        self._cat = codes

    def _spec(self) -> dict[str, Any]:
        s = self._state
        return {
            "numeric_features": list(s["numeric_features"]),
            "categorical_features": list(s["categorical_features"]),
            "categorical_cardinalities": [len(s["levels"][c]) + 2 for c in s["categorical_features"]],
        }

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        i = self._index[patient_id]
        return {"numeric": self._num[i], "numeric_observed": self._obs[i], "categorical": self._cat[i]}

    def collate(self, items: Sequence[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        """Stack tabular items.

        Shapes:
            numeric ``(B, F_num)`` float, numeric_observed ``(B, F_num)`` bool,
            categorical ``(B, F_cat)`` long, present ``(B,)`` bool.
        """
        f_num, f_cat = len(self._state["numeric_features"]), len(self._state["categorical_features"])
        return {
            "numeric": pad_stack(pick(items, "numeric"), (f_num,), np.float32, "tabular.numeric"),
            "numeric_observed": pad_stack(
                pick(items, "numeric_observed"), (f_num,), np.bool_, "tabular.numeric_observed"
            ),
            "categorical": pad_stack(pick(items, "categorical"), (f_cat,), np.int64, "tabular.categorical"),
            "present": present_mask(items),
        }
