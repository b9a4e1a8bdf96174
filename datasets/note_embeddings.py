"""Frozen pretrained embeddings of note texts, computed once and cached on disk.

A local HuggingFace model directory (``config.json`` + weights + tokenizer files, e.g. a
sentence-transformers model such as all-MiniLM-L6-v2) embeds every note with ``transformers``
``AutoModel`` and pooling over its last hidden states: the pooling of the directory's
sentence-transformers ``1_Pooling/config.json`` when it has one (CLS or mean), else the masked mean.
Nothing is ever downloaded (``local_files_only`` and ``HF_HUB_OFFLINE`` while loading).

The cache lives under ``<cohort root>/.clinfuse_cache/note_embeddings/<model id>/``: one ``.npz``
shard per first two hex digits of the key ``sha256(model id + text)``, holding ``keys`` and
``embeddings``. The model id hashes every file of the model directory and the pooling settings, so
another model (or edited weights) never reuses stale vectors, and an edited note text simply gets
a new key. The model is loaded only when some text is not in the cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

CACHE_SUBDIR = "note_embeddings"
_CACHE_VERSION = 1


def check_model_dir(path: str | Path) -> Path:
    """The model directory as a ``Path``; ``ValueError`` naming it when it holds no model."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ValueError(f"pretrained notes model directory {p} does not exist (a local folder is required)")
    if not (p / "config.json").is_file():
        raise ValueError(
            f"pretrained notes model directory {p} has no model: config.json not found "
            f"(expected a HuggingFace model folder; found {sorted(x.name for x in p.iterdir())[:10]})"
        )
    return p


