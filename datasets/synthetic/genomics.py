"""Render the genomics view ``v_gen`` into pathway-structured expression and mutation flags.

48 genes fall into 6 pathways of 8. Pathway ``j`` is driven by component ``j`` of the
standardised view. Eight driver genes carry a 0/1 mutation flag drawn with probability
``sigmoid(base_g + u @ w_g)``. Where the pathway shows, by ``signal``:

- ``"coexpression"`` (default): every member gene follows it,
  ``expr_g = mean_g + loading_g * u[j] + noise`` (log2 scale; loadings mostly positive, a few
  negative), so the signed sum of a pathway's genes reads ``u[j]`` and a linear model is enough.
- ``"exclusive"``: in each patient ONE member gene per pathway, drawn at random, carries it, with
  ``sqrt(8)`` times the loading (the pathway's signal energy is that of ``"coexpression"``); the
  other seven are at their mean plus noise. This is the mutual exclusivity of alterations within a
  pathway that cancer genomes show (one hit per pathway per tumour; Ciriello et al., "Mutual
  exclusivity analysis identifies oncogenic network modules", Genome Research 2012). Reading
  ``u[j]`` well now means finding the gene that stands out in its pathway, a nonlinear function of
  the pathway's genes: the signed sum still reads it, but through the noise of all eight genes.
"""

import numpy as np
import pandas as pd
from scipy.special import expit

PATHWAYS = {
    "cell_cycle": ("CCNB1", "CDK1", "MKI67", "TOP2A", "BUB1", "CCNA2", "AURKA", "PLK1"),
    "immune": ("CD8A", "GZMB", "PRF1", "CXCL9", "CXCL10", "IFNG", "CD274", "LAG3"),
    "hypoxia": ("VEGFA", "CA9", "SLC2A1", "PGK1", "LDHA", "BNIP3", "ADM", "ANKRD37"),
    "dna_repair": ("BRCA1", "BRCA2", "RAD51", "ATM", "ATR", "CHEK1", "PARP1", "XRCC1"),
    "emt": ("VIM", "CDH2", "SNAI2", "TWIST1", "ZEB1", "FN1", "COL1A1", "MMP2"),
    "metabolism": ("HK2", "PKM", "ACLY", "FASN", "IDH1", "GLS", "PFKP", "G6PD"),
}
MUTATIONS = ("TP53", "KRAS", "PIK3CA", "PTEN", "EGFR", "BRAF", "APC", "ARID1A")
MUTATION_BASE_RATE = (0.35, 0.15, 0.12, 0.08, 0.08, 0.06, 0.10, 0.07)
EXPRESSION_NOISE = 0.6
SIGNALS = ("coexpression", "exclusive")


def gene_groups() -> pd.DataFrame:
    """The ``gene, group`` table of every ``*_rnaseq`` gene."""
    genes = [(g, p) for p, members in PATHWAYS.items() for g in members]
    return pd.DataFrame(genes, columns=["gene", "group"])


def render_genomics(
    u: np.ndarray, patient_ids, present: np.ndarray, rng: np.random.Generator, signal: str = "coexpression"
) -> pd.DataFrame:
    """Genomics table for the patients who have the modality.

    Args:
        u: Standardised genomics view ``v_gen / sd``, shape ``(n, d)`` with ``d >= len(PATHWAYS)``.
        patient_ids: ``n`` patient ids.
        present: Bool ``(n,)``, True where the patient has genomics.
        rng: Source of randomness (the generator's "genomics" stream).
        signal: ``"coexpression"`` or ``"exclusive"`` (module docstring).

    Returns:
        DataFrame ``patient_id, <gene>_rnaseq ... (float), <gene>_mut ... (int 0/1)``, present rows only.
    """
    if signal not in SIGNALS:
        raise ValueError(f"genomics signal must be one of {SIGNALS}, got {signal!r}")
    n, d = u.shape
    if d < len(PATHWAYS):
        raise ValueError(f"genomics view has {d} components, need at least {len(PATHWAYS)} (one per pathway)")
    groups = gene_groups()
    pathway_index = groups["group"].map({p: j for j, p in enumerate(PATHWAYS)}).to_numpy()
    n_genes = len(groups)
    mean = rng.uniform(4.0, 10.0, size=n_genes)
    loading = rng.uniform(0.6, 1.4, size=n_genes) * np.where(rng.uniform(size=n_genes) < 0.2, -1.0, 1.0)
    noise = EXPRESSION_NOISE * rng.standard_normal((n, n_genes))

    weights = 0.8 * rng.standard_normal((d, len(MUTATIONS))) / np.sqrt(d)
    base = np.log(np.asarray(MUTATION_BASE_RATE) / (1 - np.asarray(MUTATION_BASE_RATE)))
    mutated = rng.uniform(size=(n, len(MUTATIONS))) < expit(base + u @ weights)
    shift = loading * u[:, pathway_index]  # (n, genes): what "coexpression" adds to every member gene
    if signal == "exclusive":  # drawn last, so the other draws are those of "coexpression"
        size = len(next(iter(PATHWAYS.values())))
        rank = groups.groupby("group").cumcount().to_numpy()  # each gene's place in its pathway
        carrier = rng.integers(0, size, size=(n, len(PATHWAYS)))  # (n, pathways)
        shift = np.where(rank[None, :] == carrier[:, pathway_index], np.sqrt(size) * shift, 0.0)
    expression = mean + shift + noise

    table = {"patient_id": np.asarray(patient_ids, dtype=object)}
    table.update({f"{g}_rnaseq": np.round(expression[:, i], 4) for i, g in enumerate(groups["gene"])})
    table.update({f"{g}_mut": mutated[:, i].astype(np.int64) for i, g in enumerate(MUTATIONS)})
    return pd.DataFrame(table)[np.asarray(present, dtype=bool)].reset_index(drop=True)
