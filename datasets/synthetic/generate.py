"""``generate_cohort``: write a complete synthetic cohort folder (layout: docs/formats.md, section 1).

The generative model is described in ``latent.py``; the oracle in ``oracle.py``; each modality's
rendering in its own module. Every random step draws from its own named child of
``numpy.random.SeedSequence(seed)``, so the same seed gives byte-identical files.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clinfuse.datasets.synthetic import causes, ecg, genomics, latent, notes, oracle, splits, tabular, timeseries, wsi
from clinfuse.datasets.synthetic.missingness import draw_presence, resolve_missingness
from clinfuse.datasets.synthetic.validation import prepare_out_dir, validate_arguments

FORMAT_VERSION = 1
STREAMS = (
    "model", "latent", "outcomes", "tabular", "presence", "timeseries",
    "ecg", "notes", "wsi", "wsi_noise", "genomics", "splits", "causes",
)  # fmt: skip  (a new stream goes last: SeedSequence children keep their index, the files stay the same)


def patient_ids(n: int) -> np.ndarray:
    """Zero-padded ids ``P00001 ... `` (sortable as strings), shape ``(n,)``."""
    width = max(5, len(str(n)))
    return np.asarray(np.char.add("P", np.char.zfill(np.arange(1, n + 1).astype(str), width)), dtype=object)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` with object columns typed as strings (even when empty or all null)."""
    schema = pa.schema(
        [(c, pa.string() if df[c].dtype == object else pa.from_numpy_dtype(df[c].dtype)) for c in df.columns]
    )
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), path)


def _standardized(model: latent.LatentModel, views: dict, modality: str) -> np.ndarray:
    return views[modality] / model.view_std(modality)


