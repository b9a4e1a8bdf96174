"""One encoder's weights in a file, to start a model from (``model.encoder_weights``).

``clinfuse pretrain`` writes such a file after self-supervised pretraining; ``clinfuse fit
--model.encoder_weights '{"timeseries": "pretrained/timeseries.pt"}'`` (or the same key in a
config file) starts the model's encoder from it, then trains as usual. The file records what the
weights mean, and loading refuses a file written for another modality, encoder class or data
spec (another variable list would give the same shapes and silently wrong meanings)::

    {"format": "clinfuse-encoder-weights/1", "modality": ..., "encoder_class": "module.Class",
     "spec": <the modality's spec>, "state_dict": {...}, "info": {...how it was made...}}

Read with ``torch.load(weights_only=True)``: tensors and plain containers only, nothing executed.

``info["statistics"]`` (written by ``clinfuse pretrain``) holds the per-feature mean and sd the
pretraining data were standardised with. The same variable list standardised with other
statistics (pretraining on another cohort) loads, but :func:`statistics_shift` describes the
difference and training warns with it: the encoder then reads those variables on another scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "clinfuse-encoder-weights/1"
#: a feature is reported when the means differ by more than this many pretraining sd ...
MEAN_SHIFT_SD = 0.25
#: ... or the sd ratio (this run's / the pretraining's) leaves [1 / SD_RATIO, SD_RATIO]
SD_RATIO = 1.25


def _class_name(encoder: nn.Module) -> str:
    return f"{type(encoder).__module__}.{type(encoder).__qualname__}"


def _plain(value: Any) -> Any:
    """``value`` as JSON-like containers (a spec may hold tuples; weights_only loading keeps lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_encoder_weights(encoder: nn.Module, path: str | Path, modality: str, spec: dict,
                         info: dict | None = None) -> Path:
    """Write ``encoder``'s weights with what they mean to ``path`` (parent folders created).

    Args:
        encoder: the trained encoder.
        modality: the modality it encodes.
        spec: that modality's spec (``ClinicalDataModule.spec[modality]``).
        info: how the weights were made (task, epochs, patients...), kept for the reader.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    torch.save({"format": FORMAT, "modality": modality, "encoder_class": _class_name(encoder),
                "spec": _plain(spec), "state_dict": state, "info": _plain(info or {})}, path)
    return path


def read_encoder_weights(path: str | Path) -> dict:
    """The content of an encoder weights file.

    Raises:
        ValueError: the file is missing or is not an encoder weights file (named).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"encoder weights file {path} does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file: say which and why
        raise ValueError(f"{path} is not a readable encoder weights file ({type(err).__name__}: {err})") from err
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(f"{path} is not a clinfuse encoder weights file (no format {FORMAT!r}); "
                         "write one with `clinfuse pretrain` or save_encoder_weights")
    return content


def load_encoder_weights(encoder: nn.Module, path: str | Path, modality: str, spec: dict) -> dict:
    """Copy the weights of ``path`` into ``encoder`` after checking they were made for it.

    Returns:
        The file's ``info``.

    Raises:
        ValueError: missing or foreign file; written for another modality, encoder class or spec
            (the differing spec keys are named); weights whose names or shapes differ from the
            encoder's (its init arguments differ: the first few are named).
    """
    content = read_encoder_weights(path)
    where = f"encoder weights {path} (given for {modality!r})"
    if content["modality"] != modality:
        raise ValueError(f"{where} were made for modality {content['modality']!r}")
    if content["encoder_class"] != _class_name(encoder):
        raise ValueError(f"{where} are of {content['encoder_class']}, the model's {modality} encoder is "
                         f"{_class_name(encoder)}; name the same class under model.encoders")
    ours = _plain(spec)
    if content["spec"] != ours:
        keys = sorted(k for k in set(ours) | set(content["spec"]) if ours.get(k) != content["spec"].get(k))
        raise ValueError(f"{where} were made on data with another {modality} spec (differs in {keys}); "
                         "pretrain on the cohort (and preprocessing) the model trains on")
    theirs, mine = content["state_dict"], encoder.state_dict()
    bad = sorted(k for k in set(theirs) | set(mine)
                 if k not in theirs or k not in mine or tuple(theirs[k].shape) != tuple(mine[k].shape))
    if bad:
        shapes = [f"{k}: file {tuple(theirs[k].shape) if k in theirs else '-'}, model "
                  f"{tuple(mine[k].shape) if k in mine else '-'}" for k in bad[:3]]
        raise ValueError(f"{where} do not fit the model's {type(encoder).__name__} ({len(bad)} weights differ, "
                         f"e.g. {'; '.join(shapes)}): d_model and the encoder's init_args must be the ones it "
                         "was pretrained with")
    encoder.load_state_dict(theirs)
    return content.get("info", {})


def fitted_statistics(fitted: dict) -> dict | None:
    """The per-feature ``mean``/``std`` lists of a reader's fitted state (None when it has none)."""
    if "mean" not in fitted or "std" not in fitted:
        return None
    return {"mean": [float(v) for v in fitted["mean"]], "std": [float(v) for v in fitted["std"]]}


def _feature_names(fitted: dict, n: int) -> list[str]:
    for key in ("variables", "numeric_features", "genes"):
        if len(fitted.get(key) or []) == n:
            return [str(v) for v in fitted[key]]
    return [f"feature {j}" for j in range(n)]


def statistics_shift(pretrained: dict | None, fitted: dict, path: str | Path, modality: str) -> str | None:
    """A warning naming the features whose standardisation differs between the pretraining data
    (``pretrained``, the file's ``info["statistics"]``) and this run's training split (``fitted``,
    the reader's fitted state); None when they agree or either side has no statistics.

    A feature differs when its means are more than :data:`MEAN_SHIFT_SD` pretraining sd apart or
    its sd ratio leaves ``[1 / SD_RATIO, SD_RATIO]``.
    """
    ours = fitted_statistics(fitted)
    if not pretrained or ours is None or len(pretrained.get("mean", [])) != len(ours["mean"]):
        return None
    m0, s0 = np.asarray(pretrained["mean"], float), np.asarray(pretrained["std"], float)
    m1, s1 = np.asarray(ours["mean"], float), np.asarray(ours["std"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.abs(m1 - m0) / np.where(s0 > 0, s0, 1.0)
        ratio = np.where((s0 > 0) & (s1 > 0), s1 / s0, 1.0)
    bad = np.flatnonzero((shift > MEAN_SHIFT_SD) | (ratio > SD_RATIO) | (ratio < 1 / SD_RATIO))
    if not len(bad):
        return None
    bad = bad[np.argsort(-(shift[bad] + np.abs(np.log(ratio[bad]))), kind="stable")]  # the largest first
    names = _feature_names(fitted, len(m1))
    listed = "; ".join(f"{names[j]} mean {m0[j]:.4g} -> {m1[j]:.4g}, sd {s0[j]:.4g} -> {s1[j]:.4g}" for j in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return (f"encoder weights {path} ({modality}) were pretrained on data standardised with other statistics than "
            f"this run's training split: {listed}{more} ({len(bad)} of {len(m1)} features beyond {MEAN_SHIFT_SD:g} sd "
            f"in mean or {SD_RATIO:g}x in sd): the pretrained encoder reads these on another scale. Pretrain on "
            "this cohort's training split to avoid it, or let fine-tuning adapt")
