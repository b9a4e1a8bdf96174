"""Notes modality: several timed free-text notes per patient (``notes.parquet``)."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.reader import ModalityReader, check_finite, check_known_ids, read_table, to_float

PAD, UNK = 0, 1
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into runs of ``[a-z0-9]``."""
    return _TOKEN.findall(text.lower())


class NotesReader(ModalityReader):
    """Reads notes, keeps each patient's most recent ``max_notes`` and tokenizes them.

    ``fit`` builds the vocabulary of the ``vocab_size`` most frequent training words (ties broken
    alphabetically); ids are 0 = padding, 1 = unknown word, 2.. = vocabulary. Each note keeps its
    first ``max_words`` tokens. A note with no token at all is dropped with a warning (it would be
    an all-padding note); a patient left with no note is absent.

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet`` (``None`` skips the check).
        max_notes: notes kept per patient (the most recent).
        max_words: tokens kept per note (the first).
        vocab_size: words kept in the vocabulary, without the two special ids.

    Raises:
        ValueError: a missing column, unknown patients, null text, or a non-numeric/NaN/inf time,
            naming the file, column and patients.
    """

    name = "notes"
    filename = "notes.parquet"

    def __init__(
        self,
        root: str | Path,
        known_ids: Iterable[str] | None = None,
        max_notes: int = 8,
        max_words: int = 128,
        vocab_size: int = 5000,
    ) -> None:
        super().__init__(root, known_ids)
        if min(max_notes, max_words, vocab_size) < 1:
            raise ValueError(
                f"max_notes, max_words, vocab_size must be >= 1, got {max_notes}, {max_words}, {vocab_size}"
            )
        self.max_notes, self.max_words, self.vocab_size = int(max_notes), int(max_words), int(vocab_size)
        df = read_table(self.path, ["patient_id", "time", "text"])
        ids = df["patient_id"].tolist()
        check_known_ids(ids, self.known_ids, self.path)
        df["time"] = to_float(df["time"], self.path, "time", ids)
        check_finite(df["time"].to_numpy(), ids, self.path, "time")
        if df["text"].isna().any():
            who = df.loc[df["text"].isna(), "patient_id"].unique()[:10].tolist()
            raise ValueError(f"{self.path}: column 'text' is null for patient(s) {who}")
        df["tokens"] = [tokenize(str(t)) for t in df["text"]]
        empty = df["tokens"].map(len) == 0
        if empty.any():
            warnings.warn(f"{self.path}: dropping {int(empty.sum())} notes without any word", stacklevel=2)
            df = df[~empty]
        df = df.sort_values(["patient_id", "time"], kind="stable")
        self._notes: dict[str, tuple[np.ndarray, list[list[str]]]] = {}
        for pid, group in df.groupby("patient_id", sort=False):
            group = group.iloc[-self.max_notes :]
            tokens = [t[: self.max_words] for t in group["tokens"]]
            self._notes[pid] = (group["time"].to_numpy(dtype=np.float32), tokens)
        self._index = {pid: i for i, pid in enumerate(self._notes)}

    def config(self) -> dict[str, Any]:
        return {"max_notes": self.max_notes, "max_words": self.max_words, "vocab_size": self.vocab_size}

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        for pid in train_ids:
            for tokens in self._notes[pid][1]:
                counts.update(tokens)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.vocab_size]
        return {"vocab": [w for w, _ in ranked]}

    def _apply(self) -> None:
        lookup = {w: i + 2 for i, w in enumerate(self._state["vocab"])}
        self._encoded: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for pid, (times, notes) in self._notes.items():
            width = max(len(t) for t in notes)
            ids = np.zeros((len(notes), width), dtype=np.int64)
            for k, tokens in enumerate(notes):
                ids[k, : len(tokens)] = [lookup.get(w, UNK) for w in tokens]
            self._encoded[pid] = (ids, ids != PAD, times)

    def _spec(self) -> dict[str, Any]:
        return {"vocab_size": len(self._state["vocab"]) + 2, "max_words": self.max_words}

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        ids, mask, times = self._encoded[patient_id]
        return {"token_ids": ids, "token_mask": mask, "note_times": times}

    def collate(self, items: Sequence[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        """Pad notes to the batch's most notes and longest note.

        Shapes:
            token_ids ``(B, K, W)`` long, token_mask ``(B, K, W)`` bool, note_times ``(B, K)``
            float, note_mask ``(B, K)`` bool, present ``(B,)`` bool.
        """
        note_mask = [None if it is None else np.ones(len(it["note_times"]), dtype=bool) for it in items]
        return {
            "token_ids": pad_stack(pick(items, "token_ids"), (None, None), np.int64, "notes.token_ids"),
            "token_mask": pad_stack(pick(items, "token_mask"), (None, None), np.bool_, "notes.token_mask"),
            "note_times": pad_stack(pick(items, "note_times"), (None,), np.float32, "notes.note_times"),
            "note_mask": pad_stack(note_mask, (None,), np.bool_, "notes.note_mask"),
            "present": present_mask(items),
        }
