"""PatientIndex: the compact id -> position mapping behaves as the dict it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from clinfuse.datasets.patient_index import PatientIndex


def test_behaves_like_a_sorted_dict():
    ids = ["p10", "p9", "b", "é-42", "a", "p1"]
    idx = PatientIndex(ids)
    want = dict(sorted((p, i) for i, p in enumerate(ids)))
    assert list(idx) == list(want) and len(idx) == len(want)
    assert all(idx[p] == v for p, v in want.items()) and dict(idx.items()) == want
    for absent in ("p", "p100", "", "zzzzzzzzzzzzzzzzzzzzzzzz", 3, None):
        assert absent not in idx
    with pytest.raises(KeyError):
        idx["p2"]


def test_where_and_unknown():
    idx = PatientIndex(["c", "a", "b"], positions=np.array([5, 0, 2]))
    keep = np.zeros(6, dtype=bool)
    keep[[5, 2]] = True
    sub = idx.where(keep)
    assert dict(sub.items()) == {"b": 2, "c": 5} and "a" not in sub
    assert idx.unknown({"a", "b"}) == ["c"]
    assert idx.unknown(["a", "b", "c", "a-much-longer-known-id"]) == []
    assert idx.unknown([]) == ["a", "b", "c"]