def generate_cohort(
    out_dir,
    n_patients: int = 2000,
    seed: int = 0,
    missingness: dict | None = None,
    wsi_feature_dim: int = 32,
    wsi_patches: tuple[int, int] = (200, 2000),
    ecg_fs: int = 500,
    ecg_seconds: float = 10.0,
    n_classes: int = 3,
    split_fractions=(0.7, 0.15, 0.15),
    show_progress: bool = True,
    n_causes: int = 1,
    wsi_signal: str = "amount",
    notes_signal: str = "keywords",
    ts_signal: str = "level_and_trend",
    ecg_signal: str = "rate",
    genomics_signal: str = "coexpression",
    tabular_signal: str = "linear",
    wsi_stain_sd: float | None = None,
) -> Path:
    """Generate a synthetic multimodal cohort with known Bayes-optimal predictions.

    Args:
        out_dir: Target folder. Created if missing; if it exists it must be empty or an earlier
            clinfuse cohort (whose generated files are then replaced).
        n_patients: Number of patients (at least 10).
        seed: Seed of every random draw (a non-negative int).
        missingness: Modality -> ``{"mechanism": "mcar" | "mar" | "mnar", "rate": float in [0, 1)}``,
            merged into ``DEFAULT_MISSINGNESS``.
        wsi_feature_dim: Patch feature dimension of the slides.
        wsi_patches: Inclusive range of the number of patches per slide.
        ecg_fs: ECG sampling rate in Hz.
        ecg_seconds: ECG record length in seconds.
        n_classes: Number of classes of the multiclass label.
        split_fractions: ``(train, val, test)`` fractions.
        show_progress: Show tqdm progress bars over the ECG and WSI writers.
        n_causes: Competing causes of the event (``causes.py``): with 2 or more, ``labels.parquet``
            gets a ``cause`` column and ``oracle.parquet`` the cause-specific oracle; every other
            file is the same as with 1.
        wsi_signal: ``"amount"`` (default): a slide's tumour share and its tumour patches' features
            carry the WSI view; ``"grade"``: the tumour share (2-20 %) is random and only the
            tumour patches' features carry it, the multiple-instance setting where averaging all
            patches dilutes the signal (``wsi.py``); ``"focal"``: as ``"grade"`` with a 0.5-3 % tumour
            share and a per-slide staining offset on every patch (a small lesion on a stained
            slide). Other files are the same whichever is chosen.
        wsi_stain_sd: sd of a per-slide staining offset added to every patch of the slide (None:
            0.5 for ``"focal"``, none for the others; 0: none), recorded in ``cohort.json`` when
            used. Only the slides change.
        notes_signal: ``"keywords"`` (default): each informative word is in a note because of the
            patient; ``"context"``: the patient's symptoms, trajectory and support sit next to
            random others and only word order ("reports ... denies ...", "now on ..., previously
            ...") tells them apart (``notes.py``). Other files are the same either way.
        ts_signal: ``"level_and_trend"`` (default): a variable's level and its drift over the stay
            carry the time-series view; ``"trend"``: levels are random, only the drift carries it
            (``timeseries.py``). Other files are the same either way.
        ecg_signal: ``"rate"`` (default): the heart rate (and QRS, ST, T) carry the ECG view;
            ``"rhythm"``: the rate is random and how irregular the beats are carries its first
            component (``ecg.py``). Other files are the same either way.
        genomics_signal: ``"coexpression"`` (default): every gene of a pathway follows the
            pathway; ``"exclusive"``: one gene per pathway and patient, drawn at random, carries
            it, as alterations within a cancer pathway are mutually exclusive (``genomics.py``).
            Other files, ``gene_groups.csv`` included, are the same either way.
        tabular_signal: ``"linear"`` (default): every numeric column is an affine function of the
            view; ``"interaction"``: three pairs of lab columns carry their part only jointly (a
            random per-patient sign flips both; ``tabular.py``). Only ``tabular.parquet`` differs.

    Returns:
        The cohort folder.

    Raises:
        ValueError: For a bad argument (named in the message) or an unusable ``out_dir``.
    """
    validate_arguments(n_patients, seed, wsi_feature_dim, wsi_patches, ecg_fs, ecg_seconds, n_classes)
    if isinstance(n_causes, bool) or not isinstance(n_causes, (int, np.integer)) or not 1 <= n_causes <= causes.MAX_CAUSES:
        raise ValueError(f"n_causes must be an integer in [1, {causes.MAX_CAUSES}], got {n_causes!r}")
    if wsi_signal not in wsi.SIGNALS:
        raise ValueError(f"wsi_signal must be one of {wsi.SIGNALS}, got {wsi_signal!r}")
    stain_sd = wsi.resolve_stain_sd(wsi_stain_sd, wsi_signal)
    if notes_signal not in notes.SIGNALS:
        raise ValueError(f"notes_signal must be one of {notes.SIGNALS}, got {notes_signal!r}")
    if ts_signal not in timeseries.SIGNALS:
        raise ValueError(f"ts_signal must be one of {timeseries.SIGNALS}, got {ts_signal!r}")
    if ecg_signal not in ecg.SIGNALS:
        raise ValueError(f"ecg_signal must be one of {ecg.SIGNALS}, got {ecg_signal!r}")
    if genomics_signal not in genomics.SIGNALS:
        raise ValueError(f"genomics_signal must be one of {genomics.SIGNALS}, got {genomics_signal!r}")
    if tabular_signal not in tabular.SIGNALS:
        raise ValueError(f"tabular_signal must be one of {tabular.SIGNALS}, got {tabular_signal!r}")
    fractions = splits.validate_fractions(split_fractions)
    resolved = resolve_missingness(missingness)
    root = prepare_out_dir(out_dir)

    seeds = dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS))))
    rngs = {name: np.random.default_rng(s) for name, s in seeds.items()}
    ids = patient_ids(n_patients)

    model = latent.make_model(rngs["model"], n_classes)
    z, views = latent.draw_latent(model, n_patients, rngs["latent"])
    labels = pd.DataFrame({"patient_id": ids, **latent.draw_outcomes(model, z, rngs["outcomes"])})
    tab_values = tabular.draw_tabular(_standardized(model, views, "tabular"), rngs["tabular"], tabular_signal)
    presence = draw_presence(resolved, tab_values["age"].to_numpy(), z @ model.beta, rngs["presence"])

    strata = 2 * labels["event"].to_numpy() + labels["binary"].to_numpy()
    split = pd.DataFrame({"patient_id": ids, "split": splits.stratified_split(strata, fractions, rngs["splits"])})
    oracle_df = oracle.oracle_table(model, z, views, presence, ids)
    if n_causes > 1:
        kappa = causes.cause_weights(n_causes, model.latent_dim, rngs["causes"])
        labels["cause"] = causes.draw_causes(kappa, z, labels["event"].to_numpy(), rngs["causes"])
        oracle_df = oracle_df.assign(**causes.cause_oracle(model, kappa, z, views, presence, rngs["causes"]))

    write_parquet(labels, root / "labels.parquet")
    split.to_csv(root / "splits.csv", index=False)
    write_parquet(oracle_df, root / "oracle.parquet")
    write_parquet(pd.DataFrame({"patient_id": ids, **presence}), root / "presence.parquet")

    tab = tabular.mask_tabular(tab_values, ids, presence["tabular"], rngs["tabular"])
    write_parquet(tab, root / "tabular.parquet")
    ts = timeseries.render_timeseries(
        _standardized(model, views, "timeseries"), ids, presence["timeseries"], rngs["timeseries"], ts_signal
    )
    write_parquet(ts, root / "timeseries.parquet")
    text = notes.render_notes(_standardized(model, views, "notes"), ids, presence["notes"], rngs["notes"], notes_signal)
    write_parquet(text, root / "notes.parquet")
    genomics.render_genomics(
        _standardized(model, views, "genomics"), ids, presence["genomics"], rngs["genomics"], genomics_signal
    ).to_csv(root / "genomics.csv", index=False)
    genomics.gene_groups().to_csv(root / "gene_groups.csv", index=False)

    records = ecg.write_ecg(
        root / "ecg", _standardized(model, views, "ecg"), ids, presence["ecg"], seeds["ecg"],
        ecg_fs, ecg_seconds, show_progress, ecg_signal,
    )  # fmt: skip
    records.to_csv(root / "ecg" / "records.csv", index=False)
    slides = wsi.write_wsi(
        root / "wsi", _standardized(model, views, "wsi"), ids, presence["wsi"], rngs["wsi"], seeds["wsi_noise"],
        wsi_feature_dim, tuple(wsi_patches), show_progress, wsi_signal, stain_sd,
    )  # fmt: skip
    slides.to_csv(root / "wsi" / "slides.csv", index=False)

    test = split["split"].to_numpy() == "test"
    meta = {
        "name": "synthetic",
        "n_patients": int(n_patients),
        "seed": int(seed),
        "modalities": list(latent.MODALITIES),
        "missingness": resolved,
        "presence_rate": {m: float(np.mean(presence[m])) for m in latent.MODALITIES},
        "ecg": {"fs": int(ecg_fs), "seconds": float(ecg_seconds), "leads": list(ecg.LEADS), "signal": ecg_signal},
        "wsi": {"feature_dim": int(wsi_feature_dim), "patches": [int(p) for p in wsi_patches], "signal": wsi_signal,
                **({"stain_sd": stain_sd} if stain_sd > 0 else {})},  # absent: no stain (as cohorts before it)
        "notes": {"signal": notes_signal},
        "timeseries": {"signal": ts_signal},
        "genomics": {"signal": genomics_signal},
        "tabular": {"signal": tabular_signal},
        "n_classes": int(n_classes),
        "n_causes": int(n_causes),
        "split_fractions": list(fractions),
        "generator": {
            "latent_dim": latent.LATENT_DIM,
            "view_dims": dict(latent.VIEW_DIMS),
            "view_noise": dict(latent.VIEW_NOISE),
        },
        "oracle_metrics": {"test": oracle.oracle_metrics(labels, oracle_df, test)},
        "format_version": FORMAT_VERSION,
    }
    # Written last: a folder with a cohort.json is a complete cohort.
    (root / "cohort.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root
