"""Pretraining batches from the labelled training patients plus a folder of unlabelled ones."""

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.encoders.strats import STraTSEncoder
from clinfuse.experiments.forecast_pretrain import ForecastPretrainModule
from clinfuse.experiments.unlabelled_series import pretraining_loader


@pytest.fixture(scope="module")
def labelled(synthetic_cohort):
    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["timeseries"], batch_size=16)
    dm.setup("fit")
    return dm


def _unlabelled(tmp_path, synthetic_cohort, dm, n=5, rename=lambda p: f"U-{p}"):
    """An unlabelled folder holding copies of n training patients' events under new ids."""
    events = pd.read_parquet(synthetic_cohort / "timeseries.parquet")
    train = [p for p in dm.cohort.splits["train"] if dm.cohort.readers["timeseries"].has(p)][:n]
    copy = events[events["patient_id"].isin(train)].assign(patient_id=lambda d: d["patient_id"].map(rename))
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    copy.to_parquet(folder / "timeseries.parquet", index=False)
    return folder, train, events


def _epoch(loader):
    seen = {}
    for batch in loader:
        ts = batch["inputs"]["timeseries"]
        for i, pid in enumerate(batch["patient_id"]):
            assert pid not in seen, f"{pid} served twice in one epoch"
            m = ts["mask"][i]
            seen[pid] = {k: ts[k][i][m] for k in ("times", "variables", "values")}
    return seen


def test_serves_every_training_and_unlabelled_patient_once_with_the_training_normalisation(tmp_path, synthetic_cohort, labelled):
    folder, copied, events = _unlabelled(tmp_path, synthetic_cohort, labelled)
    seen = _epoch(pretraining_loader(labelled, folder, batch_size=8))
    reader = labelled.cohort.readers["timeseries"]
    train = {p for p in labelled.cohort.splits["train"] if reader.has(p)}
    assert set(seen) == train | {f"U-{p}" for p in copied}
    assert not set(seen) & set(labelled.cohort.splits["val"] + labelled.cohort.splits["test"])
    for p in copied:  # a renamed copy reads exactly as the original: the labelled cohort's statistics
        for k in ("times", "variables", "values"):
            assert torch.equal(seen[f"U-{p}"][k], seen[p][k])
    # and by hand: one event's value is (raw - training mean) / training std of its variable
    state = reader.state_dict()["fitted"]
    raw = events[events["patient_id"] == copied[0]].sort_values("time", kind="stable").iloc[-1]
    j = state["variables"].index(raw["variable"])
    got = seen[f"U-{copied[0]}"]
    last = int(np.flatnonzero(got["times"].numpy() == np.float32(raw["time"]))[-1])
    assert got["variables"][last].item() == j
    assert got["values"][last].item() == pytest.approx((raw["value"] - state["mean"][j]) / state["std"][j], rel=1e-5)


def test_without_training_patients_and_unseen_variables(tmp_path, synthetic_cohort, labelled):
    folder, copied, _ = _unlabelled(tmp_path, synthetic_cohort, labelled, n=3)
    extra = pd.DataFrame({"patient_id": [f"U-{copied[0]}"] * 2, "time": [0.5, 1.0],
                          "variable": ["not_a_training_variable"] * 2, "value": [1.0, 2.0]})
    table = pd.read_parquet(folder / "timeseries.parquet")
    pd.concat([table, extra]).to_parquet(folder / "timeseries.parquet", index=False)
    with pytest.warns(UserWarning, match="dropping 2 events of variables not seen in training.*not_a_training_variable"):
        loader = pretraining_loader(labelled, folder, include_train=False)
    seen = _epoch(loader)
    assert set(seen) == {f"U-{p}" for p in copied}
    assert len(seen[f"U-{copied[0]}"]["times"]) == len(table[table["patient_id"] == f"U-{copied[0]}"])


def test_labelled_patients_in_the_unlabelled_folder_are_refused_by_name(tmp_path, synthetic_cohort, labelled):
    events = pd.read_parquet(synthetic_cohort / "timeseries.parquet")
    folder = tmp_path / "leaky"
    folder.mkdir()
    has = [p for p in labelled.cohort.splits["test"] if labelled.cohort.readers["timeseries"].has(p)][:1]
    events[events["patient_id"].isin(has)].to_parquet(folder / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=rf"1 patient\(s\) of .*timeseries.parquet are also in the labelled cohort .*\['test'\].*{has[0]}"):
        pretraining_loader(labelled, folder)


def test_missing_inputs_are_named(tmp_path, synthetic_cohort, labelled):
    with pytest.raises(ValueError, match="timeseries.parquet does not exist"):
        pretraining_loader(labelled, tmp_path)
    tab = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular"])
    with pytest.raises(ValueError, match=r"loads \['tabular'\], not 'timeseries'"):
        pretraining_loader(tab, tmp_path)


def test_forecast_pretraining_runs_on_the_loader_and_moves_the_encoder(tmp_path, synthetic_cohort, labelled):
    folder, _, _ = _unlabelled(tmp_path, synthetic_cohort, labelled, n=20, rename=lambda p: f"X{p}")
    torch.manual_seed(0)
    enc = STraTSEncoder(32, labelled.spec["timeseries"])
    before = [p.detach().clone() for p in enc.parameters()]
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(ForecastPretrainModule(enc), train_dataloaders=pretraining_loader(labelled, folder))
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.parameters()))


def test_without_a_folder_serves_the_training_patients_and_split_loader_any_split_in_order(labelled):
    from clinfuse.experiments.unlabelled_series import split_loader

    reader = labelled.cohort.readers["timeseries"]
    train = {p for p in labelled.cohort.splits["train"] if reader.has(p)}
    assert set(_epoch(pretraining_loader(labelled, None, batch_size=8))) == train
    val = [p for p in labelled.cohort.splits["val"] if reader.has(p)]
    served = [pid for batch in split_loader(labelled, "val", batch_size=4) for pid in batch["patient_id"]]
    assert served == val
    with pytest.raises(ValueError, match="no split 'valid'"):
        split_loader(labelled, "valid")
    with pytest.raises(ValueError, match="include_train=False and no unlabelled folder"):
        pretraining_loader(labelled, None, include_train=False)
