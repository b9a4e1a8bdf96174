"""Checked reading of a source's csv / csv.gz tables with polars, shared by the source converters.

Every column is scanned as a string (``infer_schema=False``) and cast explicitly afterwards, so a
wrong dtype or an unparsable timestamp becomes a ``ValueError`` naming the file, the column, the
data row (0-based, header excluded) and the subject, instead of a silent null or a polars error.
The output folder helpers (``check_out``, ``prepare_out``, ``staged_out``) live in ``datasets/staging.py``
and can still be imported from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from clinfuse.datasets import staging as _staging

# moved to datasets/staging.py (one implementation for every converter); importable from here as before
check_out, prepare_out, staged_out = _staging.check_out, _staging.prepare_out, _staging.staged_out

ROW = "_row"  # the 0-based data row of the source file, carried for error messages
_DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def datetime_expr(column: str) -> pl.Expr:
    """A string column parsed as Datetime[us] (``YYYY-MM-DD HH:MM:SS``; a bare date = midnight); null if unparsable."""
    raw = pl.col(column).str.strip_chars()
    return pl.coalesce([raw.str.to_datetime(fmt, strict=False, time_unit="us") for fmt in _DATETIME_FORMATS])


def float_expr(column: str) -> pl.Expr:
    """A string column cast to Float64; null if unparsable."""
    return pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)


def find_table(folder: Path, name: str, required: bool = True) -> Path | None:
    """``folder/name.csv`` or ``folder/name.csv.gz`` (the plain csv wins), or None when optional.

    Raises:
        ValueError: a required table exists in neither form.
    """
    for candidate in (folder / f"{name}.csv", folder / f"{name}.csv.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise ValueError(f"{folder / name}.csv(.gz) does not exist")
    return None


def scan_table(path: Path, required: Sequence[str]) -> pl.LazyFrame:
    """A lazy all-string scan of ``path`` with a ``_row`` column; checks the required columns.

    Raises:
        ValueError: the file cannot be read or lacks a required column (naming both).
    """
    try:
        lf = pl.scan_csv(path, infer_schema=False).with_row_index(ROW)
        have = lf.collect_schema().names()
    except Exception as err:  # polars raises ComputeError/NoDataError/...; name the file
        raise ValueError(f"{path}: cannot read csv: {err}") from err
    missing = [c for c in required if c not in have]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; found {sorted(set(have) - {ROW})}")
    return lf


def _complain(df: pl.DataFrame, bad: pl.Series, path: Path, column: str, what: str, who: str | None) -> None:
    if not bad.any():
        return
    first = df.filter(bad).row(0, named=True)
    whom = f" ({who} {first[who]})" if who and who in df.columns else ""
    raise ValueError(
        f"{path}: column '{column}' has {what} {first[column]!r} in data row {first[ROW]}{whom}"
        f"{'' if bad.sum() == 1 else f' and {int(bad.sum()) - 1} more row(s)'}"
    )


def as_int(df: pl.DataFrame, path: Path, column: str, who: str | None = None, nullable: bool = False) -> pl.Series:
    """Column ``column`` as Int64 (``"12"`` and ``"12.0"`` accepted)."""
    raw = df[column]
    as_float = raw.str.strip_chars().cast(pl.Float64, strict=False)
    whole = as_float.is_finite() & (as_float == as_float.round(0))
    _complain(df, raw.is_not_null() & ~whole.fill_null(False), path, column, "non-integer value", who)
    if not nullable:
        _complain(df, raw.is_null(), path, column, "an empty value", who)
    return as_float.cast(pl.Int64)


def as_float(df: pl.DataFrame, path: Path, column: str, who: str | None = None, nullable: bool = True) -> pl.Series:
    """Column ``column`` as Float64; empty = null (when ``nullable``), non-numbers, NaN and inf raise."""
    raw = df[column]
    num = df.select(float_expr(column)).to_series()
    _complain(df, raw.is_not_null() & num.is_null(), path, column, "non-numeric value", who)
    _complain(df, num.is_not_null() & ~num.is_finite().fill_null(True), path, column, "NaN/inf value", who)
    if not nullable:
        _complain(df, raw.is_null(), path, column, "an empty value", who)
    return num


def as_datetime(df: pl.DataFrame, path: Path, column: str, who: str | None = None, nullable: bool = True) -> pl.Series:
    """Column ``column`` as Datetime (``YYYY-MM-DD HH:MM:SS``, ``YYYY-MM-DD`` = midnight)."""
    raw = df[column].str.strip_chars()
    parsed = df.select(datetime_expr(column)).to_series()
    _complain(df, raw.is_not_null() & (raw != "") & parsed.is_null(), path, column, "unparsable timestamp", who)
    if not nullable:
        _complain(df, parsed.is_null(), path, column, "an empty timestamp", who)
    return parsed


def check_unique(df: pl.DataFrame, path: Path, column: str) -> None:
    """Raise ``ValueError`` naming the file, column and first duplicated id."""
    dup = df[column].is_duplicated()
    _complain(df, dup, path, column, "duplicate id", None)


def hours_between(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    """``later - earlier`` in float hours."""
    return (later - earlier).dt.total_microseconds().cast(pl.Float64) / 3.6e9


def split_by_group(groups: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Assign each distinct group (a subject) to train/val/test at random with ``fractions``."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = int(round(fractions[0] * len(unique)))
    n_val = int(round(fractions[1] * len(unique)))
    names = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (len(unique) - n_train - n_val))
    return {unique[i]: str(names[k]) for k, i in enumerate(order)}
