"""model.modality_dropout by modality: a typo is an error, a modality the run does not load a warning."""

from __future__ import annotations

import pytest

from clinfuse.encoders.genomics import GenomicsMLPEncoder
from clinfuse.encoders.tabular import TabularMLPEncoder
from clinfuse.experiments.module import ClinFuseModule

SPEC = {"tabular": TabularMLPEncoder.example_spec(), "genomics": GenomicsMLPEncoder.example_spec()}


def test_a_misspelt_modality_is_an_error_naming_the_loaded_ones():
    with pytest.raises(ValueError, match=r"unknown modalities \['genomcis'\]; known: \['tabular', 'genomics'\]"):
        ClinFuseModule(spec=SPEC, d_model=16, modality_dropout={"genomcis": 0.5})


def test_a_modality_not_loaded_warns_and_the_rest_applies():
    with pytest.warns(UserWarning, match=r"names \['ecg'\], which this run does not load"):
        model = ClinFuseModule(spec=SPEC, d_model=16, modality_dropout={"ecg": 0.3, "genomics": 0.5})
    assert model.dropout.rate("genomics") == 0.5 and model.dropout.rate("tabular") == 0.0
