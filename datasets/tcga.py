"""TCGA survival cohorts in the MCAT / PORPOISE / SurvPath file formats -> a clinfuse cohort folder.

Inputs (unchanged files, see ``docs/sources/tcga.md``):

- clinical CSV: one row per SLIDE, ``case_id, slide_id, survival_months, censorship`` (1 =
  CENSORED, the MCAT convention) plus per-case covariates (``age``, ``is_female``,
  ``oncotree_code``, ``site``, ...). Values other than ``slide_id`` must agree across a case's rows.
- genomics CSV (optional): one row per ``case_id``, columns ``<gene>_rnaseq``, ``<gene>_cnv``,
  ``<gene>_mut``.
- signatures CSV (optional, MCAT's ``signatures.csv``): one column per gene family, gene names
  down the rows, NaN padding below shorter families.
- slide features (optional): per slide ``<slides_dir>/<stem>.pt``, ``<slides_dir>/pt_files/<stem>.pt``
  (a ``(P, F)`` float tensor), ``<slides_dir>/h5_files/<stem>.h5`` or ``<slides_dir>/<stem>.h5``
  (CLAM: ``features``, ``coords``), where ``stem`` is ``slide_id`` without a trailing ``.svs``.

Output modalities: ``tabular`` (the covariates: numbers as float, with empty cells, ``NA`` and TCGA's
``[Not Available]``-style markers missing and any other text in a numeric column an error; text
columns and the codes ``site``, ``oncotree_code`` as strings), ``genomics`` (rnaseq -> expression; cnv ->
extra expression-like features ``<gene>_cnv`` or dropped; mut -> mutations), ``wsi`` (absolute
paths to the feature files, read lazily). Labels: ``event = 1 - censorship``, ``time`` in days =
``survival_months * 30.4375`` (365.25 / 12). No ``binary``/``multiclass`` label exists in these
files, so none is written. TCGA has no time-stamped modality, so no prediction-time filter applies.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from clinfuse.datasets.builtin import cv_splits
from clinfuse.datasets.conversion import fingerprint, is_current, write_cohort_info
from clinfuse.datasets.reader import check_finite, require_columns, to_float
from clinfuse.datasets.staging import check_out, staged_out
from clinfuse.datasets.tcga_genomics import convert_genomics
from clinfuse.datasets.wsi import read_slide_features

FORMAT = "tcga"
_NAME = "TCGA"  # as messages spell the format
DAYS_PER_MONTH = 30.4375  # 365.25 / 12, the mean Gregorian month
REQUIRED = ("case_id", "slide_id", "survival_months", "censorship")
#: clinical columns that are ids, outcomes or bookkeeping, never covariates.
NOT_COVARIATES = frozenset({*REQUIRED, "train", "unnamed: 0", "label", "disc_label", "os", "dss", "pfi", "dfi"})
#: prefixes of outcome columns found in MCAT/SurvPath metadata (e.g. ``survival_months_dss``,
#: ``censorship_pfi``, ``vital_status``); they leak the label and are never covariates.
OUTCOME_PREFIXES = ("survival", "censorship", "vital_status", "days_to_death", "days_to_last_follow",
                    "os_", "dss_", "pfi_", "dfi_")
GENOMIC_SUFFIXES = ("_rnaseq", "_cnv", "_mut")
#: code columns, written as strings even where every code is a number (tissue source sites '05', '38', 'J2')
CODE_COLUMNS = ("site", "oncotree_code")
#: TCGA's missing-value markers (BCR biotab files; GDC's ``'--``), read as missing in covariates like the
#: empty cell, ``NA``, ``N/A``, ``NaN``, ``null`` that pandas reads as missing
MISSING_MARKERS = frozenset({"[Not Available]", "[Not Applicable]", "[Unknown]", "[Not Evaluated]", "[Discrepancy]",
                             "'--"})
_OWNED = ("labels.parquet", "splits.csv", "tabular.parquet", "genomics.csv", "gene_groups.csv", "wsi/slides.csv")


def convert_tcga(
    src_clinical: str | Path,
    out: str | Path,
    *,
    genomics: str | Path | None = None,
    signatures: str | Path | None = None,
    slides_dir: str | Path | None = None,
    splits: str | Path | None = None,
    cnv: Literal["expression", "drop"] = "expression",
    tabular_columns: Sequence[str] | None = None,
    categorical_columns: Sequence[str] = (),
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Convert TCGA clinical/genomics/signature CSVs and slide features to a cohort folder.

    Args:
        src_clinical: the clinical CSV (one row per slide).
        out: the cohort folder to write.
        genomics: the genomics CSV (one row per case) or None.
        signatures: MCAT's signatures CSV (family columns, gene rows) or None; needs ``genomics``.
        slides_dir: folder of the slide feature files or None (no ``wsi`` modality).
        splits: a CSV ``case_id, split`` (train/val/test) to use instead of the seeded split.
        cnv: ``"expression"`` keeps ``<gene>_cnv`` as extra z-scored features named ``<gene>_cnv``
            (grouped with the gene's signatures); ``"drop"`` leaves copy number out.
        tabular_columns: the clinical covariates to keep; None = every column that is not an id,
            an outcome (``survival*``, ``censorship*``, ``vital_status``...) or a genomic column.
        categorical_columns: covariates to keep as categories even when they hold numbers (a grade
            ``1, 2, 3, GX``, a stage code); each must be one of the kept covariates.
        fold: the test fold of the seeded K-fold stratified by event (ignored with ``splits``).
        n_folds: number of folds.
        seed: seed of the folds and of the val draw (15% of the non-test cases).
        overwrite: rewrite ``out`` even when it holds a current conversion, or when it is a
            non-empty folder that is not a TCGA conversion.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: naming the file, column and case for bad input (see ``docs/sources/tcga.md``), or
            naming ``out`` when it is a file or a foreign folder (before any input is read). Nothing
            in ``out`` changes until every input, the first slide file included, has been read.
    """
    if cnv not in ("expression", "drop"):
        raise ValueError(f"cnv must be 'expression' or 'drop'; got {cnv!r}")
    if signatures is not None and genomics is None:
        raise ValueError(f"signatures {signatures} given without a genomics CSV: gene groups need genes")
    src_clinical, out = Path(src_clinical), Path(out)
    check_out(out, FORMAT, overwrite, _NAME)  # before reading anything: a file or a foreign folder is refused at once
    clin = _read_csv(src_clinical, {c: str for c in ("case_id", "slide_id", *CODE_COLUMNS)})
    slide_files = _find_slide_files(Path(slides_dir), clin) if slides_dir is not None else {}
    inputs = [p for p in (src_clinical, genomics, signatures, splits) if p is not None] + list(slide_files.values())
    options = dict(cnv=cnv, tabular_columns=tabular_columns, categorical_columns=sorted(categorical_columns), fold=fold, n_folds=n_folds, seed=seed,
                   slides_dir=None if slides_dir is None else str(Path(slides_dir).resolve()))
    fp = fingerprint(inputs, options)
    if not overwrite and is_current(out, FORMAT, fp):
        print(f"reusing converted cohort {out} (inputs unchanged)")
        return out
    # read and validate everything (the first slide file included) before writing: bad input leaves an
    # existing cohort untouched. The cohort is written to a staging folder inside `out`, then moved in.
    labels, cases = _labels(clin, src_clinical)
    tabular = _tabular(clin, cases, src_clinical, tabular_columns, categorical_columns)
    if splits is not None:
        split = _read_splits(Path(splits), cases)
    else:
        try:
            split = cv_splits(labels["event"].to_numpy(), fold, n_folds, seed)
        except ValueError as err:  # too few cases for n_folds: name the file the cases come from
            raise ValueError(f"{src_clinical}: {len(cases)} case(s): {err}") from err
    table, groups = None, None
    if genomics is not None:
        table, groups = convert_genomics(Path(genomics), None if signatures is None else Path(signatures), cases, cnv)
    slides, feature_dim = _slide_table(clin, slide_files) if slide_files else (None, None)
    # moved into `out` only at the end, unless a concurrent conversion of the same inputs got there first
    with staged_out(out, FORMAT, overwrite, _OWNED, name=_NAME, fp=fp) as tmp:
        modalities, info = [], {}
        labels.to_parquet(tmp / "labels.parquet", index=False)
        pd.DataFrame({"patient_id": cases, "split": split}).to_csv(tmp / "splits.csv", index=False)
        if tabular is not None:
            tabular.to_parquet(tmp / "tabular.parquet", index=False)
            modalities.append("tabular")
        if slides is not None:
            (tmp / "wsi").mkdir()
            slides.to_csv(tmp / "wsi" / "slides.csv", index=False)
            info["wsi"] = {"feature_dim": feature_dim}
            modalities.append("wsi")
        if table is not None:
            table.to_csv(tmp / "genomics.csv", index=False, float_format="%.17g")
            modalities.append("genomics")
            if groups is not None and len(groups):
                groups.to_csv(tmp / "gene_groups.csv", index=False)
        write_cohort_info(
            tmp, FORMAT, fp, name=src_clinical.stem, n_patients=len(cases), seed=int(seed),
            fold=None if splits is not None else int(fold), n_folds=None if splits is not None else int(n_folds),
            modalities=modalities, missingness={}, time_unit="days", **info,
            labels={"time": f"survival_months * {DAYS_PER_MONTH} (days)",
                    "event": "1 - censorship (1 = death observed)"},
        )
    return out