class PretrainedNoteEmbedder:
    """Embeds note texts with a frozen local HuggingFace model, reusing an on-disk cache.

    Args:
        model_dir: the local model directory.
        cache_dir: where the ``.npz`` shards live (``None`` disables the cache).
        batch_size: texts per forward pass.
        show_progress: whether to show a tqdm bar while embedding.
    """

    def __init__(
        self, model_dir: str | Path, cache_dir: str | Path | None, batch_size: int = 32, show_progress: bool = True
    ) -> None:
        self.model_dir = check_model_dir(model_dir)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.batch_size = int(batch_size)
        self.show_progress = show_progress
        self._identity: str | None = None

    # ------------------------------------------------------------------ identity
    def pooling(self) -> str:
        """``cls`` when the directory's sentence-transformers pooling config asks for it, else ``mean``."""
        cfg = self.model_dir / "1_Pooling" / "config.json"
        if cfg.is_file():
            pooling = json.loads(cfg.read_text())
            if pooling.get("pooling_mode_cls_token") and not pooling.get("pooling_mode_mean_tokens"):
                return "cls"
        return "mean"

    def max_length(self, tokenizer: Any, config: Any) -> int:
        """Tokens per text: the sentence-transformers ``max_seq_length`` if given, within the model's limit."""
        limits = [int(getattr(config, "max_position_embeddings", 512) or 512)]
        if 0 < int(getattr(tokenizer, "model_max_length", 0) or 0) < 1_000_000:
            limits.append(int(tokenizer.model_max_length))
        st = self.model_dir / "sentence_bert_config.json"
        if st.is_file() and json.loads(st.read_text()).get("max_seq_length"):
            limits.append(int(json.loads(st.read_text())["max_seq_length"]))
        return min(limits)

    @property
    def identity(self) -> str:
        """sha256 of every file of the model directory (path + content) and the pooling settings."""
        if self._identity is None:
            files = sorted(p for p in self.model_dir.rglob("*") if p.is_file())
            stats = tuple((str(f.relative_to(self.model_dir)), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
            self._identity = _hash_model_files(str(self.model_dir), stats, self.pooling())
        return self._identity

    def key(self, text: str) -> str:
        """The cache key of one text: ``sha256(model id + text)`` in hex."""
        return hashlib.sha256(f"{self.identity}\n{text}".encode()).hexdigest()

    # ------------------------------------------------------------------ embedding
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``: from the cache where present, the model for the rest.

        Returns:
            ``(len(texts), E)`` float32.
        """
        if not texts:
            raise ValueError(f"{self.model_dir}: no note text to embed")
        keys = [self.key(t) for t in texts]
        text_of = dict(zip(keys, texts))  # one text per key (the key hashes the text)
        found = self._read_cache(set(keys))
        todo = [k for k in text_of if k not in found]
        if todo:
            new = dict(zip(todo, self._embed_with_model([text_of[k] for k in todo])))
            self._write_cache(new)
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _embed_with_model(self, texts: list[str]) -> np.ndarray:
        """Run the frozen model over ``texts`` in length-sorted batches; ``(n, E)`` float32."""
        tokenizer, model = load_model(self.model_dir)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = model.to(device).eval()
        max_length, pooling = self.max_length(tokenizer, model.config), self.pooling()
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        starts = range(0, len(texts), self.batch_size)
        bar = tqdm(starts, desc=f"embedding {len(texts)} notes", disable=not self.show_progress, leave=False)
        with torch.inference_mode():
            for start in bar:
                idx = order[start : start + self.batch_size]
                enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt").to(device)
                hidden = model(**enc).last_hidden_state.float()  # (n, L, E)
                if pooling == "cls":
                    pooled = hidden[:, 0]  # (n, E)
                else:
                    mask = enc["attention_mask"].bool()[..., None]  # (n, L, 1)
                    total = torch.where(mask, hidden, torch.zeros_like(hidden)).sum(1)  # (n, E)
                    pooled = total / mask.sum(1).clamp(min=1)
                for i, v in zip(idx, pooled.cpu().numpy()):
                    out[i] = v
        return np.stack(out).astype(np.float32)

    # ------------------------------------------------------------------ cache
    @property
    def _shard_dir(self) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / self.identity[:24]

    def _read_cache(self, keys: set[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if self._shard_dir is None:
            return found
        for prefix in sorted({k[:2] for k in keys}):
            stored, vectors = self._read_shard(self._shard_dir / f"{prefix}.npz")
            for k, v in zip(stored, vectors):
                if k in keys:
                    found[k] = v
        return found

    @staticmethod
    def _read_shard(shard: Path) -> tuple[np.ndarray, np.ndarray]:
        """A shard's ``(n,)`` hex keys and ``(n, E)`` vectors; empty when missing or unreadable."""
        empty = (np.zeros(0, dtype=str), np.zeros((0, 0), dtype=np.float32))
        if not shard.is_file():
            return empty
        try:
            with np.load(shard, allow_pickle=False) as data:
                keys, vectors = data["keys"].astype(str), data["embeddings"]
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"{shard}: unreadable note-embedding cache shard ({err}); ignoring it", stacklevel=3)
            return empty
        if len(keys) != len(vectors):
            warnings.warn(f"{shard}: note-embedding cache shard has {len(keys)} keys, {len(vectors)} rows; ignoring it", stacklevel=3)
            return empty
        return keys, vectors

    def _write_cache(self, new: dict[str, np.ndarray]) -> None:
        if self._shard_dir is None:
            return
        by_prefix: dict[str, list[str]] = {}
        for k in new:
            by_prefix.setdefault(k[:2], []).append(k)
        try:
            self._shard_dir.mkdir(parents=True, exist_ok=True)
            for prefix, ks in sorted(by_prefix.items()):
                shard = self._shard_dir / f"{prefix}.npz"
                keys, vectors = list(ks), [new[k] for k in ks]
                old_keys, old_vectors = self._read_shard(shard)
                keep = [i for i, k in enumerate(old_keys) if k not in new]
                keys, vectors = [*old_keys[keep], *keys], [*old_vectors[keep], *vectors]
                tmp = self._shard_dir / f"{prefix}.{os.getpid()}.tmp.npz"
                np.savez(tmp, keys=np.asarray(keys, dtype="S64"), embeddings=np.stack(vectors).astype(np.float32))
                os.replace(tmp, shard)  # atomic: a concurrent reader sees the old or the new shard
        except OSError as err:
            warnings.warn(
                f"{self.cache_dir}: cannot write the note-embedding cache ({err}); continuing without it",
                stacklevel=3,
            )


@functools.lru_cache(maxsize=16)
def _hash_model_files(model_dir: str, stats: tuple[tuple[str, int, int], ...], pooling: str) -> str:
    """Content hash of a model folder; memoised on the files' names, sizes and mtimes (hashing
    hundreds of MB of weights on every reader construction would be slow)."""
    h = hashlib.sha256(f"clinfuse-note-embeddings-v{_CACHE_VERSION}|pool={pooling}".encode())
    for name, _, _ in stats:
        h.update(name.encode() + b"\0")
        with open(Path(model_dir) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` while loading, restoring them afterwards."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_model(model_dir: Path) -> tuple[Any, torch.nn.Module]:
    """The tokenizer and the frozen ``AutoModel`` of a local directory (never downloads).

    Raises:
        ValueError: the directory's files cannot be loaded as a HuggingFace model, naming it.
    """
    from transformers import AutoModel, AutoTokenizer  # lazy: heavy, only needed on cache misses

    try:
        with _offline():
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"pretrained notes model directory {model_dir}: cannot load a HuggingFace model: {err}") from err
    model.requires_grad_(False)
    return tokenizer, model
