"""Leave-one-out contributions below the modality: each observed tabular value, each time-series
variable, each note.

For every observed tabular value of a patient (numeric or categorical), the model is run once more
with that value marked missing, exactly as a record without that key is read (numeric: not
observed, categorical: code 0); for every time-series variable a patient has, once more without
that variable's events, and for every note once more without that note (the modality absent if
nothing is left). The contribution is
``risk(everything) - risk(without it)``: the modality contributions' reading, one level down.
Missing values and absent events are states the model was trained on (learned missing
embeddings, observed flags, masks), not imputations. Only the changed modality's encoder reruns;
the other modalities' tokens are reused, and the variants go through the fusion head in chunks
of ``CHUNK`` rows.

One approximation: a record that really lacked a variable (or a note) would keep up to
``max_events`` of the others' most recent events (``max_notes`` notes), so for a patient with more
than that, older ones could come in; here the patient's kept events and notes are reused as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from clinfuse.encoders.base import ModalityTokens

#: variant rows per fusion call (bounds memory for large batches)
CHUNK = 1024


def _take(t: ModalityTokens, index: torch.Tensor) -> ModalityTokens:
    return ModalityTokens(t.tokens[index], t.mask[index], t.present[index], None if t.times is None else t.times[index])


def _leave_one_out(prognosis: Any, modality: str, inputs: dict[str, torch.Tensor], tokens: dict[str, ModalityTokens],
                   risk: torch.Tensor, pairs: Sequence[tuple[int, Any]],
                   edit: Callable[[dict[str, torch.Tensor], Sequence[Any]], None], name: Callable[[Any], str],
                   ) -> list[dict[str, Any]]:
    """``pairs`` = (patient row, what to remove); ``edit(variant_inputs, whats)`` removes it from
    the variant rows in place; ``name(what)`` is the output key."""
    out: list[dict[str, Any]] = [{} for _ in range(risk.shape[0])]
    for start in range(0, len(pairs), CHUNK):
        chunk = pairs[start : start + CHUNK]
        index = torch.tensor([b for b, _ in chunk], dtype=torch.long)
        variant = {k: v[index].clone() for k, v in inputs.items()}
        edit(variant, [what for _, what in chunk])
        toks = {m: _take(t, index) for m, t in tokens.items()}
        toks[modality] = prognosis.model.encoders[modality](variant)
        raw, _ = prognosis._outputs(toks, [None])
        without = prognosis.model.risk(raw[0]).float()
        for r, (b, what) in enumerate(chunk):
            delta = risk[b] - without[r]
            out[b][name(what)] = float(delta) if delta.ndim == 0 else delta.tolist()
    return out


@torch.inference_mode()
def tabular_contributions(prognosis: Any, batch: dict[str, dict[str, torch.Tensor]],
                          tokens: dict[str, ModalityTokens], risk: torch.Tensor) -> list[dict[str, Any]]:
    """Per patient of the collated ``batch``: observed tabular column -> contribution to ``risk``
    (numeric features first, then categorical, in training order; empty without tabular data).

    Shapes:
        risk: ``(B,)`` (``(B, C)`` multiclass logits), the predictions with every value.
    """
    fitted = prognosis.states["tabular"]["fitted"]
    names = {"num": fitted["numeric_features"], "cat": fitted["categorical_features"]}
    tab = batch["tabular"]
    present = tab["present"].bool()[:, None]
    pairs = [(b, ("num", j)) for b, j in (tab["numeric_observed"].bool() & present).nonzero().tolist()]
    pairs += [(b, ("cat", j)) for b, j in ((tab["categorical"] > 0) & present).nonzero().tolist()]
    pairs.sort(key=lambda p: (p[0], p[1][0] == "cat", p[1][1]))

    def edit(variant: dict[str, torch.Tensor], whats: Sequence[tuple[str, int]]) -> None:
        for r, (kind, j) in enumerate(whats):
            if kind == "num":
                variant["numeric_observed"][r, j] = False
                variant["numeric"][r, j] = 0.0
            else:
                variant["categorical"][r, j] = 0  # code 0 = missing, as the reader writes it

    return _leave_one_out(prognosis, "tabular", tab, tokens, risk, pairs, edit, lambda w: names[w[0]][w[1]])


@torch.inference_mode()
def timeseries_contributions(prognosis: Any, batch: dict[str, dict[str, torch.Tensor]],
                             tokens: dict[str, ModalityTokens], risk: torch.Tensor) -> list[dict[str, Any]]:
    """Per patient of the collated ``batch``: time-series variable -> contribution to ``risk`` of
    all its events (variables in training order; empty without time series)."""
    names = prognosis.states["timeseries"]["fitted"]["variables"]
    ts = batch["timeseries"]
    real = ts["mask"].bool() & ts["present"].bool()[:, None]  # (B, T)
    pairs = sorted({(b, int(ts["variables"][b, t])) for b, t in real.nonzero().tolist()})

    def edit(variant: dict[str, torch.Tensor], whats: Sequence[int]) -> None:
        drop = variant["variables"] == torch.tensor(whats)[:, None]  # (rows, T)
        variant["mask"] = variant["mask"].bool() & ~drop
        variant["present"] = variant["present"].bool() & variant["mask"].any(1)  # nothing left: absent

    return _leave_one_out(prognosis, "timeseries", ts, tokens, risk, pairs, edit, lambda v: names[v])


@torch.inference_mode()
def notes_contributions(prognosis: Any, batch: dict[str, dict[str, torch.Tensor]],
                        tokens: dict[str, ModalityTokens], risk: torch.Tensor) -> list[dict[str, Any]]:
    """Per patient of the collated ``batch``: note -> contribution to ``risk`` of that note, the
    notes named by their time, ``"<t>h"`` (``"<t>h #2"``, ... for notes sharing a time), in time
    order (empty without notes)."""
    notes = batch["notes"]
    real = notes["note_mask"].bool() & notes["present"].bool()[:, None]  # (B, K)
    pairs = [(b, k) for b, k in real.nonzero().tolist()]
    names: dict[tuple[int, int], str] = {}
    for b in range(real.shape[0]):
        seen: dict[str, int] = {}
        for k in real[b].nonzero().flatten().tolist():
            base = f"{float(notes['note_times'][b, k]):g}h"
            seen[base] = seen.get(base, 0) + 1
            names[(b, k)] = base if seen[base] == 1 else f"{base} #{seen[base]}"

    def edit(variant: dict[str, torch.Tensor], whats: Sequence[int]) -> None:
        rows = torch.arange(len(whats))
        variant["note_mask"] = variant["note_mask"].bool().clone()
        variant["note_mask"][rows, torch.tensor(whats)] = False
        variant["present"] = variant["present"].bool() & variant["note_mask"].any(1)  # nothing left: absent

    keyed = [(b, (b, k)) for b, k in pairs]
    return _leave_one_out(prognosis, "notes", notes, tokens, risk, keyed,
                          lambda v, whats: edit(v, [k for _, k in whats]), lambda w: names[w])


#: modality -> its sub-modality contributions
BY_MODALITY = {"tabular": tabular_contributions, "timeseries": timeseries_contributions, "notes": notes_contributions}