# ---------------------------------------------------------------------- clinical CSV
def _read_csv(path: Path, dtype: dict | None = None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=dtype, low_memory=False)
    except Exception as err:  # pandas raises many types; name the file
        raise ValueError(f"{path}: cannot read CSV: {err}") from err


def _labels(clin: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Validated per-case labels (``patient_id, time, event``) and the cases in file order."""
    require_columns(clin.columns, REQUIRED, path)
    if clin.empty:
        raise ValueError(f"{path}: no case in the clinical CSV (a header but no data row)")
    for col in ("case_id", "slide_id"):
        if clin[col].isna().any():
            rows = (np.flatnonzero(clin[col].isna().to_numpy()) + 2)[:10].tolist()  # +2: header, 1-based
            raise ValueError(f"{path}: column '{col}' is empty in CSV line(s) {rows}")
    dup = clin.loc[clin["slide_id"].duplicated(), "slide_id"].unique()[:10].tolist()
    if dup:
        raise ValueError(f"{path}: column 'slide_id' has duplicate slide(s) {dup}")
    ids = clin["case_id"].tolist()
    months = to_float(clin["survival_months"], path, "survival_months", ids)
    check_finite(months, ids, path, "survival_months")
    bad = months <= 0
    if bad.any():
        who = pd.unique(np.asarray(ids)[bad])[:10].tolist()
        raise ValueError(f"{path}: column 'survival_months' must be > 0; case(s) {who}")
    cens = to_float(clin["censorship"], path, "censorship", ids)
    check_finite(cens, ids, path, "censorship")
    bad = ~np.isin(cens, (0.0, 1.0))
    if bad.any():
        who = pd.unique(np.asarray(ids)[bad])[:10].tolist()
        raise ValueError(f"{path}: column 'censorship' must be 0/1 (1 = censored); case(s) {who}")
    per_slide = pd.DataFrame({"case_id": ids, "survival_months": months, "censorship": cens})
    _check_constant_per_case(per_slide, ["survival_months", "censorship"], path)
    first = per_slide.drop_duplicates("case_id")
    labels = pd.DataFrame({
        "patient_id": first["case_id"].to_numpy(),
        "time": first["survival_months"].to_numpy() * DAYS_PER_MONTH,
        "event": (1 - first["censorship"].to_numpy()).astype(np.int64),  # censorship 1 = censored
    })
    return labels, labels["patient_id"].tolist()


def _check_constant_per_case(df: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    """Per-case values must agree across a case's slide rows (nulls count as a value)."""
    if not columns:
        return
    counts = df.groupby("case_id", sort=False)[list(columns)].nunique(dropna=False)
    for col in columns:
        bad = counts.index[counts[col] > 1].tolist()
        if bad:
            raise ValueError(f"{path}: column '{col}' differs between the slides of case(s) {bad[:10]}")


def _covariates(columns: Sequence[str]) -> list[str]:
    keep = []
    for col in columns:
        low = str(col).lower()
        if low in NOT_COVARIATES or low.endswith(GENOMIC_SUFFIXES) or low.startswith(OUTCOME_PREFIXES):
            continue
        keep.append(col)
    return keep


def _tabular(clin: pd.DataFrame, cases: list[str], path: Path, columns: Sequence[str] | None,
             categorical: Sequence[str] = ()) -> pd.DataFrame | None:
    """One row per case: numeric covariates as float, the others (and ``categorical``) as strings
    (null = missing)."""
    if columns is None:
        columns = _covariates(clin.columns)
    else:
        require_columns(clin.columns, list(columns), path)
        leaks = [c for c in columns if c in REQUIRED]
        if leaks:
            raise ValueError(f"{path}: tabular_columns {leaks} are ids or outcomes, not covariates")
    if isinstance(categorical, str):
        raise ValueError(f"categorical_columns must be a list of column names, got the string {categorical!r}")
    stray = [c for c in categorical if c not in columns]
    if stray:
        raise ValueError(f"{path}: categorical_columns {stray} are not among the kept covariates {list(columns)}")
    if not columns:
        return None
    _check_constant_per_case(clin, list(columns), path)
    first = clin.drop_duplicates("case_id").set_index("case_id").loc[cases]
    table = pd.DataFrame({"patient_id": cases})
    for col in columns:
        table[col] = _covariate(first[col], path, col, col in categorical)
    return table


def _covariate(values: pd.Series, path: Path, col: str, categorical: bool = False) -> np.ndarray:
    """A per-case column (index: case) as float where every value is a number or missing, else as strings.

    ``MISSING_MARKERS`` are missing. A column of numbers with a few text cells (``age`` 'unknown') is an
    error naming the cells, never a silent categorical column; a mostly-text column is categorical.
    """
    values = values.where(~values.isin(MISSING_MARKERS))
    if categorical or pd.api.types.is_bool_dtype(values) or col in CODE_COLUMNS:
        return values.astype("string").to_numpy()
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64)
    num = pd.to_numeric(values, errors="coerce")
    text = (num.isna() & values.notna()).to_numpy()
    if not text.any():
        return num.to_numpy(dtype=np.float64)
    if num.notna().sum() >= text.sum():  # mostly numbers: the text cells are bad values, not categories
        raise ValueError(
            f"{path}: column '{col}' holds numbers but non-numeric value(s) {pd.unique(values[text])[:5].tolist()} "
            f"for case(s) {values.index[text][:10].tolist()}; leave a missing value empty (or NA, [Not Available]), "
            "or list the column in categorical_columns when its values are categories (a grade 1, 2, 3, GX), or "
            "leave it out with tabular_columns"
        )
    return values.astype("string").to_numpy()


