"""A small seeded TCGA cohort in the MCAT / PORPOISE / SurvPath file layout (for tests, docs, benchmarks).

``write_tcga_fixture(out, n_subjects, seed)`` writes:

- ``tcga_clinical.csv``: one row per slide (1-3 slides per case), MCAT's columns ``Unnamed: 0,
  case_id, slide_id, site, is_female, oncotree_code, age, survival_months, censorship, train``;
  ``slide_id`` ends in ``.svs`` as in MCAT's CSVs; ``censorship`` 1 = censored.
- ``tcga_genomics.csv``: one row per case (the last case has none): ``<gene>_rnaseq`` (float),
  ``<gene>_cnv`` (int -2..2) for every gene, ``<gene>_mut`` (0/1) for some genes.
- ``signatures.csv``: MCAT's format, one column per family, NaN padding.
- ``features/``: patch features (``(P, F)`` float32, P in 3..9); even slides as
  ``features/pt_files/<stem>.pt`` (torch tensor), odd slides as ``features/h5_files/<stem>.h5``
  (CLAM: ``features``, ``coords``).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

GENES = ("TP53", "EGFR", "KRAS", "PTEN", "MYC", "BRCA1", "CDKN2A", "PIK3CA")
MUTATED = ("TP53", "KRAS", "PIK3CA", "PTEN")
SIGNATURES = {
    "Tumor Suppressor Genes": ("TP53", "PTEN", "CDKN2A", "BRCA1"),
    "Oncogenes": ("EGFR", "KRAS", "MYC", "PIK3CA"),
    "Protein Kinases": ("EGFR", "PIK3CA"),
}
ONCOTREE = ("LUAD", "LUSC")


def write_tcga_fixture(out: str | Path, n_subjects: int = 12, seed: int = 0, feature_dim: int = 8) -> dict[str, Path]:
    """Write a TCGA-style source folder.

    Args:
        out: the folder to write (created).
        n_subjects: number of cases (>= 2).
        seed: seed of every random value.
        feature_dim: patch feature width ``F``.

    Returns:
        ``{"clinical", "genomics", "signatures", "slides_dir"}`` -> path.
    """
    if n_subjects < 2:
        raise ValueError(f"n_subjects must be >= 2; got {n_subjects}")
    rng = np.random.default_rng(seed)
    out = Path(out)
    slides_dir = out / "features"
    for sub in ("pt_files", "h5_files"):
        (slides_dir / sub).mkdir(parents=True, exist_ok=True)
    cases = [f"TCGA-{10 + i // 100:02d}-{i:04d}" for i in range(n_subjects)]
    n_slides = rng.integers(1, 4, size=n_subjects)
    months = np.round(rng.uniform(0.5, 120.0, size=n_subjects), 2)
    censorship = (rng.random(n_subjects) < 0.6).astype(int)
    censorship[:2] = (0, 1)  # both classes present, for stratified splits
    age = rng.integers(35, 90, size=n_subjects)
    female = rng.integers(0, 2, size=n_subjects)
    onco = rng.choice(ONCOTREE, size=n_subjects)
    rows, k = [], 0
    for i, case in enumerate(cases):
        for s in range(n_slides[i]):
            stem = f"{case}-01Z-00-DX{s + 1}.{k:08X}"
            _write_slide(slides_dir, stem, k, rng, feature_dim)
            rows.append({"case_id": case, "slide_id": stem + ".svs", "site": ("2F", "AA", "4B")[i % 3],
                         "is_female": female[i], "oncotree_code": onco[i], "age": float(age[i]),
                         "survival_months": months[i], "censorship": censorship[i], "train": 1})
            k += 1
    clinical = pd.DataFrame(rows)
    clinical.to_csv(out / "tcga_clinical.csv", index=True)  # MCAT's CSVs carry the 'Unnamed: 0' index column

    g_cases = cases[:-1]  # the last case has no genomics
    genomics = {"case_id": g_cases}
    for gene in GENES:
        genomics[f"{gene}_rnaseq"] = np.round(rng.normal(size=len(g_cases)), 4)
    for gene in GENES:
        genomics[f"{gene}_cnv"] = rng.integers(-2, 3, size=len(g_cases))
    for gene in MUTATED:
        genomics[f"{gene}_mut"] = rng.integers(0, 2, size=len(g_cases))
    pd.DataFrame(genomics).to_csv(out / "tcga_genomics.csv", index=False)

    longest = max(len(v) for v in SIGNATURES.values())
    sig = {fam: list(genes) + [np.nan] * (longest - len(genes)) for fam, genes in SIGNATURES.items()}
    pd.DataFrame(sig).to_csv(out / "signatures.csv", index=False)
    return {"clinical": out / "tcga_clinical.csv", "genomics": out / "tcga_genomics.csv",
            "signatures": out / "signatures.csv", "slides_dir": slides_dir}


def _write_slide(slides_dir: Path, stem: str, k: int, rng: np.random.Generator, feature_dim: int) -> None:
    n_patches = int(rng.integers(3, 10))
    feats = rng.normal(size=(n_patches, feature_dim)).astype(np.float32)
    if k % 2 == 0:
        torch.save(torch.from_numpy(feats), slides_dir / "pt_files" / f"{stem}.pt")
    else:
        coords = rng.integers(0, 50_000, size=(n_patches, 2)).astype(np.int32)
        with h5py.File(slides_dir / "h5_files" / f"{stem}.h5", "w") as fh:
            fh.create_dataset("features", data=feats)
            fh.create_dataset("coords", data=coords)
