"""Tabular tables a user may hand in by mistake: categorical-only, no feature column, lists in a
column, numbers stored as text."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.datasets.tabular import TabularReader
from clinfuse.encoders.ft_tabular import FTTransformerEncoder
from clinfuse.encoders.tabular import TabularMLPEncoder


def _write(tiny, **columns):
    df = pd.DataFrame({"patient_id": tiny.tabular["patient_id"], **columns})
    df.to_parquet(tiny.root / "tabular.parquet", index=False)
    return df


def test_a_categorical_only_table_loads_and_encodes(tiny):
    n = len(tiny.tabular)
    _write(tiny, sex=(["F", "M"] * n)[:n], unit=pd.Categorical((["icu", "ward", None] * n)[:n]))
    reader = TabularReader(tiny.root).fit(tiny.train)
    spec = reader.spec()
    assert spec["numeric_features"] == [] and spec["categorical_features"] == ["sex", "unit"]
    batch = reader.collate([reader.get(p) for p in tiny.train[:4]])
    assert batch["numeric"].shape == (4, 0) and batch["categorical"].shape == (4, 2)
    for enc in (TabularMLPEncoder(16, spec), FTTransformerEncoder(16, spec)):
        out = enc.eval()(batch)
        assert torch.isfinite(out.tokens).all() and out.present.all()


def test_a_table_with_only_patient_ids_is_refused(tiny):
    _write(tiny)
    with pytest.raises(ValueError, match=r"tabular.parquet: no feature columns besides patient_id"):
        TabularReader(tiny.root)


def test_a_column_of_lists_is_refused_naming_column_and_patient(tiny):
    n = len(tiny.tabular)
    _write(tiny, age=np.arange(n, dtype=float), codes=[[i % 3, 7] for i in range(n)])
    first = tiny.tabular["patient_id"].iloc[0]
    with pytest.raises(ValueError, match=rf"column 'codes' has unsupported values of type ndarray \(e.g. patient {first}"):
        TabularReader(tiny.root)


def test_numbers_stored_as_text_warn_and_codes_or_categories_do_not(tiny, monkeypatch):
    from clinfuse.datasets import tabular

    monkeypatch.setattr(tabular, "NUMERIC_TEXT_LEVELS", 5)  # the tiny cohort has 10 tabular patients
    n = len(tiny.tabular)
    ages = [str(40 + i) for i in range(n)]
    ages[3] = "unknown"
    _write(tiny, age=ages, stage=[str(1 + i % 4) for i in range(n)], bmi=pd.Categorical([str(20 + i) for i in range(n)]))
    with pytest.warns(UserWarning, match=r"column 'age' is text, but 9 of its 10 distinct values are numbers \(not numbers: \['unknown'\]\)") as record:
        reader = TabularReader(tiny.root)
    assert not [w for w in record if "'stage'" in str(w.message) or "'bmi'" in str(w.message)]  # 4 codes; explicit category
    assert reader.fit(tiny.train).spec()["categorical_features"] == ["age", "stage", "bmi"]  # still loads, as documented


def test_a_numeric_table_gives_no_warning(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TabularReader(tiny.root)