def _read_splits(path: Path, cases: list[str]) -> np.ndarray:
    """The ``split`` of every case from a ``case_id, split`` CSV."""
    df = _read_csv(path, {"case_id": str, "split": str})
    require_columns(df.columns, ["case_id", "split"], path)
    dup = df.loc[df["case_id"].duplicated(), "case_id"].unique()[:10].tolist()
    if dup:
        raise ValueError(f"{path}: column 'case_id' has duplicate case(s) {dup}")
    bad = ~df["split"].isin(("train", "val", "test"))
    if bad.any():
        who = df.loc[bad, "case_id"][:10].tolist()
        raise ValueError(f"{path}: column 'split' must be train/val/test; case(s) {who}")
    by_case = df.set_index("case_id")["split"]
    missing = [c for c in cases if c not in by_case.index]
    if missing:
        raise ValueError(f"{path}: case(s) {missing[:10]} of the clinical CSV have no split")
    extra = sorted(set(by_case.index) - set(cases))
    if extra:
        warnings.warn(f"{path}: ignoring {len(extra)} case(s) not in the clinical CSV, e.g. {extra[:5]}", stacklevel=3)
    return by_case.loc[cases].to_numpy(dtype=object)


# ---------------------------------------------------------------------- slide features
def _slide_stem(slide_id: str) -> str:
    return slide_id[: -len(".svs")] if slide_id.lower().endswith(".svs") else slide_id


