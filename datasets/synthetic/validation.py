"""Argument checks and output-folder preparation for ``generate_cohort``."""

import json
import numbers
from pathlib import Path

MIN_PATIENTS = 10
COHORT_FILES = (
    "cohort.json", "labels.parquet", "splits.csv", "oracle.parquet", "presence.parquet", "tabular.parquet",
    "timeseries.parquet", "notes.parquet", "genomics.csv", "gene_groups.csv",
)  # fmt: skip
COHORT_DIRS = {"ecg": ("*.hea", "*.dat", "records.csv"), "wsi": ("*.h5", "slides.csv")}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_arguments(n_patients, seed, wsi_feature_dim, wsi_patches, ecg_fs, ecg_seconds, n_classes) -> None:
    """Check the scalar arguments of ``generate_cohort``.

    Raises:
        ValueError: Naming the first bad argument and its value.
    """
    if not _is_int(n_patients) or n_patients < MIN_PATIENTS:
        raise ValueError(f"n_patients must be an int >= {MIN_PATIENTS}, got {n_patients!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not _is_int(wsi_feature_dim) or wsi_feature_dim < 1:
        raise ValueError(f"wsi_feature_dim must be a positive int, got {wsi_feature_dim!r}")
    try:
        low, high = wsi_patches
    except (TypeError, ValueError):
        raise ValueError(f"wsi_patches must be a pair (low, high), got {wsi_patches!r}") from None
    if not (_is_int(low) and _is_int(high) and 1 <= low <= high):
        raise ValueError(f"wsi_patches must be two ints with 1 <= low <= high, got {wsi_patches!r}")
    if not _is_int(ecg_fs) or ecg_fs < 50:
        raise ValueError(f"ecg_fs must be an int >= 50 (Hz), got {ecg_fs!r}")
    if not _is_number(ecg_seconds) or not 1.0 <= ecg_seconds <= 600.0:
        raise ValueError(f"ecg_seconds must be a number in [1, 600], got {ecg_seconds!r}")
    if not _is_int(n_classes) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")


def _is_cohort(path: Path) -> bool:
    """A finished cohort (valid cohort.json) or an interrupted run (only files a cohort holds)."""
    meta = path / "cohort.json"
    if meta.is_file():
        try:
            return "format_version" in json.loads(meta.read_text())
        except (ValueError, UnicodeDecodeError):
            return False
    return all(p.name in COHORT_FILES or (p.name in COHORT_DIRS and p.is_dir()) for p in path.iterdir())


def prepare_out_dir(out_dir) -> Path:
    """Create ``out_dir`` or clear the generated files of an earlier cohort in it.

    Only files the generator writes are removed; anything else in the folder is left alone.

    Raises:
        ValueError: If ``out_dir`` is a file, or a non-empty folder that is not a clinfuse cohort.
    """
    try:
        path = Path(out_dir)
    except TypeError:
        raise ValueError(f"out_dir must be a path, got {out_dir!r}") from None
    if path.exists() and not path.is_dir():
        raise ValueError(f"out_dir {str(path)!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not _is_cohort(path):
            raise ValueError(
                f"out_dir {str(path)!r} is not empty and is not a clinfuse cohort (no valid cohort.json); "
                "choose an empty or new folder"
            )
        (path / "cohort.json").unlink(missing_ok=True)  # first: an interrupted clean-up stays recognisable
        for name in COHORT_FILES:
            (path / name).unlink(missing_ok=True)
        for folder, patterns in COHORT_DIRS.items():
            for pattern in patterns:
                for file in (path / folder).glob(pattern):
                    file.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path
