"""The notes reader's BPE tokenizer: trained on train notes only, saved in the state, same ids back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.datasets.notes import NotesReader


def fitted(tiny, **kwargs) -> NotesReader:
    kwargs.setdefault("min_patients", 1)  # the tiny cohort has 8 train patients; the threshold has its own tests
    return Cohort.load(tiny.root, ["notes"], notes=kwargs).fit().readers["notes"]


def all_ids(reader: NotesReader) -> dict[str, np.ndarray]:
    return {p: reader.get(p)["token_ids"] for p in reader.patient_ids}


def test_bpe_vocabulary_comes_from_train_notes_only(tiny):
    reader = fitted(tiny, tokenizer="bpe", vocab_size=300)
    vocab = Tokenizer.from_str(reader.state_dict()["fitted"]["tokenizer_json"]).get_vocab()
    # train notes (p00-p07) are few and short: 300 subwords merge every train word completely
    assert {"sepsis", "stable", "troponin", "lactate"} <= set(vocab)
    # "zebra"/"unseenword" only occur in the val note of p08, "again" only in the test note of p10
    assert not {"zebra", "unseenword", "again"} & set(vocab)
    assert vocab["[PAD]"] == 0 and vocab["[UNK]"] == 1
    # editing a test patient's note leaves the fitted tokenizer unchanged (fit sees train only)
    before = reader.state_dict()
    df = tiny.notes.copy()
    df.loc[df["patient_id"] == "p10", "text"] = "brandnew brandnew brandnew zebra"
    df.to_parquet(tiny.root / "notes.parquet", index=False)
    assert fitted(tiny, tokenizer="bpe", vocab_size=300).state_dict() == before


def test_bpe_ids_are_the_tokenizer_ids_of_each_note_in_time_order(tiny):
    reader = fitted(tiny, tokenizer="bpe", vocab_size=300, max_words=4)
    tok = Tokenizer.from_str(reader.state_dict()["fitted"]["tokenizer_json"])
    p00 = reader.get("p00")
    texts = tiny.notes[tiny.notes["patient_id"] == "p00"].sort_values("time")["text"].tolist()
    for k, text in enumerate(texts):
        expected = tok.encode(text).ids[:4]
        assert p00["token_ids"][k, : len(expected)].tolist() == expected
        assert p00["token_mask"][k].sum() == len(expected)
    np.testing.assert_allclose(p00["note_times"], [1.0, 2.0, 30.0])
    # "admitted with sepsis, sepsis likely." -> whole train words, the comma is its own token
    assert tok.encode(texts[0]).tokens[:4] == ["admitted", "with", "sepsis", ","]
    # an unseen val word splits into known pieces/unknown characters: never a single token
    zebra = tok.encode("zebra").tokens
    assert len(zebra) > 1 and "zebra" not in zebra
    assert reader.spec() == {"vocab_size": tok.get_vocab_size(), "max_words": 4}


def test_bpe_state_round_trip_gives_identical_ids(tiny):
    reader = fitted(tiny, tokenizer="bpe", vocab_size=40)
    state = json.loads(json.dumps(reader.state_dict()))  # JSON-able, as stored in a checkpoint
    assert state["config"]["tokenizer"] == "bpe" and "tokenizer_json" in state["fitted"]
    restored = NotesReader.from_state(tiny.root, state)
    assert restored.spec() == reader.spec()
    a, b = all_ids(reader), all_ids(restored)
    assert a.keys() == b.keys() and all(np.array_equal(a[p], b[p]) for p in a)
    # a small vocabulary really splits words: some note has more subwords than words
    n_words = tiny.notes["text"].str.findall(r"[A-Za-z0-9]+").str.len().sum()
    assert sum(int((ids != 0).sum()) for ids in a.values()) > n_words
    # training is reproducible: the same train notes give the same tokenizer
    assert fitted(tiny, tokenizer="bpe", vocab_size=40).state_dict() == reader.state_dict()


def test_words_tokenizer_is_the_default_and_unknown_tokenizer_raises(tiny):
    default = fitted(tiny)
    assert default.config()["tokenizer"] == "words" and "vocab" in default.state_dict()["fitted"]
    assert default.get("p00")["token_ids"][0, 2:4].tolist() == [2, 2]  # "sepsis" is the top train word
    with pytest.raises(ValueError, match=r"notes\.parquet.*tokenizer 'sentencepiece'"):
        fitted(tiny, tokenizer="sentencepiece")


def test_datamodule_passes_the_tokenizer_options(tiny, assert_batch_format):
    dm = ClinicalDataModule(root=str(tiny.root), modalities=["notes"], batch_size=12,
                            notes_tokenizer="bpe", notes_vocab_size=30, max_words=6, notes_min_patients=1)
    spec = dm.spec
    assert spec["notes"]["vocab_size"] <= 32 and spec["notes"]["max_words"] == 6
    state = dm.preprocessing_state()["modalities"]["notes"]
    assert state["config"]["tokenizer"] == "bpe" and state["config"]["vocab_size"] == 30
    batch = next(iter(dm.split_dataloader("train")))
    assert_batch_format(batch, spec, dm.n_classes)
    assert pd.Series(batch["patient_id"]).isin(tiny.train).all()
