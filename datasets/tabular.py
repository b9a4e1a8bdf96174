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
    read_patient_table,
    require_columns,
)


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
        ValueError: missing ``patient_id``, duplicate patients, unknown patients, inf values or a
            column of unsupported dtype, each naming the file (and column, patients).
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
                if np.isinf(values).any():
                    who = self._raw.index[np.isinf(values)][:10].tolist()
                    raise ValueError(f"{self.path}: column '{col}' has inf values for patient(s) {who}")
                self._columns["numeric"].append(col)
            elif isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
                self._columns["categorical"].append(col)
            else:
                raise ValueError(f"{self.path}: column '{col}' has unsupported dtype {dtype}")
        self._index = {pid: i for i, pid in enumerate(ids)}

    def config(self) -> dict[str, Any]:
        return {}

    def _numeric(self, columns: list[str], rows: slice | list[int] = slice(None)) -> np.ndarray:
        return self._raw[columns].iloc[rows].to_numpy(dtype=np.float64, na_value=np.nan).reshape(
            -1, len(columns)
        )

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
            values = self._raw[col].iloc[rows]
            levels[col] = sorted({str(v) for v in values[values.notna()]})
        return {
            "numeric_features": list(num_cols),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "categorical_features": list(self._columns["categorical"]),
            "levels": levels,
        }

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
