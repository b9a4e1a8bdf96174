"""The model card of a saved predictor: what it was trained on, how it scored, what it expects.

``training_summary`` is computed once by ``Prognosis.from_training`` (aggregate numbers only: no
patient id, no raw value leaves the cohort) and saved in ``meta.json``; ``render`` turns it and
the predictor's saved preprocessing into ``model_card.md``, written next to the model by
``Prognosis.save`` (and so logged with it to MLflow). Its sections follow what a clinical
deployment review asks for: intended task, training data, performance on held-out patients,
inputs and their expected ranges, and known limitations.
"""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def training_summary(model: Any, datamodule: Any) -> dict[str, Any]:
    """Split sizes, label summaries of the training split, and the held-out test metric.

    Returns:
        ``{"cohort", "time_unit", "splits": {split: n}, "train": {...}, "test": {...}}``; the test
        entry holds ``c_index`` (survival; Harrell, on the model's risk) or ``auroc`` (binary) and
        ``n``, or is empty when the test split cannot be scored.
    """
    from clinfuse.experiments.metrics import classification_metrics, harrell_c_index
    from clinfuse.experiments.survival_report import predict_split

    cohort = datamodule.cohort
    labels = cohort.labels.set_index("patient_id")
    summary: dict[str, Any] = {
        "cohort": cohort.info.get("name", str(getattr(datamodule, "root", ""))),
        "time_unit": cohort.info.get("time_unit", "days"),
        "splits": {s: len(ids) for s, ids in cohort.splits.items()},
    }
    train = labels.loc[list(cohort.splits["train"])]
    if model.task == "survival":
        summary["train"] = {"events": int(train["event"].sum()), "event_rate": float(train["event"].mean()),
                            "median_time": float(train["time"].median())}
    elif model.task == "binary":
        summary["train"] = {"positives": int(train["binary"].sum()), "prevalence": float(train["binary"].mean())}
    summary["test"] = {}
    if not len(cohort.splits["test"]):
        return summary
    ids, out = predict_split(model, datamodule, "test")
    test = labels.loc[ids]
    if model.task == "survival":
        risk = model.risk(torch.as_tensor(out)).numpy()
        c = harrell_c_index(risk, test["time"].to_numpy(float), test["event"].to_numpy(float))
        summary["test"] = {"n": len(ids), "c_index": c}
    elif model.task == "binary":
        auroc = classification_metrics(torch.as_tensor(out), torch.as_tensor(test["binary"].to_numpy()), "binary")["auroc"]
        summary["test"] = {"n": len(ids), "auroc": auroc}
    return summary


def render(prognosis: Any, summary: dict[str, Any] | None) -> str:
    """``model_card.md`` of a predictor (``summary`` None: a predictor built before cards existed)."""
    model, states = prognosis.model, prognosis.states
    n_params = sum(p.numel() for p in model.parameters())
    task = model.task
    if task == "survival" and model.objective is not None:
        task += f" ({model.objective.loss_name} loss"
        task += f", {model.objective.n_causes} competing causes)" if model.objective.competing else ")"
    lines = [
        "# Model card", "",
        "## Model", "",
        f"- Task: {task}; output `risk` (higher = worse) and, for survival, survival curves.",
        f"- Fusion head: `{type(model.fusion).__name__}`; token width {model.hparams.d_model}; {n_params:,} parameters.",
        "- Encoders: " + ", ".join(f"{m} `{type(model.encoders[m]).__name__}`" for m in prognosis.modalities) + ".",
        "- Any subset of these modalities can be given; absent ones are masked, never imputed.", "",
    ]
    lines += ["## Training data", ""]
    if summary:
        from clinfuse.experiments.survival_report import short_time_unit

        unit = short_time_unit(summary.get("time_unit", "days")) or "(the cohort's time unit)"  # a converter's may be a sentence
        lines.append(f"- Cohort: {summary.get('cohort')}; patients per split: "
                     + ", ".join(f"{s} {n}" for s, n in summary.get("splits", {}).items()) + ".")
        tr = summary.get("train", {})
        if "events" in tr:
            lines.append(f"- Training split: {tr['events']} events (rate {tr['event_rate']:.2f}), median observed time "
                         f"{tr['median_time']:.4g} {unit}.")
        if "positives" in tr:
            lines.append(f"- Training split: {tr['positives']} positives (prevalence {tr['prevalence']:.2f}).")
        te = summary.get("test", {})
        lines += ["", "## Performance on held-out patients", ""]
        if "c_index" in te:
            lines.append(f"- Test split ({te['n']} patients): Harrell C-index {te['c_index']:.4f}.")
        elif "auroc" in te:
            lines.append(f"- Test split ({te['n']} patients): AUROC {te['auroc']:.4f}.")
        else:
            lines.append("- Not measured (no scorable test split).")
    else:
        lines.append("- Not recorded (a predictor saved before model cards).")
    lines += ["", "## Inputs and their training ranges", ""]
    lines += _inputs(states, prognosis.modalities)
    lines += [
        "", "## Limitations", "",
        "- Valid for patients like the training cohort; values far outside the training ranges are flagged in "
        "`input_warnings` (and predicted anyway), other shifts are not detected.",
        "- Leave-one-out `contributions` describe the model, not causes in the patient.",
        "- Research software: not a medical device; validate on the target population before any clinical use.",
    ]
    return "\n".join(lines) + "\n"


def _inputs(states: dict, modalities: list[str]) -> list[str]:
    out = []
    for m in modalities:
        s, cfg = states[m]["fitted"], states[m].get("config", {})
        if m == "tabular":
            num = [f"{n} {mu:.4g} ± {sd:.3g}" for n, mu, sd in zip(s["numeric_features"], s["mean"], s["std"])]
            out.append(f"- tabular: numeric (training mean ± sd): {', '.join(num) or 'none'}; categorical: "
                       + (", ".join(f"{c} ({len(s['levels'][c])} levels)" for c in s["categorical_features"]) or "none")
                       + "; unseen levels map to 'unseen'.")
        elif m == "timeseries":
            var = [f"{v} {mu:.4g} ± {sd:.3g}" for v, mu, sd in zip(s["variables"], s["mean"], s["std"])]
            out.append(f"- timeseries: times in hours up to the {s.get('horizon_hours', '?')} h horizon; variables "
                       f"(training mean ± sd): {', '.join(var)}; other variables are dropped with a warning.")
        elif m == "ecg":
            amp = s.get("amplitude_mv")
            out.append(f"- ecg: leads {', '.join(s['leads'])} (missing leads masked), any rate resampled to "
                       f"{s['fs']:g} Hz, {s['n_samples']} samples" + (f"; typical lead sd {amp:.3g} mV" if amp else "") + ".")
        elif m == "notes":
            kind = "a frozen pretrained encoder" if cfg.get("pretrained") else f"a {cfg.get('tokenizer', 'words')} vocabulary"
            out.append(f"- notes: up to {cfg.get('max_notes')} time-stamped notes of up to {cfg.get('max_words')} "
                       f"tokens, read with {kind}.")
        elif m == "wsi":
            out.append(f"- wsi: CLAM-style patch features of width {s.get('feature_dim')}, up to "
                       f"{cfg.get('max_patches')} patches per patient.")
        elif m == "genomics":
            out.append(f"- genomics: {len(s['genes'])} expression values (log scale, every one required) and "
                       f"{len(s['mutations'])} mutation flags.")
    return out

