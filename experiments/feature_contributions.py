"""Leave-one-value-out contributions of a patient's tabular values to the prediction.

For every observed tabular value of a patient (numeric or categorical), the model is run once more
with that value marked missing, exactly as a record without that key is read (numeric: not
observed, categorical: code 0), and the contribution is ``risk(all values) - risk(without it)``:
the same reading as the modality contributions one level down. Missing values are part of the
model (learned missing embeddings / observed flags), so "without it" is a state the model was
trained on, not an imputation. Only the tabular encoder reruns; the other modalities' tokens are
reused, and the variants go through the fusion head in chunks of ``CHUNK`` rows.
"""

from __future__ import annotations

from typing import Any

import torch

from clinfuse.encoders.base import ModalityTokens

#: variant rows per fusion call (bounds memory for large batches)
CHUNK = 1024


def _take(t: ModalityTokens, index: torch.Tensor) -> ModalityTokens:
    return ModalityTokens(t.tokens[index], t.mask[index], t.present[index], None if t.times is None else t.times[index])


@torch.inference_mode()
def tabular_contributions(prognosis: Any, batch: dict[str, dict[str, torch.Tensor]],
                          tokens: dict[str, ModalityTokens], risk: torch.Tensor) -> list[dict[str, Any]]:
    """Per patient of the collated ``batch``: observed tabular column -> contribution to ``risk``.

    Args:
        prognosis: the :class:`~clinfuse.experiments.prognosis.Prognosis` (model + saved states).
        batch: the collated batch (``batch["tabular"]`` as ``TabularReader.collate`` returns it).
        tokens: every modality's tokens of the batch (as ``model.encode`` returned them).
        risk: ``(B,)`` (or ``(B, C)`` for multiclass logits) the predictions with all values.

    Returns:
        One dict per patient (empty when the patient has no tabular data), columns in the
        training order: numeric features first, then categorical.
    """
    fitted = prognosis.states["tabular"]["fitted"]
    num_names, cat_names = fitted["numeric_features"], fitted["categorical_features"]
    tab = batch["tabular"]
    present = tab["present"].bool()
    observed_num = tab["numeric_observed"].bool() & present[:, None]  # (B, F)
    observed_cat = (tab["categorical"] > 0) & present[:, None]  # (B, C)
    pairs = [(b, "num", j) for b, j in observed_num.nonzero().tolist()]
    pairs += [(b, "cat", j) for b, j in observed_cat.nonzero().tolist()]
    pairs.sort(key=lambda p: (p[0], p[1] == "cat", p[2]))  # per patient: numeric, then categorical
    out: list[dict[str, Any]] = [{} for _ in range(present.shape[0])]
    for start in range(0, len(pairs), CHUNK):
        chunk = pairs[start : start + CHUNK]
        index = torch.tensor([b for b, _, _ in chunk], dtype=torch.long)
        variant = {k: v[index].clone() for k, v in tab.items()}
        rows = torch.arange(len(chunk))
        num = torch.tensor([j if kind == "num" else -1 for _, kind, j in chunk])
        cat = torch.tensor([j if kind == "cat" else -1 for _, kind, j in chunk])
        is_num, is_cat = num >= 0, cat >= 0
        variant["numeric_observed"][rows[is_num], num[is_num]] = False
        variant["numeric"][rows[is_num], num[is_num]] = 0.0
        variant["categorical"][rows[is_cat], cat[is_cat]] = 0
        toks = {m: _take(t, index) for m, t in tokens.items()}
        toks["tabular"] = prognosis.model.encoders["tabular"](variant)
        raw, _ = prognosis._outputs(toks, [None])
        without = prognosis.model.risk(raw[0]).float()
        for r, (b, kind, j) in enumerate(chunk):
            name = num_names[j] if kind == "num" else cat_names[j]
            delta = risk[b] - without[r]
            out[b][name] = float(delta) if delta.ndim == 0 else delta.tolist()
    return out
