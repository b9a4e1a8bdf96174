"""Notes modality: several timed free-text notes per patient (``notes.parquet``)."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from clinfuse.datasets.ecg import CACHE_DIR
from clinfuse.datasets.note_embeddings import CACHE_SUBDIR, PretrainedNoteEmbedder, check_model_dir
from clinfuse.datasets.note_tokenizers import encode_bpe, load_bpe, train_bpe
from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.reader import ModalityReader, check_finite, check_known_ids, read_table, to_float

PAD, UNK = 0, 1
TOKENIZERS = ("words", "bpe")
DEFAULT_VOCAB_SIZE = {"words": 5000, "bpe": 4000}
_TOKEN = re.compile(r"[a-z0-9]+")


LONG_NOTES = ("truncate", "split")
NO_TIME_HINT = "drop notes without a time, or give them one: a note is placed by its time"


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into runs of ``[a-z0-9]``."""
    return _TOKEN.findall(text.lower())


def split_note(text: str, max_words: int) -> list[str]:
    """``text`` cut just before every ``max_words``-th word (words as :func:`tokenize` finds them):
    consecutive segments of at most ``max_words`` words each, whose words together are the text's.
    A text of at most ``max_words`` words comes back whole. (A text whose lowercase form has another
    length, which a few non-ASCII letters cause, is cut in its lowercase form.)"""
    low = text.lower()
    starts = [m.start() for m in _TOKEN.finditer(low)]
    if len(starts) <= max_words:
        return [text]
    source = text if len(low) == len(text) else low
    bounds = [0, *starts[max_words::max_words], len(source)]
    return [source[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def decode_texts(texts: Sequence[Any], ids: Sequence[str], path: Path) -> list[Any]:
    """``texts`` with every ``bytes`` value (a parquet ``binary`` column) decoded as UTF-8; other
    values unchanged.

    Raises:
        ValueError: naming ``path``, column ``text`` and the patients whose bytes are not UTF-8.
    """
    out, bad = [], []
    for text, pid in zip(texts, ids):
        if isinstance(text, (bytes, bytearray, memoryview)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as err:
                bad.append((pid, err))
        out.append(text)
    if bad:
        who = list(dict.fromkeys(pid for pid, _ in bad))[:10]
        raise ValueError(f"{path}: column 'text' holds bytes that are not valid UTF-8 for patient(s) {who} "
                         f"(first: {bad[0][1]}); store the notes as UTF-8 text")
    return out


class NotesReader(ModalityReader):
    """Reads notes, keeps each patient's most recent ``max_notes`` and tokenizes or embeds them.

    ``tokenizer="words"``: ``fit`` builds the vocabulary of the ``vocab_size`` most frequent
    training words (ties broken alphabetically). ``tokenizer="bpe"``: ``fit`` trains a byte-pair
    subword tokenizer (HuggingFace ``tokenizers``) of ``vocab_size`` subwords on the training
    patients' note texts only; its JSON travels in ``state_dict()``. Both learn only the words found
    in the notes of at least ``min_patients`` training patients (BPE trains on the notes with the
    rarer words removed): the vocabulary is saved with the model and logged to MLflow, and a name or
    record number seen in one patient's notes must not be in it. Either way ids are 0 = padding,
    1 = unknown, 2.. = vocabulary, and each note keeps its first ``max_words`` tokens.
    A note with no ``[a-z0-9]`` word is dropped with a warning (it would be an all-padding note);
    a patient left with no note is absent.

    ``pretrained`` (a local HuggingFace model directory) replaces token ids by one frozen
    embedding per note (``datasets/note_embeddings.py``: computed once, cached under
    ``<root>/.clinfuse_cache/note_embeddings/``; ``max_words`` and the tokenizer do not apply).
    The batch then holds ``embeddings (B, K, E)`` instead of ``token_ids``/``token_mask`` and the
    spec is ``{"embedding_dim": E}``.

    ``long_notes="split"`` keeps all of a long note instead of its first ``max_words`` tokens: the
    note is cut into consecutive segments of ``max_words`` words (:func:`split_note`), each a note
    of its own with the note's time, in order; ``max_notes`` then counts segments (the most recent
    kept). It applies to the word vocabulary and to ``pretrained`` models (whose own token limit it
    keeps a segment within); with ``bpe`` a segment of ``max_words`` words could still exceed
    ``max_words`` subwords, so that combination is refused.

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet`` (``None`` skips the check).
        max_notes: notes kept per patient (the most recent).
        max_words: tokens kept per note (the first).
        vocab_size: words (``words``) or subwords (``bpe``) in the vocabulary, without the two
            special ids; ``None`` = 5000 words or 4000 subwords.
        tokenizer: ``words`` (lowercase ``[a-z0-9]`` runs) or ``bpe``.
        min_patients: a word enters the vocabulary (or the BPE training text) only if the notes of
            at least this many training patients contain it.
        pretrained: a local model directory to embed notes with, or ``None`` for token ids.
        cache: whether to read/write the embedding cache (``pretrained`` only).
        long_notes: ``truncate`` (keep each note's first ``max_words`` tokens) or ``split``.

    Raises:
        ValueError: a missing column, unknown patients, null text, binary text that is not
            UTF-8 (binary text is decoded as UTF-8), or a non-numeric/NaN/inf time (a datetime or
            timedelta time too: times are float hours), naming the file, column and patients (and
            what to do); an unknown tokenizer; a ``pretrained`` path that is not a
            model directory, naming it.
    """

    name = "notes"
    filename = "notes.parquet"

    def __init__(
        self,
        root: str | Path,
        known_ids: Iterable[str] | None = None,
        max_notes: int = 8,
        max_words: int = 128,
        vocab_size: int | None = None,
        tokenizer: Literal["words", "bpe"] = "words",
        pretrained: str | None = None,
        cache: bool = True,
        min_patients: int = 5,
        long_notes: Literal["truncate", "split"] = "truncate",
    ) -> None:
        super().__init__(root, known_ids)
        if long_notes not in LONG_NOTES:
            raise ValueError(f"{self.path}: long_notes must be one of {LONG_NOTES}, got {long_notes!r}")
        if long_notes == "split" and tokenizer == "bpe" and pretrained is None:
            raise ValueError(
                f"{self.path}: long_notes='split' cuts notes into max_words words, which can exceed max_words "
                f"BPE subwords; use tokenizer='words' or a pretrained model with it"
            )
        self.long_notes = long_notes
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"{self.path}: unknown notes tokenizer {tokenizer!r}; expected one of {TOKENIZERS}")
        vocab_size = DEFAULT_VOCAB_SIZE[tokenizer] if vocab_size is None else vocab_size
        if min(max_notes, max_words, vocab_size) < 1:
            raise ValueError(
                f"max_notes, max_words, vocab_size must be >= 1, got {max_notes}, {max_words}, {vocab_size}"
            )
        if min_patients < 1:
            raise ValueError(f"{self.path}: min_patients must be >= 1, got {min_patients}")
        self.max_notes, self.max_words, self.vocab_size = int(max_notes), int(max_words), int(vocab_size)
        self.min_patients = int(min_patients)
        self.tokenizer, self.pretrained, self.cache = tokenizer, pretrained, bool(cache)
        if pretrained is not None:
            check_model_dir(pretrained)  # fail early, naming the path
        df = read_table(self.path, ["patient_id", "time", "text"])
        ids = df["patient_id"].tolist()
        check_known_ids(ids, self.known_ids, self.path)
        df["time"] = to_float(df["time"], self.path, "time", ids)  # a datetime/timedelta is refused
        check_finite(df["time"].to_numpy(), ids, self.path, "time", nan_hint=NO_TIME_HINT)
        if df["text"].isna().any():
            who = df.loc[df["text"].isna(), "patient_id"].unique()[:10].tolist()
            raise ValueError(f"{self.path}: column 'text' is null for patient(s) {who} (drop notes without text)")
        df["text"] = decode_texts(df["text"].tolist(), ids, self.path)
        if long_notes == "split":  # every segment becomes a note of its own, same time, in order
            df = df.assign(text=[split_note(str(t), int(max_words)) for t in df["text"]]).explode("text", ignore_index=True)
        df["tokens"] = [tokenize(str(t)) for t in df["text"]]
        empty = df["tokens"].map(len) == 0
        if empty.any():
            warnings.warn(f"{self.path}: dropping {int(empty.sum())} notes without any word", stacklevel=2)
            df = df[~empty]
        df = df.sort_values(["patient_id", "time"], kind="stable")
        self._notes: dict[str, tuple[np.ndarray, list[list[str]]]] = {}
        self._texts: dict[str, list[str]] = {}
        for pid, group in df.groupby("patient_id", sort=False):
            group = group.iloc[-self.max_notes :]
            tokens = [t[: self.max_words] for t in group["tokens"]]
            self._notes[pid] = (group["time"].to_numpy(dtype=np.float32), tokens)
            self._texts[pid] = [str(t) for t in group["text"]]
        self._index = {pid: i for i, pid in enumerate(self._notes)}

    def config(self) -> dict[str, Any]:
        return {"max_notes": self.max_notes, "max_words": self.max_words, "vocab_size": self.vocab_size,
                "tokenizer": self.tokenizer, "pretrained": self.pretrained, "cache": self.cache,
                "min_patients": self.min_patients, "long_notes": self.long_notes}

    def _embedder(self) -> PretrainedNoteEmbedder:
        """The (lazily built) embedder of ``pretrained``; it hashes the model files only once."""
        if getattr(self, "_embedder_cache", None) is None:
            cache = self.root / CACHE_DIR / CACHE_SUBDIR if self.cache else None
            self._embedder_cache = PretrainedNoteEmbedder(self.pretrained, cache)
        return self._embedder_cache

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        if self.pretrained is not None:  # a frozen model: nothing to learn, remember which one
            return {"model": self._embedder().identity}
        patients: Counter[str] = Counter()  # word -> training patients whose notes contain it
        for pid in train_ids:
            patients.update({w for text in self._texts.get(pid, []) for w in tokenize(text)})
        shared = {w for w, n in patients.items() if n >= self.min_patients}
        if not shared:  # every note becomes unknown tokens: present, but only its time and length say anything
            n_train = sum(1 for pid in train_ids if self._texts.get(pid))
            warnings.warn(
                f"{self.path}: no word occurs in the notes of at least min_patients={self.min_patients} training "
                f"patients ({n_train} training patients have notes): the vocabulary is empty and every word is "
                "unknown; lower min_patients (notes_min_patients) to learn words", stacklevel=2,
            )
        if self.tokenizer == "bpe":
            def keep_shared(m: re.Match) -> str:
                return m.group(0) if m.group(0) in shared else ""

            # the notes as they are (punctuation included: BPE learns it), less the rare words
            texts = [_TOKEN.sub(keep_shared, text.lower()) for pid in train_ids for text in self._texts.get(pid, [])]
            return {"tokenizer_json": train_bpe(texts, self.vocab_size).to_str()}
        counts: Counter[str] = Counter()
        for pid in train_ids:
            for tokens in self._notes.get(pid, (None, []))[1]:
                counts.update(w for w in tokens if w in shared)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.vocab_size]
        return {"vocab": [w for w, _ in ranked]}

    def _apply(self) -> None:
        if self.pretrained is not None:
            self._apply_pretrained()
            return
        pids = list(self._notes)
        if self.tokenizer == "bpe":
            bpe = load_bpe(self._state["tokenizer_json"])
            self._vocab_len = bpe.get_vocab_size()
            flat = encode_bpe(bpe, [text for pid in pids for text in self._texts[pid]], self.max_words)
        else:
            lookup = {w: i + 2 for i, w in enumerate(self._state["vocab"])}
            self._vocab_len = len(lookup) + 2
            flat = [[lookup.get(w, UNK) for w in tokens] for pid in pids for tokens in self._notes[pid][1]]
        self._encoded: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        start = 0
        for pid in pids:
            times = self._notes[pid][0]
            rows, start = flat[start : start + len(times)], start + len(times)
            ids = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
            for k, row in enumerate(rows):
                ids[k, : len(row)] = row
            self._encoded[pid] = (ids, ids != PAD, times)

    def _apply_pretrained(self) -> None:
        """Embed every kept note once (cache first); check the model is the one fitted with."""
        embedder = self._embedder()
        if embedder.identity != self._state.get("model"):
            raise ValueError(
                f"{self.path}: the notes model at {self.pretrained} differs from the one this preprocessing "
                f"was fitted with (model id {embedder.identity[:12]} != {str(self._state.get('model'))[:12]})"
            )
        pids = list(self._notes)
        vectors = embedder.embed([text for pid in pids for text in self._texts[pid]])  # (n_notes, E)
        self._embedding_dim = int(vectors.shape[1])
        self._embedded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        start = 0
        for pid in pids:
            times = self._notes[pid][0]
            self._embedded[pid] = (vectors[start : start + len(times)], times)
            start += len(times)

    def _spec(self) -> dict[str, Any]:
        if self.pretrained is not None:
            return {"embedding_dim": self._embedding_dim}
        return {"vocab_size": self._vocab_len, "max_words": self.max_words}

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        if self.pretrained is not None:
            vectors, times = self._embedded[patient_id]
            return {"embeddings": vectors, "note_times": times}
        ids, mask, times = self._encoded[patient_id]
        return {"token_ids": ids, "token_mask": mask, "note_times": times}

    def collate(self, items: Sequence[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        """Pad notes to the batch's most notes and longest note.

        Shapes:
            token_ids ``(B, K, W)`` long, token_mask ``(B, K, W)`` bool (or, with ``pretrained``,
            embeddings ``(B, K, E)`` float), note_times ``(B, K)`` float, note_mask ``(B, K)``
            bool, present ``(B,)`` bool.
        """
        note_mask = [None if it is None else np.ones(len(it["note_times"]), dtype=bool) for it in items]
        if self.pretrained is not None:
            self._require_fitted()
            return {
                "embeddings": pad_stack(pick(items, "embeddings"), (None, self._embedding_dim), np.float32,
                                        "notes.embeddings"),
                "note_times": pad_stack(pick(items, "note_times"), (None,), np.float32, "notes.note_times"),
                "note_mask": pad_stack(note_mask, (None,), np.bool_, "notes.note_mask"),
                "present": present_mask(items),
            }
        return {
            "token_ids": pad_stack(pick(items, "token_ids"), (None, None), np.int64, "notes.token_ids"),
            "token_mask": pad_stack(pick(items, "token_mask"), (None, None), np.bool_, "notes.token_mask"),
            "note_times": pad_stack(pick(items, "note_times"), (None,), np.float32, "notes.note_times"),
            "note_mask": pad_stack(note_mask, (None,), np.bool_, "notes.note_mask"),
            "present": present_mask(items),
        }