def _find_slide_files(slides_dir: Path, clin: pd.DataFrame) -> dict[str, Path]:
    """slide_id -> feature file; a slide without one is skipped with a warning naming it."""
    if not slides_dir.is_dir():
        raise ValueError(f"slides_dir {slides_dir} is not a folder")
    if "slide_id" not in clin.columns or clin["slide_id"].isna().any():
        return {}  # _labels reports the bad column with its file
    folders = (slides_dir, slides_dir / "pt_files", slides_dir / "h5_files")
    # one directory listing each instead of a stat per slide and candidate
    listed = {d: {p.name for p in d.iterdir()} if d.is_dir() else set() for d in folders}
    patterns = ((slides_dir, ".pt"), (slides_dir / "pt_files", ".pt"), (slides_dir / "h5_files", ".h5"),
                (slides_dir, ".h5"))
    found, missing = {}, []
    for slide in clin["slide_id"].astype(str):
        stem = _slide_stem(slide)
        hit = next((d / (stem + ext) for d, ext in patterns if stem + ext in listed[d]), None)
        if hit is None:
            looked = f"{slides_dir / (stem + '.pt')}, {slides_dir / 'h5_files' / (stem + '.h5')}, ..."
            missing.append(f"{slide} (looked for {looked})")
        else:
            found[slide] = hit.resolve()
    if missing:
        warnings.warn(
            f"{slides_dir}: {len(missing)} slide(s) have no feature file and are skipped: {missing[:20]}", stacklevel=3
        )
    return found


def _slide_table(clin: pd.DataFrame, files: dict[str, Path]) -> tuple[pd.DataFrame, int]:
    """``wsi/slides.csv`` (absolute paths) and the feature width, read from the first slide file."""
    rows = clin.loc[clin["slide_id"].isin(list(files)), ["case_id", "slide_id"]]
    lost = sorted(set(clin["case_id"]) - set(rows["case_id"]))
    if lost:
        warnings.warn(f"case(s) {lost[:20]} have no slide feature file left: their wsi modality is absent",
                      stacklevel=3)
    paths = [str(files[s]) for s in rows["slide_id"]]
    table = pd.DataFrame({"patient_id": rows["case_id"].to_numpy(),
                          "slide_id": [_slide_stem(s) for s in rows["slide_id"]], "path": paths})
    first_case = rows["case_id"].iloc[0]
    return table, int(read_slide_features(paths[0], where=f"(case {first_case})").shape[1])
