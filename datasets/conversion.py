"""Shared plumbing of the source converters (MEDS, MIMIC-IV, PTB-XL, TCGA, built-in cohorts).

A converter reads a real data source in its own layout and writes a clinfuse cohort folder
(``docs/formats.md`` section 1), so every source reaches the model through the same
``Cohort`` -> ``ClinicalDataset`` path as the synthetic data. Conversion is cached: the folder's
``cohort.json`` records a fingerprint of the inputs (path, size and mtime of every input file) and
of the converter's options; converting again with unchanged inputs returns at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


def fingerprint(files: Iterable[str | Path], options: Mapping[str, Any]) -> str:
    """A hash of the input files' (path, size, mtime) and of the JSON-able ``options``.

    Raises:
        ValueError: an input file does not exist (naming it).
    """
    h = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        if not path.exists():
            raise ValueError(f"input file {path} does not exist")
        st = path.stat()
        h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(dict(options), sort_keys=True, default=str).encode())
    return h.hexdigest()


def conversion_format(out: str | Path) -> str | None:
    """The ``source.format`` of ``out/cohort.json`` (``meds``, ``tcga``, ...); None when the file is
    absent, unreadable or not a converter's."""
    src = _source(out)
    return src.get("format") if src is not None else None


def is_current(out: str | Path, source_format: str, fp: str) -> bool:
    """Whether ``out`` already holds a conversion of the same inputs and options."""
    src = _source(out)
    return src is not None and src.get("format") == source_format and src.get("fingerprint") == fp


def _source(out: str | Path) -> dict | None:
    """The ``source`` entry of ``out/cohort.json``, or None."""
    try:
        info = json.loads((Path(out) / "cohort.json").read_text())
    except (OSError, ValueError):
        return None
    src = info.get("source") if isinstance(info, dict) else None
    return src if isinstance(src, dict) else None


def check_out_location(out: str | Path) -> None:
    """Refuse an ``out`` that is, or lies under, something other than a folder (nothing is changed).

    Raises:
        ValueError: ``out`` or the nearest existing folder above it is not a folder (naming it).
    """
    out = Path(out)
    for path in (out, *out.parents):  # the nearest existing one (a dangling link too) must be a folder
        if path.exists() or path.is_symlink():
            if path.is_dir():
                return
            if path == out:
                raise ValueError(f"out {str(out)!r} exists and is not a directory")
            raise ValueError(f"out {str(out)!r} cannot be created: {path} exists and is not a directory")


def write_cohort_info(out: str | Path, source_format: str, fp: str, **info: Any) -> Path:
    """Write ``cohort.json`` last, so an interrupted conversion is never taken as current."""
    out = Path(out)
    body = {**info, "source": {"format": source_format, "fingerprint": fp}, "format_version": FORMAT_VERSION}
    (out / "cohort.json").write_text(json.dumps(body, indent=2, default=str) + "\n")
    return out / "cohort.json"
