"""A NaN at a real input position is an error naming the modality and row, not a NaN prediction."""

from __future__ import annotations

import pytest
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.experiments.module import ClinFuseModule


@pytest.fixture(scope="module")
def model_and_batch(synthetic_cohort):
    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "genomics", "wsi"], batch_size=16)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    return ClinFuseModule(spec=dm.spec, d_model=16).eval(), next(iter(dm.val_dataloader()))


def _clone(batch):
    return {m: {k: v.clone() for k, v in x.items()} for m, x in batch["inputs"].items()}


def test_nan_at_a_real_position_names_the_modality_and_row(model_and_batch):
    model, batch = model_and_batch
    inputs = _clone(batch)
    wsi = inputs["wsi"]
    row = int(wsi["present"].nonzero()[1])
    patch = int(wsi["mask"][row].nonzero()[0])
    wsi["features"][row, patch, 3] = float("nan")
    with torch.no_grad(), pytest.raises(ValueError, match=rf"the wsi encoder returned NaN/infinite tokens for batch rows \[{row}\]"):
        model(inputs)


def test_nan_at_padding_changes_nothing(model_and_batch):
    model, batch = model_and_batch
    inputs = _clone(batch)
    wsi = inputs["wsi"]
    assert (~wsi["mask"]).any(), "the batch needs padded patches for this test"
    wsi["features"][~wsi["mask"]] = float("nan")
    with torch.no_grad():
        out, _ = model(inputs)
        ref, _ = model(_clone(batch))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)


def test_infinite_genomics_value_is_named(model_and_batch):
    model, batch = model_and_batch
    inputs = _clone(batch)
    row = int(inputs["genomics"]["present"].nonzero()[0])
    inputs["genomics"]["expression"][row, 0] = float("inf")
    with torch.no_grad(), pytest.raises(ValueError, match=rf"genomics encoder .* rows \[{row}\]"):
        model(inputs)
