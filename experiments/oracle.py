"""Compare a model's test metrics with the synthetic cohort's oracle (the best achievable from the
data's values; see ``clinfuse.datasets.synthetic.oracle`` for what it does not use)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from clinfuse.experiments.metrics import classification_metrics, harrell_c_index


def oracle_metrics(datamodule: Any, task: str) -> dict[str, float]:
    """Oracle metrics on the test split: with full data and given only the observed modalities.

    Returns an empty dict when the cohort has no oracle (real data) or the task has none
    (multiclass).
    """
    oracle = getattr(datamodule, "oracle", None)
    if oracle is None or task == "multiclass":
        return {}
    import torch

    labels = datamodule.cohort.labels.set_index("patient_id")
    test_ids = list(datamodule.cohort.splits["test"])
    o = oracle.set_index("patient_id").loc[test_ids]
    o = _observed_for_loaded(datamodule, o)
    y = labels.loc[test_ids]
    if task == "survival":
        t, e = y["time"].to_numpy(float), y["event"].to_numpy(float)
        out = {
            "c_index_full": harrell_c_index(o["risk_full"].to_numpy(), t, e),
            "c_index_observed": harrell_c_index(o["risk_observed"].to_numpy(), t, e),
        }
        if "cause" in y.columns:  # competing causes: the cause-specific oracle (other causes censored)
            for col in (c for c in o.columns if c.startswith("cif_cause")):
                r, which = col[len("cif_cause"):].split("_")
                out[f"c_index_cause{r}_{which}"] = harrell_c_index(o[col].to_numpy(), t, y["cause"].to_numpy() == int(r))
        return out
    target = torch.as_tensor(y["binary"].to_numpy(), dtype=torch.long)
    out: dict[str, float] = {}
    for which in ("full", "observed"):
        p = np.clip(o[f"prob_{which}"].to_numpy(float), 1e-7, 1 - 1e-7)
        logits = torch.as_tensor(np.log(p / (1 - p)))
        for k, v in classification_metrics(logits, target, "binary").items():
            out[f"{k}_{which}"] = v
    return out


def _observed_for_loaded(datamodule: Any, o: Any) -> Any:
    """``o`` with ``risk_observed`` / ``prob_observed`` given only the modalities the data module
    loads, when it loads fewer than the synthetic cohort has (else ``o`` unchanged): a model reading
    tabular and genomics is then compared with the best achievable from tabular and genomics."""
    from clinfuse.datasets.cohort import Cohort
    from clinfuse.datasets.synthetic.oracle_subsets import oracle_for_modalities

    cohort = datamodule.cohort
    if sorted(cohort.modalities) == sorted(Cohort.available_modalities(cohort.root)):
        return o
    try:
        mine = oracle_for_modalities(cohort.root, cohort.modalities).set_index("patient_id").loc[o.index]
    except (ValueError, KeyError):  # not a synthetic cohort folder (a converted one with an oracle file)
        return o
    # the per-cause oracle (a Monte Carlo average over the posterior) is not rebuilt for a subset of
    # modalities: its observed columns are dropped rather than reported for modalities the model never reads
    cif_observed = [c for c in o.columns if c.startswith("cif_cause") and c.endswith("_observed")]
    return o.drop(columns=cif_observed).assign(risk_observed=mine["risk_observed"], prob_observed=mine["prob_observed"])


def format_comparison(test: dict[str, float], oracle: dict[str, float], task: str,
                      loaded: list[str] | None = None, cohort_modalities: list[str] | None = None) -> str:
    """A small table on the test split: metric, model, oracle with full data, oracle given each
    patient's modalities, and model / oracle(full), with notes on what the oracle columns are.

    ``loaded`` / ``cohort_modalities``: the modalities the model reads and those the cohort has;
    when they differ the notes say that the oracle columns use all of the cohort's.
    """
    names = ["c_index"] if task == "survival" else (["auroc", "auprc"] if task == "binary" else ["auroc"])
    if task == "survival":  # competing causes: a row per cause the oracle and the model both have
        names += sorted({k[: -len("_full")] for k in oracle if k.startswith("c_index_cause") and k.endswith("_full")}
                        & {k[len("test/"):] for k in test})
    w = max(10, *(len(n) for n in names))
    rows = [f"{'metric':<{w}} {'model':>8} {'oracle(full)':>13} {'oracle(observed)':>17} {'model/oracle(full)':>19}"]
    for n in names:
        model = float(test.get(f"test/{n}", math.nan))
        full = oracle.get(f"{n}_full", math.nan)
        obs = oracle.get(f"{n}_observed", math.nan)
        # a ratio of AUPRCs says little: their chance level is the prevalence, not 0.5
        ratio = model / full if n != "auprc" and full and not math.isnan(full) else math.nan
        ratio_text = f"{ratio:>19.3f}" if not math.isnan(ratio) else f"{'-':>19}"
        obs_text = f"{obs:>17.4f}" if not math.isnan(obs) else f"{'-':>17}"
        rows.append(f"{n:<{w}} {model:>8.4f} {full:>13.4f} {obs_text} {ratio_text}")
    notes = ["oracle: the generator's Bayes-optimal risk on the same test patients; full = from the latent state "
             "(no missing data), observed = from the values of the modalities each patient has (not from which are "
             "missing, which can carry risk). Chance is 0.5."]
    if loaded is not None and cohort_modalities is not None and sorted(loaded) != sorted(cohort_modalities):
        notes.append(f"this model reads {sorted(loaded)} of the cohort's {sorted(cohort_modalities)}: oracle(observed) "
                     "is given those of them each patient has (oracle(full) still uses everything).")
    if any(math.isnan(oracle.get(f"{n}_observed", math.nan)) for n in names if f"{n}_full" in oracle):
        notes.append("-: no oracle(observed) for the modalities this model reads (the per-cause oracle is only "
                     "computed with all of the cohort's modalities).")
    return "\n".join(["", "Test split: model vs oracle", *rows, *notes, ""])
