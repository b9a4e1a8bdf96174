"""Early and late fusion baselines, checked against hand computations."""

from __future__ import annotations

import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.early import EarlyFusion
from clinfuse.fusion.late import LateFusion, late_average


def _tokens(present: list[bool], n: int = 3, d: int = 4, seed: int = 0) -> ModalityTokens:
    g = torch.Generator().manual_seed(seed)
    b = len(present)
    mask = torch.rand(b, n, generator=g) < 0.7
    mask[:, 0] = True
    return ModalityTokens.from_tokens(torch.randn(b, n, d, generator=g), mask, torch.tensor(present))


def test_early_fusion_uses_the_absent_slot_only_for_patients_lacking_the_modality():
    torch.manual_seed(0)
    head = EarlyFusion(4, ["a", "b"]).eval()
    x = {"a": _tokens([True, True], seed=1), "b": _tokens([True, False], seed=2)}
    before = head(x).pooled
    with torch.no_grad():
        head.absent[1] += 1.0  # the "b is absent" vector
    after = head(x).pooled
    assert torch.allclose(before[0], after[0])  # patient 0 has b: unchanged
    assert not torch.allclose(before[1], after[1])  # patient 1 lacks b: its slot changed


def test_early_fusion_input_carries_presence_flags():
    torch.manual_seed(0)
    head = EarlyFusion(4, ["a", "b"]).eval()
    first = head.mlp[0]
    assert first.in_features == 2 * 4 + 2  # two slots of D plus two presence flags


def test_late_average_is_the_mean_of_present_modalities_predictions():
    torch.manual_seed(0)
    head = LateFusion(4, ["a", "b", "c"]).eval()
    x = {"a": _tokens([True, True, False], seed=1), "b": _tokens([True, False, False], seed=2),
         "c": _tokens([False, False, False], seed=3)}
    out = head(x)
    predict = torch.nn.Linear(4, 1)
    got = late_average(lambda v: predict(v).squeeze(-1), out, head.modalities)
    pa, pb = predict(out.per_modality["a"]).squeeze(-1), predict(out.per_modality["b"]).squeeze(-1)
    assert torch.allclose(got[0], (pa[0] + pb[0]) / 2)  # a and b present
    assert torch.allclose(got[1], pa[1])  # only a
    assert torch.allclose(got[2], predict(head.empty).squeeze(-1))  # nothing: the empty vector


def test_module_with_late_fusion_averages_predictions():
    from clinfuse.encoders.tabular import TabularMLPEncoder
    from clinfuse.encoders.genomics import GenomicsMLPEncoder
    from clinfuse.experiments.module import ClinFuseModule

    spec = {"tabular": TabularMLPEncoder.example_spec(), "genomics": GenomicsMLPEncoder.example_spec()}
    torch.manual_seed(0)
    model = ClinFuseModule(spec=spec, d_model=8, fusion=LateFusion).eval()
    inputs = {"tabular": TabularMLPEncoder.example_inputs(), "genomics": GenomicsMLPEncoder.example_inputs()}
    out, fused = model(inputs)
    manual = [model.head(fused.per_modality[m]) for m in ("tabular", "genomics")]
    present = fused.extras["present"]
    i = int(torch.nonzero(present.all(1))[0])  # a patient with both modalities
    assert torch.allclose(out[i], (manual[0][i] + manual[1][i]) / 2)


def test_module_survival_loss_uses_the_configured_ties():
    from clinfuse.encoders.genomics import GenomicsMLPEncoder
    from clinfuse.experiments.module import ClinFuseModule
    from clinfuse.fusion.losses import cox_ph_loss

    spec = {"genomics": GenomicsMLPEncoder.example_spec()}
    risk = torch.tensor([0.3, -0.1, 0.8, 0.2])
    labels = {"time": torch.tensor([2.0, 2.0, 1.0, 2.0]), "event": torch.tensor([1.0, 1.0, 1.0, 0.0])}
    for ties in ("breslow", "efron"):
        model = ClinFuseModule(spec=spec, d_model=8, cox_ties=ties)
        assert torch.allclose(model.loss(risk, labels), cox_ph_loss(risk, labels["time"], labels["event"], ties=ties))
    assert not torch.allclose(cox_ph_loss(risk, labels["time"], labels["event"], ties="breslow"),
                              cox_ph_loss(risk, labels["time"], labels["event"], ties="efron"))
