"""Write a converted cohort aside, then swap it into ``out``: the one implementation the converters share.

A source converter (MEDS, MIMIC-IV, PTB-XL, TCGA) writes the files it owns and ``cohort.json`` into a
private staging folder (``staged_out``). Only when that succeeded is the new cohort moved into
``out``: the previous ``cohort.json`` is removed first and the new one is moved in last, so a
half-moved folder is never taken as current; the previous conversion's owned files the new one
lacks are removed; files in ``out`` the converter does not own are never touched. When the
conversion fails, the staging folder is deleted and ``out`` is left as it was.

The staging folder lies inside ``out`` (named ``STAGING_PREFIX...``), not next to it: it is then on
the same file system even when ``out`` is a mount point or a link to another disk, so every move is
a rename, and no write permission is needed on the folder above ``out``. ``check_out`` does not count
staging folders as content. The built-in cohorts (``builtin_tabular``) rename a whole folder instead,
for concurrent DDP ranks, and do not use this module.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from clinfuse.datasets.conversion import check_out_location, conversion_format, is_current

#: name prefix of the staging folders inside ``out``; ``check_out`` ignores them
STAGING_PREFIX = ".clinfuse-staging-"
COHORT_JSON = "cohort.json"


def check_out(out: str | Path, source_format: str, overwrite: bool, name: str | None = None) -> None:
    """Refuse an unusable ``out`` before any input is read; changes nothing on disk.

    Args:
        out: the cohort folder a converter is asked to write (it may not exist yet).
        source_format: the converter's ``source.format`` in ``cohort.json`` (``"ptbxl"``, ``"tcga"``...).
        overwrite: accept a non-empty folder that is not a conversion of ``source_format``.
        name: the format as messages spell it (``"TCGA"``); default ``source_format``.

    Raises:
        ValueError: ``out`` or a folder above it exists and is not a folder; or ``out`` is a
            non-empty folder (staging folders aside) that is no conversion of ``source_format`` and
            ``overwrite`` is False. The message names the path and says whether the folder has no
            ``cohort.json`` or which conversion its ``cohort.json`` is.
    """
    out = Path(out)
    check_out_location(out)
    if overwrite or not out.is_dir():
        return
    # staging folders of a running (or killed) conversion are no user content
    if all(p.name.startswith(STAGING_PREFIX) for p in out.iterdir()):
        return
    fmt = conversion_format(out)
    if fmt == source_format:
        return
    name = name or source_format
    if not (out / COHORT_JSON).exists():
        raise ValueError(f"{out} is a non-empty folder that is not a cohort (it has no {COHORT_JSON}), so not a "
                         f"{name} conversion; pass overwrite=True to write into it")
    what = f"a {fmt!r} conversion" if fmt else "not from a converter"
    raise ValueError(f"{out} is a non-empty folder that is not a {name} conversion (its {COHORT_JSON} is {what}); "
                     "pass overwrite=True to write into it")


def prepare_out(out: str | Path, source_format: str, overwrite: bool, owned: Iterable[str],
                name: str | None = None) -> None:
    """Create ``out`` and clear what a previous conversion wrote: ``cohort.json`` first, then ``owned``.

    Args:
        out, source_format, overwrite, name: see ``check_out``.
        owned: files (paths relative to ``out``, ``/``-separated, e.g. ``wsi/slides.csv``) to
            remove; a folder they leave empty is removed too. Other files are never touched.

    Raises:
        ValueError: see ``check_out`` (raised before anything is changed).
    """
    out = Path(out)
    check_out(out, source_format, overwrite, name)
    out.mkdir(parents=True, exist_ok=True)
    (out / COHORT_JSON).unlink(missing_ok=True)  # first: a half-cleared folder is never taken as current
    for rel in owned:
        (out / rel).unlink(missing_ok=True)
        for folder in PurePosixPath(rel).parents[:-1]:  # e.g. wsi/ of wsi/slides.csv; never out itself
            try:
                (out / folder).rmdir()
            except OSError:  # absent, or holding other files (a user's WFDB records in ecg/): kept
                break


@contextmanager
def staged_out(out: str | Path, source_format: str, overwrite: bool, owned: Iterable[str], *,
               name: str | None = None, fp: str | None = None) -> Iterator[Path]:
    """A private folder to write a conversion into, swapped into ``out`` only when the block succeeds.

    The block writes ``cohort.json`` (``write_cohort_info``) and any of the ``owned`` files into the
    yielded folder. When it ends normally, ``out`` is checked again (it may have changed while
    converting), the previous ``cohort.json`` is removed, then the previous conversion's owned files
    the new one lacks, the new files are moved in and ``cohort.json`` last. When it raises, the
    staging folder is deleted and ``out`` is left as it was; an ``out`` (and folders above it) that
    this call created is removed again, so a failed first conversion leaves no empty folder.

    Args:
        out, source_format, overwrite, name: see ``check_out``.
        owned: every file the converter may write (paths relative to ``out``, ``/``-separated);
            exactly these are replaced or removed in ``out``.
        fp: the new conversion's fingerprint: when ``out`` already holds it at the end (a concurrent
            conversion of the same inputs finished first) and ``overwrite`` is False, ``out`` is
            left as it is. None: always swap.

    Yields:
        the staging folder, inside ``out``.

    Raises:
        ValueError: see ``check_out``: on entry (before anything is written) and again before the
            swap (nothing in ``out`` changed then).
        RuntimeError: the block wrote no ``cohort.json``, or a file that is not in ``owned`` (a
            converter bug: a later conversion could not remove it); ``out`` is left as it was.
    """
    owned = tuple(owned)
    out = Path(out)
    check_out(out, source_format, overwrite, name)
    created = []  # out and the folders above it that do not exist yet, innermost first
    for folder in (out, *out.parents):
        if folder.exists():
            break
        created.append(folder)
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f"{STAGING_PREFIX}{source_format}-{uuid.uuid4().hex}"
    stage.mkdir()
    try:
        yield stage
        _swap_in(stage, out, source_format, overwrite, owned, name, fp)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # after a success out holds cohort.json, so this stops at once
            try:
                folder.rmdir()
            except OSError:  # not empty: a cohort, or a concurrent conversion's staging folder
                break


def _swap_in(stage: Path, out: Path, source_format: str, overwrite: bool, owned: tuple[str, ...],
             name: str | None, fp: str | None) -> None:
    """Move the cohort written in ``stage`` into ``out`` (see ``staged_out``)."""
    new = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    if COHORT_JSON not in new:
        raise RuntimeError(f"the {name or source_format} conversion wrote no {COHORT_JSON}; {out} is left as it was")
    new.remove(COHORT_JSON)
    stray = sorted(set(new) - set(owned))
    if stray:
        raise RuntimeError(f"the {name or source_format} conversion wrote {stray}, which are not among its owned "
                           f"files {list(owned)}; {out} is left as it was")
    if not overwrite and fp is not None and is_current(out, source_format, fp):
        return  # a concurrent conversion of the same inputs put this very cohort in place already
    # checks `out` again before changing it; clears cohort.json first, then the owned files not written anew
    prepare_out(out, source_format, overwrite, [rel for rel in owned if rel not in new], name)
    for rel in new:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, out / rel)  # a rename (stage is inside out), replacing the previous file
    os.replace(stage / COHORT_JSON, out / COHORT_JSON)  # last: only a complete cohort is current
