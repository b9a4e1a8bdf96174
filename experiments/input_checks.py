"""Inputs far outside the training distribution: one warning per field, for the prediction output.

A value many training standard deviations away from the training mean is most often a unit error
(creatinine sent in umol/L to a model trained in mg/dL lands ~270 sd out) or a typo; the model
would extrapolate without a sign. Predictions are still made; the warnings travel with them
(``input_warnings``), naming the field, the value and how far out it is. Checked on the
standardised values the fitted readers produce (tabular numerics, time-series values, gene
expression), so a value is judged by the statistics the model was trained with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: a standardised value beyond this many training sd gets a warning
DEFAULT_MAX_SD = 10.0
#: at most this many warnings per modality (the rest are counted)
MAX_LISTED = 5


def out_of_range(modality: str, state: dict, item: dict[str, Any] | None, max_sd: float = DEFAULT_MAX_SD) -> list[str]:
    """Warnings for one patient's item of ``modality`` (empty when all values are in range).

    Args:
        modality: the modality name.
        state: the modality's saved reader state (``{"modality", "config", "fitted"}``).
        item: what the fitted reader (or :func:`~clinfuse.experiments.prognosis_inputs.raw_to_item`)
            returns for the patient; None = absent.
        max_sd: the threshold in training standard deviations.
    """
    if item is None:
        return []
    s = state["fitted"]
    if modality == "tabular":
        z, names, where = np.asarray(item["numeric"], float), s["numeric_features"], np.asarray(item["numeric_observed"], bool)
        fields, columns = [f"tabular.{n}" for n in names], np.arange(len(names))
    elif modality == "timeseries":
        z, names = np.asarray(item["values"], float), s["variables"]
        columns = np.asarray(item["variables"], int)
        where, fields = np.ones(len(z), bool), [f"timeseries.{names[v]}" for v in columns]
    elif modality == "genomics":
        z, names = np.asarray(item["expression"], float), s["genes"]
        where, fields, columns = np.ones(len(z), bool), [f"genomics.{g}_rnaseq" for g in names], np.arange(len(names))
    else:
        return []
    bad = np.flatnonzero(where & (np.abs(z) > max_sd))
    if not len(bad):
        return []
    bad = bad[np.argsort(-np.abs(z[bad]), kind="stable")]  # the most extreme first
    mean, std = np.asarray(s["mean"], float), np.asarray(s["std"], float)
    out = []
    for k in bad[:MAX_LISTED]:
        j = columns[k]
        value = z[k] * std[j] + mean[j]
        out.append(f"{fields[k]}: {value:.4g} is {z[k]:+.0f} training sd from the training mean {mean[j]:.4g} (unit?)")
    if len(bad) > MAX_LISTED:
        out.append(f"{modality}: {len(bad) - MAX_LISTED} more value(s) beyond {max_sd:g} training sd")
    return out
