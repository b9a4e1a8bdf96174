"""Encoder config files that stack: ``model.encoders`` merged per modality across ``--config`` files.

jsonargparse replaces a ``dict`` value as a whole when a later config file sets it, so stacking
``configs/encoders/ft_tabular.yaml`` on ``quickstart.yaml`` (which names the time-series encoder)
would silently drop the quickstart's time-series entry. Command-line ``--model.encoders.<m>=...``
flags, in contrast, set one key. :func:`stack_encoder_configs` rewrites the argument list so that
after every config file naming ``model.encoders``, the modalities named by EARLIER files and not by
this one are re-added as such flags: a later file wins for the modalities it names and keeps the
rest. Written here because jsonargparse has no per-key merge option for dict-typed arguments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def _encoders_of(path: str) -> dict[str, Any]:
    """``model.encoders`` of a config file ({} if the file cannot be read here: the CLI reports it)."""
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    model = cfg.get("model") if isinstance(cfg, dict) else None
    encoders = model.get("encoders") if isinstance(model, dict) else None
    return dict(encoders) if isinstance(encoders, dict) else {}


def stack_encoder_configs(args: Sequence[str]) -> list[str]:
    """``args`` with the earlier files' encoders re-added after each file that sets ``model.encoders``.

    Example: ``--config quickstart.yaml --config ft_tabular.yaml`` becomes
    ``--config quickstart.yaml --config ft_tabular.yaml --model.encoders.timeseries=<json>`` when the
    quickstart names a time-series encoder and ft_tabular names only the tabular one.
    """
    out: list[str] = []
    seen: dict[str, Any] = {}
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        path = None
        if arg in ("--config", "-c") and i + 1 < len(args):  # -c: the short form LightningCLI offers
            path = args[i + 1]
            out += args[i : i + 2]
            i += 2
        else:
            if arg.startswith(("--config=", "-c=")):
                path = arg.split("=", 1)[1]
            out.append(arg)
            i += 1
        if path is None:
            continue
        named = _encoders_of(path)
        if named:
            out += [f"--model.encoders.{m}={json.dumps(v)}" for m, v in seen.items() if m not in named]
            seen.update(named)
    return out
