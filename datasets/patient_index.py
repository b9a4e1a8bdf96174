"""A compact read-only ``patient id -> position`` mapping for readers of large cohorts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np


class PatientIndex(Mapping[str, int]):
    """Patient ids held as one sorted numpy array of UTF-8 bytes, looked up by binary search.

    A ``dict`` of 100,000+ Python strings costs about 150 bytes per patient; this costs the id's
    length plus 8 bytes. Iteration yields the ids in sorted string order (UTF-8 byte order is code
    point order, as ``sorted`` of Python strings).

    Args:
        ids: ``(P,)`` patient ids, any order, unique.
        positions: ``(P,)`` the value of each id (default ``0..P-1``).
    """

    def __init__(self, ids: Sequence[str] | np.ndarray, positions: np.ndarray | None = None) -> None:
        raw = np.asarray(ids)
        if raw.dtype.kind != "S":
            raw = _utf8(ids)
        raw = raw.astype(f"S{max(raw.dtype.itemsize, 1)}", copy=False)
        pos = np.arange(len(raw), dtype=np.int64) if positions is None else np.asarray(positions, dtype=np.int64)
        order = np.argsort(raw, kind="stable")
        self._ids, self._pos = raw[order], pos[order]

    def _find(self, key: str) -> int:
        if not isinstance(key, str):
            return -1
        b = key.encode()
        if len(b) > self._ids.dtype.itemsize:
            return -1
        i = int(np.searchsorted(self._ids, b))
        return i if i < len(self._ids) and self._ids[i] == b else -1

    def __getitem__(self, key: str) -> int:
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        return int(self._pos[i])

    def __contains__(self, key: object) -> bool:
        return self._find(key) >= 0  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return (b.decode() for b in self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def where(self, keep: np.ndarray) -> "PatientIndex":
        """The ids whose value ``v`` has ``keep[v]`` true."""
        sub = PatientIndex.__new__(PatientIndex)
        mask = keep[self._pos]
        sub._ids, sub._pos = self._ids[mask], self._pos[mask]
        return sub

    def unknown(self, known: Iterable[str]) -> list[str]:
        """Ids not in ``known`` (sorted), without building a Python string per patient."""
        known = np.sort(_utf8(known))
        if not len(known):
            return list(self)
        width = max(self._ids.dtype.itemsize, known.dtype.itemsize)
        ids, known = self._ids.astype(f"S{width}", copy=False), known.astype(f"S{width}", copy=False)
        # binary search of each id among the sorted known ids (np.isin on bytes costs several copies)
        at = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        missing = known[at] != ids
        return [b.decode() for b in self._ids[missing]]


def _utf8(ids: Iterable) -> np.ndarray:
    """Ids as a fixed-width UTF-8 bytes array; ASCII ids are converted inside numpy (no Python
    bytes object per id, which would fragment the small-object heap of a long-lived process)."""
    ids = [p if isinstance(p, str) else str(p) for p in ids]
    try:
        return np.array(ids, dtype="S") if ids else np.zeros(0, dtype="S1")
    except UnicodeEncodeError:
        return np.array([p.encode() for p in ids], dtype=bytes)
