"""The torch Dataset of one split's patients and the collate function that builds a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.reader import ModalityReader

Item = dict[str, Any]
#: numpy dtype of each known label in an item; every other (extra, numeric) label is float32.
LABEL_DTYPES = {"binary": np.float32, "multiclass": np.int64, "time": np.float32, "event": np.float32, "cause": np.int64}


def batch_label_names(labels: pd.DataFrame) -> list[str]:
    """The label columns that reach the batch: every numeric or bool column but ``patient_id``.

    Non-numeric extra columns (e.g. free-text annotations) stay in ``Cohort.labels`` only.
    """
    return [
        c for c in labels.columns
        if c != "patient_id" and (pd.api.types.is_numeric_dtype(labels[c]) or pd.api.types.is_bool_dtype(labels[c]))
    ]


class ClinicalDataset(Dataset):
    """The patients of one split; item ``i`` is one patient's unpadded inputs and labels.

    An item is ``{"patient_id": str, "inputs": {modality: dict[str, ndarray] | None},
    "labels": {label: numpy scalar}}`` where ``None`` marks a modality the patient lacks and the
    labels are those the cohort has (see :func:`batch_label_names`). Use :class:`Collator` to batch
    items.

    Args:
        cohort: a loaded cohort whose readers are fitted.
        split: ``train``, ``val`` or ``test``.
        training: sample like in training (random WSI patches); default ``split == "train"``.
    """

    def __init__(self, cohort: Cohort, split: str, training: bool | None = None) -> None:
        if split not in cohort.splits:
            raise ValueError(f"unknown split {split!r}; the cohort has {list(cohort.splits)}")
        self.split = split
        self.training = split == "train" if training is None else training
        self.readers = dict(cohort.readers)
        self.patient_ids = list(cohort.splits[split])
        labels = cohort.labels.set_index("patient_id").loc[self.patient_ids]
        self._labels = {
            name: labels[name].to_numpy(np.dtype(LABEL_DTYPES.get(name, np.float32)))
            for name in batch_label_names(cohort.labels)
        }

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, i: int) -> Item:
        pid = self.patient_ids[i]
        return {
            "patient_id": pid,
            "inputs": {m: r.get(pid, training=self.training) for m, r in self.readers.items()},
            "labels": {name: values[i] for name, values in self._labels.items()},
        }


class Collator:
    """Batches :class:`ClinicalDataset` items into the batch of ``docs/formats.md`` section 2.

    Each modality is padded by its reader's ``collate``; a patient absent from a modality gets
    ``present`` False, False masks and zero padding. The batch is a plain dict of tensors (plus the
    ``patient_id`` list), so Lightning moves it to the device. Picklable for worker processes.

    Args:
        readers: modality -> fitted reader (e.g. ``cohort.readers``).
    """

    def __init__(self, readers: Mapping[str, ModalityReader]) -> None:
        self.readers = dict(readers)

    def __call__(self, items: Sequence[Item]) -> dict[str, Any]:
        """Collate a list of items.

        Shapes:
            labels: only those the items carry: binary ``(B,)`` float, multiclass ``(B,)`` long,
            time ``(B,)`` float, event ``(B,)`` float, extra numeric labels ``(B,)`` float;
            inputs: see each reader's ``collate``.
        """
        if not items:
            raise ValueError("cannot collate an empty list of items")
        keys = list(items[0]["labels"])
        for item in items:
            if set(item["labels"]) != set(keys):
                raise ValueError(
                    f"patient {item['patient_id']}: item has labels {sorted(item['labels'])}, "
                    f"the batch's first item has {sorted(keys)}"
                )
            extra = set(item["inputs"]) - set(self.readers)
            if extra:
                raise ValueError(
                    f"patient {item['patient_id']}: item has modalities {sorted(extra)} no reader knows"
                )
        inputs = {
            m: reader.collate([item["inputs"].get(m) for item in items]) for m, reader in self.readers.items()
        }
        return {
            "patient_id": [item["patient_id"] for item in items],
            "inputs": inputs,
            "labels": {
                key: _stack_labels(items, key, torch.long if LABEL_DTYPES.get(key) is np.int64 else torch.float32)
                for key in keys
            },
        }


def _stack_labels(items: Sequence[Item], key: str, dtype: torch.dtype) -> torch.Tensor:
    """``(B,)`` tensor of one label over the items."""
    return torch.as_tensor(np.array([item["labels"][key] for item in items]), dtype=dtype)


def collate_batch(items: Sequence[Item], cohort: Cohort) -> dict[str, Any]:
    """Collate ``items`` of ``cohort`` (a functional shortcut for ``Collator(cohort.readers)``)."""
    return Collator(cohort.readers)(items)
