"""ClinicalDataModule end to end on the tiny cohort."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule

SPLIT_SIZES = {"train": 8, "val": 2, "test": 2}


def test_constructor_does_no_io(tmp_path):
    dm = ClinicalDataModule(root=str(tmp_path / "does_not_exist"), batch_size=3)
    assert dm.batch_size == 3 and not (tmp_path / "does_not_exist").exists()
    with pytest.raises(ValueError, match="clinfuse synth --out"):
        dm.setup("fit")


def test_end_to_end_batches(tiny, assert_batch_format):
    dm = ClinicalDataModule(root=str(tiny.root), batch_size=3)
    dm.prepare_data()
    dm.setup("fit")
    spec = dm.spec
    assert dm.modality_names == list(spec) == ["tabular", "timeseries", "ecg", "notes", "wsi", "genomics"]
    assert spec["ecg"] == {"leads": spec["ecg"]["leads"], "fs": 100.0, "n_samples": 1000}
    assert dm.n_classes == 3 and len(dm.oracle) == 12
    json.dumps(spec)
    json.dumps(dm.preprocessing_state())
    loaders = {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}
    seen = {}
    for split, loader in loaders.items():
        seen[split] = []
        for batch in loader:
            assert_batch_format(batch, spec, 3)
            assert len(batch["patient_id"]) <= 3
            seen[split] += batch["patient_id"]
        assert sorted(seen[split]) == sorted(getattr(tiny, split)), split
    assert tiny.no_modality in seen["train"]
    assert [b["patient_id"] for b in dm.predict_dataloader()] == [b["patient_id"] for b in loaders["test"]]


def test_properties_load_lazily_and_options_reach_readers(tiny):
    dm = ClinicalDataModule(root=str(tiny.root), modalities=["ecg", "notes", "wsi"], ecg_fs=50.0,
                            ecg_seconds=4.0, max_notes=2, max_words=3, max_patches=5)
    assert dm.spec == {  # no prepare_data/setup call: the property loads and fits
        "ecg": {"leads": dm.spec["ecg"]["leads"], "fs": 50.0, "n_samples": 200},
        "notes": {"vocab_size": dm.spec["notes"]["vocab_size"], "max_words": 3},
        "wsi": {"feature_dim": 4},
    }
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"]["notes"]["token_ids"].shape[1:] == (2, 3)
    assert batch["inputs"]["wsi"]["features"].shape[1] == 5
    assert batch["inputs"]["ecg"]["signal"].shape[1:] == (12, 200)


def test_train_shuffle_is_seeded(tiny):
    def order(seed):
        dm = ClinicalDataModule(root=str(tiny.root), modalities=["tabular"], batch_size=8, seed=seed)
        loader = dm.train_dataloader()
        return [tuple(b["patient_id"]) for _ in range(2) for b in loader]

    first = order(0)
    assert first == order(0) and first[0] != first[1]  # same seed, same order; epochs differ
    assert first != order(1)


def test_synth_if_missing_calls_generator(tiny, tmp_path, monkeypatch, capsys):
    calls = []

    def fake_generate(root, n_patients, seed):
        calls.append((str(root), n_patients, seed))
        shutil.copytree(tiny.root, root)
        return root

    fake = types.ModuleType("clinfuse.datasets.synthetic")

    fake.generate_cohort = fake_generate
    monkeypatch.setitem(sys.modules, "clinfuse.datasets.synthetic", fake)
    root = tmp_path / "new_cohort"
    dm = ClinicalDataModule(root=str(root), synth_if_missing=True, synth_patients=12, synth_seed=5)
    dm.prepare_data()
    assert calls == [(str(root), 12, 5)] and dm.n_classes == 3
    assert f"data.root {root} does not exist: generating a SYNTHETIC cohort of 12 patients" in capsys.readouterr().err
    ClinicalDataModule(root=str(root), synth_if_missing=True).prepare_data()  # exists: no new call
    assert len(calls) == 1 and "SYNTHETIC" not in capsys.readouterr().err


def test_quickstart_config_refuses_a_root_that_does_not_exist(tmp_path):
    # a mistyped data.root must not quietly become a synthetic cohort
    from clinfuse.experiments.cli import cli_main

    quickstart = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
    typo = tmp_path / "my_cohrt"
    with pytest.raises(ValueError, match=f"cohort folder {typo} does not exist"):
        cli_main(["--config", str(quickstart), f"--data.root={typo}", "--trainer.logger=false"], run=False)
    assert not typo.exists()


def test_ecg_leads_and_aliases_reach_the_reader_and_the_saved_state(synthetic_cohort):
    base = ClinicalDataModule(str(synthetic_cohort), modalities=["ecg"], ecg_leads=["II", "V5"], batch_size=8)
    renamed = ClinicalDataModule(str(synthetic_cohort), modalities=["ecg"], ecg_leads=["MLII", "V5"],
                                 ecg_lead_aliases={"II": "MLII"}, batch_size=8)
    assert base.spec["ecg"]["leads"] == ["II", "V5"] and renamed.spec["ecg"]["leads"] == ["MLII", "V5"]
    a = next(iter(base.split_dataloader("test")))["inputs"]["ecg"]
    b = next(iter(renamed.split_dataloader("test")))["inputs"]["ecg"]
    assert a["signal"].shape[1] == 2 and a["lead_mask"].any()
    assert torch.equal(a["signal"], b["signal"]) and torch.equal(a["lead_mask"], b["lead_mask"])  # II read as MLII
    config = renamed.preprocessing_state()["modalities"]["ecg"]["config"]
    assert config["lead_aliases"] == {"II": "MLII"} and config["leads"] == ["MLII", "V5"]  # the predictor replays them


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"ecg_leads": "II"}, "ecg_leads must be a non-empty list"), ({"ecg_leads": []}, "ecg_leads must be a non-empty list"),
    ({"ecg_leads": ["II", "ii"]}, r"more than once \(case-insensitively\): \['II', 'ii'\]"),
    ({"ecg_lead_aliases": ["MLII", "II"]}, "ecg_lead_aliases must map record channel names"),
])
def test_bad_ecg_lead_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClinicalDataModule("anywhere", **kwargs)


def test_lightning_trainer_moves_batches(tiny):
    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.ids = []

        def training_step(self, batch, batch_idx):
            self.ids += batch["patient_id"]
            x = batch["inputs"]["tabular"]["numeric"]
            return self.layer(x).mean() + 0 * batch["labels"]["binary"].sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ClinicalDataModule(root=str(tiny.root), batch_size=4, num_workers=1)
    probe = Probe()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(probe, datamodule=dm)
    assert sorted(probe.ids) == sorted(tiny.train)


def test_synthetic_cohort_end_to_end(synthetic_cohort, assert_batch_format):
    """The generator's output (tests/conftest.py) reads back: formats and presence agree."""
    dm = ClinicalDataModule(root=str(synthetic_cohort), batch_size=32)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert_batch_format(batch, dm.spec, dm.n_classes)
    for batch in dm.val_dataloader():
        assert_batch_format(batch, dm.spec, dm.n_classes)
    if (synthetic_cohort / "presence.parquet").exists():  # written by the generator, not by formats.md
        expected = pd.read_parquet(synthetic_cohort / "presence.parquet").set_index("patient_id")
        presence = dm.cohort.presence()
        pd.testing.assert_frame_equal(presence, expected.loc[presence.index, presence.columns].astype(bool))


