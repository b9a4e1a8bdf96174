"""Readers, the Cohort, the torch Dataset/collate, the synthetic cohort generator and data modules."""

from clinfuse.datasets.cohort import READERS, Cohort
from clinfuse.datasets.dataset import ClinicalDataset, Collator, collate_batch
from clinfuse.datasets.ecg import STANDARD_LEADS, ECGReader
from clinfuse.datasets.genomics import GenomicsReader
from clinfuse.datasets.notes import NotesReader
from clinfuse.datasets.reader import ModalityReader
from clinfuse.datasets.tabular import TabularReader
from clinfuse.datasets.timeseries import TimeseriesReader
from clinfuse.datasets.wsi import WSIReader

__all__ = [
    "READERS", "STANDARD_LEADS", "ClinicalDataModule", "ClinicalDataset", "Cohort", "Collator",
    "ECGReader", "GenomicsReader", "ModalityReader", "NotesReader", "TabularReader",
    "TimeseriesReader", "WSIReader", "collate_batch",
]


def __getattr__(name: str):
    # ClinicalDataModule imports lightning (seconds); load it only when asked for, so the generator
    # and readers stay quick to import.
    if name == "ClinicalDataModule":
        from clinfuse.datasets.datamodule import ClinicalDataModule

        return ClinicalDataModule
    raise AttributeError(f"module 'clinfuse.datasets' has no attribute {name!r}")
