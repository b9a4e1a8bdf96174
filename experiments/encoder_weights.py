"""One encoder's weights in a file, to start a model from (``model.encoder_weights``).

``clinfuse pretrain`` writes such a file after self-supervised pretraining; ``clinfuse fit
--model.encoder_weights '{"timeseries": "pretrained/timeseries.pt"}'`` (or the same key in a
config file) starts the model's encoder from it, then trains as usual. The file records what the
weights mean, and loading refuses a file written for another modality, encoder class or data
spec (another variable list would give the same shapes and silently wrong meanings)::

    {"format": "clinfuse-encoder-weights/1", "modality": ..., "encoder_class": "module.Class",
     "spec": <the modality's spec>, "state_dict": {...}, "info": {...how it was made...}}

Read with ``torch.load(weights_only=True)``: tensors and plain containers only, nothing executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "clinfuse-encoder-weights/1"


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
