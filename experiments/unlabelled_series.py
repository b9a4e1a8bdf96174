"""Time series of patients without outcomes, for self-supervised pretraining.

Most hospitals have far more patients with vitals and labs than with follow-up. STraTS's
forecasting task (:mod:`clinfuse.experiments.forecast_pretrain`) needs no labels, so those patients
can train the encoder too; Tipirneni & Reddy report most of its gain in that setting.
:func:`pretraining_loader` serves batches of the labelled cohort's training patients plus every
patient of an unlabelled folder (a ``timeseries.parquet`` in the cohort format, ``docs/formats.md``;
no labels or splits needed), normalised with the labelled cohort's training statistics::

    dm = ClinicalDataModule("data/labelled"); dm.setup("fit")
    model = ClinFuseModule(spec=dm.spec, encoders={"timeseries": STraTSEncoder}, ...)
    loader = pretraining_loader(dm, "data/unlabelled")
    pl.Trainer(max_epochs=4).fit(ForecastPretrainModule(model.encoders["timeseries"]), train_dataloaders=loader)
    pl.Trainer(...).fit(model, datamodule=dm)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from clinfuse.datasets.reader import ModalityReader
from clinfuse.datasets.timeseries import TimeseriesReader


class _Series(Dataset):
    """(reader, patient id) pairs; item = that patient's time series as in training."""

    def __init__(self, sources: Sequence[tuple[ModalityReader, str]]) -> None:
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[str, Any]:
        reader, pid = self.sources[i]
        return pid, reader.get(pid, training=True)


class _Collate:
    """Batches of ``{"patient_id", "inputs": {"timeseries": ...}}`` (what ForecastPretrainModule reads)."""

    def __init__(self, reader: ModalityReader) -> None:
        self.reader = reader

    def __call__(self, items: Sequence[tuple[str, Any]]) -> dict[str, Any]:
        return {"patient_id": [pid for pid, _ in items], "inputs": {"timeseries": self.reader.collate([x for _, x in items])}}


def pretraining_loader(dm, unlabelled: str | Path | None, batch_size: int | None = None, include_train: bool = True,
                       seed: int = 0, num_workers: int = 0) -> DataLoader:
    """Shuffled batches of time series: ``dm``'s training patients (with ``include_train``) and
    every patient of ``unlabelled/timeseries.parquet`` (``None``: the training patients alone,
    read without the data module's other modalities).

    The unlabelled folder is read with the preprocessing fitted on ``dm``'s training split (its
    variables, means and standard deviations; events of other variables are dropped, with a warning).

    Args:
        dm: a :class:`~clinfuse.datasets.datamodule.ClinicalDataModule` loading ``timeseries``
            (set up here if it is not yet).
        unlabelled: a folder holding ``timeseries.parquet``, or ``None``.
        batch_size: default ``dm.batch_size``.
        include_train: also serve the labelled training patients' series (their labels unused).
        seed: of the shuffling.
        num_workers: DataLoader worker processes.

    Raises:
        ValueError: ``dm`` without time series; no ``timeseries.parquet`` in ``unlabelled``;
            unlabelled patients who are also in the labelled cohort (named: a validation or test
            patient's series must not train the encoder that is then evaluated on it, and a
            training patient's would count twice); nothing to serve.
    """
    labelled = _series_reader(dm, "pretraining_loader")
    train = _split_sources(dm, labelled, "train") if include_train else []
    if unlabelled is None:
        if not train:
            raise ValueError(f"pretraining_loader: no training patient of {dm.cohort.root} has time series"
                             + ("" if include_train else " (include_train=False and no unlabelled folder)"))
        return _loader(train, labelled, batch_size or dm.batch_size, True, seed, num_workers)
    folder = Path(unlabelled)
    if not TimeseriesReader.available(folder):
        raise ValueError(f"pretraining_loader: {folder / TimeseriesReader.filename} does not exist")
    reader = TimeseriesReader.from_state(folder, labelled.state_dict())
    splits = {pid: s for s, ids in dm.cohort.splits.items() for pid in ids}
    both = [pid for pid in reader.patient_ids if pid in splits]
    if both:
        where = sorted({splits[p] for p in both})
        raise ValueError(
            f"pretraining_loader: {len(both)} patient(s) of {reader.path} are also in the labelled cohort "
            f"{dm.cohort.root} (splits {where}), e.g. {both[:5]}; remove them from the unlabelled folder "
            f"(a validation/test patient's series must not train the encoder evaluated on it)")
    sources = train + [(reader, pid) for pid in reader.patient_ids]
    if not sources:
        raise ValueError(f"pretraining_loader: no patient with time series in {reader.path}"
                         + (" or the training split" if include_train else ""))
    return _loader(sources, labelled, batch_size or dm.batch_size, True, seed, num_workers)


def split_loader(dm, split: str, batch_size: int | None = None) -> DataLoader | None:
    """Batches (in order) of the time series of ``dm``'s ``split`` patients, as :func:`pretraining_loader`
    serves them; ``None`` when no patient of the split has time series (e.g. to score the pretraining
    task on the validation patients)."""
    reader = _series_reader(dm, "split_loader")
    if split not in dm.cohort.splits:
        raise ValueError(f"split_loader: no split {split!r}; the cohort has {sorted(dm.cohort.splits)}")
    sources = _split_sources(dm, reader, split)
    return _loader(sources, reader, batch_size or dm.batch_size, False) if sources else None


def _series_reader(dm, caller: str) -> ModalityReader:  # noqa: ANN001 - ClinicalDataModule
    """``dm``'s time-series reader (``dm`` set up here if it is not yet)."""
    dm.setup("fit")
    if "timeseries" not in dm.cohort.readers:
        raise ValueError(f"{caller}: the data module loads {sorted(dm.cohort.readers)}, not 'timeseries'")
    return dm.cohort.readers["timeseries"]


def _split_sources(dm, reader: ModalityReader, split: str) -> list[tuple[ModalityReader, str]]:  # noqa: ANN001
    """(reader, patient id) of the ``split`` patients who have time series, in split order."""
    return [(reader, pid) for pid in dm.cohort.splits[split] if reader.has(pid)]


def _loader(sources: list, reader: ModalityReader, batch_size: int, shuffle: bool, seed: int = 0,
            num_workers: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(_Series(sources), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, collate_fn=_Collate(reader), persistent_workers=num_workers > 0)
