"""The torch Dataset of one split's patients and the collate function that builds a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.reader import ModalityReader

Item = dict[str, Any]


class ClinicalDataset(Dataset):
    """The patients of one split; item ``i`` is one patient's unpadded inputs and labels.

    An item is ``{"patient_id": str, "inputs": {modality: dict[str, ndarray] | None},
    "labels": {"binary", "multiclass", "time", "event": numpy scalar}}`` where ``None`` marks a
    modality the patient lacks. Use :class:`Collator` to batch items.

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
        self._binary = labels["binary"].to_numpy(np.float32)
        self._multiclass = labels["multiclass"].to_numpy(np.int64)
        self._time = labels["time"].to_numpy(np.float32)
        self._event = labels["event"].to_numpy(np.float32)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, i: int) -> Item:
        pid = self.patient_ids[i]
        return {
            "patient_id": pid,
            "inputs": {m: r.get(pid, training=self.training) for m, r in self.readers.items()},
            "labels": {
                "binary": self._binary[i],
                "multiclass": self._multiclass[i],
                "time": self._time[i],
                "event": self._event[i],
            },
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
            labels: binary ``(B,)`` float, multiclass ``(B,)`` long, time ``(B,)`` float,
            event ``(B,)`` float; inputs: see each reader's ``collate``.
        """
        if not items:
            raise ValueError("cannot collate an empty list of items")
        for item in items:
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
                "binary": _stack_labels(items, "binary", torch.float32),
                "multiclass": _stack_labels(items, "multiclass", torch.long),
                "time": _stack_labels(items, "time", torch.float32),
                "event": _stack_labels(items, "event", torch.float32),
            },
        }


def _stack_labels(items: Sequence[Item], key: str, dtype: torch.dtype) -> torch.Tensor:
    """``(B,)`` tensor of one label over the items."""
    return torch.as_tensor(np.array([item["labels"][key] for item in items]), dtype=dtype)


def collate_batch(items: Sequence[Item], cohort: Cohort) -> dict[str, Any]:
    """Collate ``items`` of ``cohort`` (a functional shortcut for ``Collator(cohort.readers)``)."""
    return Collator(cohort.readers)(items)
