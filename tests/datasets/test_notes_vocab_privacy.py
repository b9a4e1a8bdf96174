"""A word seen in the notes of fewer than ``min_patients`` training patients is never learned."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
from tokenizers import Tokenizer

from clinfuse.datasets.cohort import Cohort

TRAIN = [f"p{i:02d}" for i in range(8)]


def _notes(tiny, n_common: int) -> None:
    """Every train patient's note says 'sepsis'; 'stable' is in ``n_common`` of them; p00's note
    also names the patient and a record number."""
    rows = [{"patient_id": p, "time": 1.0, "text": "sepsis" + (" stable" if i < n_common else "")}
            for i, p in enumerate(TRAIN)]
    rows[0]["text"] += " mr smithjohn mrn48213"
    pd.DataFrame(rows).to_parquet(tiny.root / "notes.parquet", index=False)


def _reader(tiny, **kwargs):
    return Cohort.load(tiny.root, ["notes"], notes=kwargs).fit().readers["notes"]


@pytest.mark.parametrize("n_common, min_patients", [(5, 5), (3, 3)])
def test_words_vocabulary_keeps_only_words_shared_by_enough_patients(tiny, n_common, min_patients):
    _notes(tiny, n_common)
    vocab = _reader(tiny, min_patients=min_patients).state_dict()["fitted"]["vocab"]
    assert vocab == ["sepsis", "stable"]  # 8 and n_common patients; the name and number: 1 patient each
    # one below the threshold: 'stable' goes too
    vocab = _reader(tiny, min_patients=n_common + 1).state_dict()["fitted"]["vocab"]
    assert vocab == ["sepsis"]


def test_without_a_threshold_the_name_would_be_learned(tiny):
    _notes(tiny, 5)
    assert {"smithjohn", "mrn48213"} <= set(_reader(tiny, min_patients=1).state_dict()["fitted"]["vocab"])


def test_bpe_never_sees_rare_words(tiny):
    _notes(tiny, 5)
    state = _reader(tiny, tokenizer="bpe", vocab_size=200, min_patients=5).state_dict()["fitted"]
    assert "smithjohn" not in state["tokenizer_json"] and "48213" not in state["tokenizer_json"]
    vocab = Tokenizer.from_str(state["tokenizer_json"]).get_vocab()
    assert {"sepsis", "stable"} <= set(vocab)
    loose = _reader(tiny, tokenizer="bpe", vocab_size=200, min_patients=1).state_dict()["fitted"]
    assert "smithjohn" in Tokenizer.from_str(loose["tokenizer_json"]).get_vocab()


def test_min_patients_must_be_positive(tiny):
    with pytest.raises(ValueError, match=r"notes\.parquet.*min_patients"):
        _reader(tiny, min_patients=0)


def test_a_threshold_no_word_meets_warns_that_the_vocabulary_is_empty(tiny):
    _notes(tiny, n_common=5)
    with pytest.warns(UserWarning, match=r"notes\.parquet: no word occurs in the notes of at least min_patients=10000 "
                                         r"training patients \(8 training patients have notes\): the vocabulary is empty"):
        reader = _reader(tiny, min_patients=10000)
    assert reader.state_dict()["fitted"]["vocab"] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _reader(tiny, min_patients=5).state_dict()["fitted"]["vocab"] == ["sepsis", "stable"]