def test_an_empty_val_split_warns(tiny):
    splits = pd.read_csv(tiny.root / "splits.csv", dtype=str)
    splits.loc[splits["split"] == "val", "split"] = "train"
    splits.to_csv(tiny.root / "splits.csv", index=False)
    dm = ClinicalDataModule(str(tiny.root), batch_size=4)
    dm.prepare_data()
    with pytest.warns(UserWarning, match="the val split has no patients") as record:
        dm.setup("fit")
    assert not [w for w in record if "test split" in str(w.message)]
    assert len(dm._datasets["train"]) == len(tiny.train) + len(tiny.val)


def test_split_dataloader_reads_the_training_split_as_for_evaluation(synthetic_cohort):
    # training batches draw random WSI patches; split_dataloader (reports, Breslow baselines) must not
    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["wsi"], max_patches=8, batch_size=64)

    def features(loader):
        torch.manual_seed(0)
        first = next(iter(loader))["inputs"]["wsi"]
        torch.manual_seed(1)
        second = next(iter(loader))["inputs"]["wsi"]
        return first, second

    a, b = features(dm.split_dataloader("train"))
    assert torch.equal(a["features"], b["features"]) and torch.equal(a["mask"], b["mask"])
    train_loader = dm._loader("train", shuffle=False)  # the training dataset, in split order
    c, d = features(train_loader)
    assert not torch.equal(c["features"], d["features"])  # so the check above can fail
