"""ClinicalDataModule: a cohort folder as Lightning train/val/test/predict dataloaders."""

from __future__ import annotations

import sys
import warnings

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.dataset import ClinicalDataset, Collator


PREDICT_SPLITS = ("train", "val", "test", "all")


class ClinicalDataModule(pl.LightningDataModule):
    """Loads a cohort folder, fits preprocessing on its train split and serves batches.

    The constructor only stores its arguments (no I/O). ``prepare_data``/``setup`` and the
    properties ``spec``, ``modality_names``, ``n_classes``, ``oracle`` all call the same
    idempotent load + fit, so the properties work before ``trainer.fit`` (to build a model).
    Batches follow ``docs/formats.md`` section 2.

    Args:
        root: the cohort folder, or ``"builtin:<name>"`` for a built-in cohort (``BUILTIN_COHORTS``
            of ``clinfuse.datasets.builtin_tabular``: written to a cache folder on first use).
        modalities: modalities to load; ``None`` = every available one.
        batch_size: patients per batch.
        num_workers: DataLoader worker processes.
        ecg_fs: ECG output sampling rate (Hz).
        ecg_seconds: ECG output duration (s).
        ecg_leads: ECG lead names in output order (None: the 12 standard leads); a lead a record
            lacks is masked.
        ecg_lead_aliases: record channel name -> lead name, applied before selecting leads (e.g.
            ``{"MLII": "II"}`` for MIT-BIH Holter records); saved with the model.
        max_patches: WSI patches per patient at most.
        max_events: time-series events per patient at most (most recent kept).
        max_notes: notes per patient at most (most recent kept).
        max_words: tokens per note at most.
        notes_tokenizer: ``words`` (vocabulary of whole words) or ``bpe`` (a subword tokenizer
            trained on the train split's notes).
        notes_vocab_size: words or subwords in the notes vocabulary (without pad/unknown); None =
            the reader default (5000 words, 4000 subwords).
        notes_pretrained: a local HuggingFace model directory; when set, every note becomes one
            frozen embedding (cached under ``<root>/.clinfuse_cache/``) instead of token ids.
        notes_min_patients: a word is learned by the notes tokenizer only if the notes of at least
            this many training patients contain it (keeps one patient's names out of the saved model).
        notes_long: ``truncate`` (each note's first ``max_words`` tokens) or ``split`` (every note cut
            into ``max_words``-word segments, each read as a note with the note's time).
        synth_if_missing: generate a synthetic cohort at ``root`` if the folder does not exist (off by
            default and in ``quickstart.yaml``: a mistyped ``root`` is then an error, not synthetic data).
        synth_patients: patients of that synthetic cohort.
        synth_seed: seed of that synthetic cohort.
        seed: seed of the training loader's shuffling generator.
        predict_split: the patients ``trainer.predict`` (``clinfuse predict``) scores: ``train``,
            ``val``, ``test`` or ``all`` (the three in that order); always read in eval mode.
    """

    def __init__(
        self,
        root: str,
        modalities: list[str] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        ecg_fs: float = 100.0,
        ecg_seconds: float = 10.0,
        ecg_leads: list[str] | None = None,
        ecg_lead_aliases: dict[str, str] | None = None,
        max_patches: int = 512,
        max_events: int = 512,
        max_notes: int = 8,
        max_words: int = 128,
        notes_tokenizer: str = "words",
        notes_vocab_size: int | None = None,
        notes_pretrained: str | None = None,
        notes_min_patients: int = 5,
        notes_long: str = "truncate",
        synth_if_missing: bool = False,
        synth_patients: int = 2000,
        synth_seed: int = 0,
        seed: int = 0,
        predict_split: str = "test",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = root
        self.modalities = modalities
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.ecg_fs = ecg_fs
        self.ecg_seconds = ecg_seconds
        self.ecg_leads = _lead_list(ecg_leads)
        self.ecg_lead_aliases = _alias_map(ecg_lead_aliases)
        self.max_patches = max_patches
        self.max_events = max_events
        self.max_notes = max_notes
        self.max_words = max_words
        self.notes_tokenizer = notes_tokenizer
        self.notes_vocab_size = notes_vocab_size
        self.notes_pretrained = notes_pretrained
        self.notes_min_patients = notes_min_patients
        self.notes_long = notes_long
        self.synth_if_missing = synth_if_missing
        self.synth_patients = synth_patients
        self.synth_seed = synth_seed
        self.seed = seed
        # whole numbers: a float (max_patches=2.5) was truncated silently further down
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0), ("max_patches", max_patches, 1),
                                 ("max_events", max_events, 1), ("max_notes", max_notes, 1), ("max_words", max_words, 1),
                                 ("notes_min_patients", notes_min_patients, 1), ("synth_patients", synth_patients, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if predict_split not in PREDICT_SPLITS:
            raise ValueError(f"predict_split={predict_split!r}: expected one of {list(PREDICT_SPLITS)}")
        self.predict_split = predict_split
        self._cohort: Cohort | None = None
        self._datasets: dict[str, ClinicalDataset] = {}
        self._train_generator: torch.Generator | None = None  # the training loader's, saved with checkpoints
        self._resume_generator_state: torch.Tensor | None = None  # a checkpoint's, for the next train_dataloader

    # ------------------------------------------------------------------ loading
    def _synthesize_if_missing(self) -> None:
        if self.synth_if_missing and not str(self.root).startswith("builtin:") and not Path(self.root).exists():
            from clinfuse.datasets.synthetic import generate_cohort  # lazy: heavy and optional

            # said out loud: a mistyped root must not pass for real data
            print(f"data.root {self.root} does not exist: generating a SYNTHETIC cohort of {self.synth_patients} patients "
                  f"there (data.synth_if_missing=true)", file=sys.stderr)
            generate_cohort(self.root, n_patients=self.synth_patients, seed=self.synth_seed)

    def _reader_kwargs(self) -> dict[str, dict[str, Any]]:
        return {
            "timeseries": {"max_events": self.max_events},
            "ecg": {"fs": self.ecg_fs, "seconds": self.ecg_seconds, "lead_aliases": self.ecg_lead_aliases,
                    **({"leads": self.ecg_leads} if self.ecg_leads else {})},
            "notes": {"max_notes": self.max_notes, "max_words": self.max_words, "tokenizer": self.notes_tokenizer,
                      "vocab_size": self.notes_vocab_size, "pretrained": self.notes_pretrained,
                      "min_patients": self.notes_min_patients, "long_notes": self.notes_long},
            "wsi": {"max_patches": self.max_patches},
        }

    @property
    def cohort(self) -> Cohort:
        """The loaded cohort with preprocessing fitted on the train split (loaded on first use)."""
        if self._cohort is None:
            self._synthesize_if_missing()
            from clinfuse.datasets.builtin_tabular import resolve_root  # lazy: "builtin:<name>" needs sksurv

            root = resolve_root(self.root)  # "builtin:<name>" -> that built-in cohort's cache folder
            self._cohort = Cohort.load(root, self.modalities, **self._reader_kwargs()).fit()
        return self._cohort

    def prepare_data(self) -> None:
        """Generate the synthetic cohort if asked and missing; build the ECG cache."""
        _ = self.cohort

    def setup(self, stage: str | None = None) -> None:
        """Load + fit (idempotent) and build the split datasets."""
        for split in ("train", "val", "test"):
            if split not in self._datasets:
                self._datasets[split] = ClinicalDataset(self.cohort, split)
                if split != "train" and len(self._datasets[split]) == 0:
                    warnings.warn(
                        f"{self.root}: the {split} split has no patients (splits.csv): there will be no {split} "
                        f"metrics, and a checkpoint or early-stopping monitor on them has nothing to compare",
                        stacklevel=2,
                    )

    # ------------------------------------------------------------------ what a model needs
    @property
    def spec(self) -> dict[str, dict[str, Any]]:
        """Modality -> spec (``docs/formats.md`` section 3), JSON-able."""
        return self.cohort.spec()

    @property
    def modality_names(self) -> list[str]:
        """The loaded modalities, in canonical order."""
        return self.cohort.modalities

    @property
    def n_classes(self) -> int:
        """Classes of the multiclass label."""
        return self.cohort.n_classes

    @property
    def n_causes(self) -> int:
        """Competing causes: the largest ``cause`` label (1 when the labels have no ``cause``)."""
        labels = self.cohort.labels
        return max(1, int(labels["cause"].max())) if "cause" in labels.columns else 1

    @property
    def oracle(self) -> pd.DataFrame | None:
        """The cohort's ``oracle.parquet`` (synthetic cohorts) or None."""
        return self.cohort.oracle

    def preprocessing_state(self) -> dict[str, Any]:
        """The fitted preprocessing of every modality as a JSON-able dict."""
        return self.cohort.state_dict()

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, shuffle: bool, data: ClinicalDataset | None = None) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self._datasets[split] if data is None else data,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            collate_fn=Collator(self.cohort.readers),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches; a fit resumed from a checkpoint continues the
        shuffling where it stopped (the generator's state is saved with the checkpoint)."""
        loader = self._loader("train", shuffle=True)
        self._train_generator = loader.generator
        if self._resume_generator_state is not None:
            loader.generator.set_state(self._resume_generator_state)
            self._resume_generator_state = None
        return loader

    def val_dataloader(self) -> DataLoader:
        """Validation batches in split order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in split order."""
        return self._loader("test", shuffle=False)

    def split_dataloader(self, split: str) -> DataLoader:
        """Batches of any split (``train``, ``val``, ``test``) in split order, unshuffled, read as
        for evaluation (the training split too: fixed WSI patches, not training's random ones)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; expected train, val or test")
        return self._loader(split, shuffle=False, data=ClinicalDataset(self.cohort, split, training=False))

    def predict_dataloader(self) -> DataLoader:
        """``predict_split``'s patients in split order (eval mode: fixed WSI patches), for ``trainer.predict``."""
        splits = ("train", "val", "test") if self.predict_split == "all" else (self.predict_split,)
        data = ConcatDataset([ClinicalDataset(self.cohort, s, training=False) for s in splits])
        return DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=Collator(self.cohort.readers))

    def predict_patient_splits(self) -> dict[str, str]:
        """Patient id -> split of every patient :meth:`predict_dataloader` serves."""
        splits = ("train", "val", "test") if self.predict_split == "all" else (self.predict_split,)
        return {pid: s for s in splits for pid in self.cohort.splits[s]}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Saved in every Lightning checkpoint: the fitted preprocessing, the modality spec and the
        training loader's shuffling state (for a resumed fit)."""
        state = {"preprocessing": self.preprocessing_state(), "spec": self.spec}
        if self._train_generator is not None:
            state["train_generator"] = self._train_generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Refuse to resume on data with another modality spec than the checkpoint's (``clinfuse``'s
        commands also compare the fitted statistics and reader settings before loading one:
        :mod:`clinfuse.experiments.training_match`)."""
        if state_dict.get("spec") is not None and state_dict["spec"] != self.spec:
            raise ValueError(
                f"the checkpoint was trained on data with modality spec {sorted(state_dict['spec'])} "
                f"that differs from the cohort at {self.root} ({sorted(self.spec)})"
            )
        self._resume_generator_state = state_dict.get("train_generator")  # applied by train_dataloader


def _lead_list(leads: Any) -> list[str] | None:
    """``ecg_leads`` checked: None or distinct (case-insensitively), non-empty lead names."""
    if leads is None:
        return None
    if isinstance(leads, str) or not isinstance(leads, (list, tuple)) or not leads \
            or not all(isinstance(x, str) and x.strip() for x in leads):
        raise ValueError(f"ecg_leads must be a non-empty list of lead names such as ['II', 'V5'], got {leads!r}")
    folded = [x.strip().casefold() for x in leads]
    repeated = sorted({x for x in leads if folded.count(x.strip().casefold()) > 1})
    if repeated:
        raise ValueError(f"ecg_leads names a lead more than once (case-insensitively): {repeated}")
    return [x.strip() for x in leads]


def _alias_map(aliases: Any) -> dict[str, str]:
    """``ecg_lead_aliases`` checked: a mapping of channel name -> lead name (both text)."""
    if aliases is None:
        return {}
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise ValueError(f"ecg_lead_aliases must map record channel names to lead names, e.g. {{'MLII': 'II'}}, "
                         f"got {aliases!r}")
    return dict(aliases)
