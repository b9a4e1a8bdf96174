"""Device agnosticism without a GPU: every encoder, fusion head, loss, the task module and the
prediction API run on a fake accelerator (``tests/fake_accelerator.py``), where a tensor left on
the CPU next to a device tensor fails as it would on CUDA, and their outputs must equal the CPU
run's.

Accelerator-only code paths run here too: ``packed_pays`` is False off the CPU, so the
transformer fusion takes its padded path; its result must equal the CPU (packed) result.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch.utils._pytree import tree_map

from clinfuse.encoders.registry import ENCODER_CLASSES, ENCODERS
from clinfuse.fusion.registry import FUSION_HEADS

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):  # by path: --import-mode=importlib puts no test folder on sys.path
    spec = importlib.util.spec_from_file_location(f"_clinfuse_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conformance, _fake = _load("test_conformance"), _load("fake_accelerator")
build_encoder, build_head, random_tokens, D, B = (
    conformance.build_encoder, conformance.build_head, conformance.random_tokens, conformance.D, conformance.B
)
CPU = _fake.CPU
DeviceMismatch = _fake.DeviceMismatch
OnDevice = _fake.OnDevice
fake_accelerator = _fake.fake_accelerator
to_device = _fake.to_device
module_to_device = _fake.module_to_device
host = _fake.host
assert_on_device = _fake.assert_on_device


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster (and kinder to a shared CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_harness_catches_a_cpu_tensor_next_to_a_device_tensor():
    with fake_accelerator():
        x = to_device(torch.arange(4.0))
        with pytest.raises(DeviceMismatch, match="same device"):
            x + torch.arange(4.0)  # torch.arange(n) without device=
        with pytest.raises(DeviceMismatch):
            torch.cat([x, torch.zeros(2)])
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()  # .numpy() without .cpu()
        assert_on_device(x + torch.arange(4.0, device=x.device), x * torch.tensor(2.0), torch.tensor([1.0], device=x.device))
        assert_on_device(x[torch.tensor([0, 2])], torch.zeros(2).to(x.device))  # CPU indices, .to(device): fine on CUDA
        assert torch.equal(host(x.cumsum(0)), torch.tensor([0.0, 1.0, 3.0, 6.0])) and float(x.sum()) == 6.0
        assert type(x.cpu()) is torch.Tensor and x.tolist() == [0.0, 1.0, 2.0, 3.0]
    lazy = torch.nn.Linear(2, 2)
    lazy.scale = torch.ones(2)  # a plain attribute, not a registered buffer: .to(device) leaves it behind
    lazy = module_to_device(lazy)
    assert isinstance(lazy.weight, OnDevice) and not isinstance(lazy.scale, OnDevice)


# --------------------------------------------------------------------------- encoders

#: extra constructor arguments that reach branches the example kwargs do not
ENCODER_VARIANTS = {
    "FTTransformerEncoder": [{"numeric_embedding": "periodic", "mask_missing_keys": True}],
    "NotesTransformerEncoder": [{"pooling": "cls"}],
    "XResNet1dEncoder": [{"target_fs": 50.0, "window_seconds": 1.5}],  # in-model resampling and cropping
}
ENCODER_CASES = [(n, {}) for n in sorted(ENCODER_CLASSES)] + [
    (n, kw) for n in sorted(ENCODER_VARIANTS) for kw in ENCODER_VARIANTS[n]
]


def _has_training_branch(cls) -> bool:
    """Whether the class (or a base) branches on ``self.training`` in its own code."""
    import inspect

    return any("self.training" in inspect.getsource(c) for c in cls.__mro__
               if c.__module__.startswith("clinfuse.") and c is not torch.nn.Module)


def _encoder(name: str, extra: dict, train: bool = False):
    if not extra:
        return build_encoder(name, train)
    cls = ENCODER_CLASSES[name]
    torch.manual_seed(0)
    return cls(D, cls.example_spec(), **{**cls.example_kwargs(), **extra}).train(train)


@pytest.mark.parametrize(
    "name,extra", ENCODER_CASES, ids=[n + ("-" + "-".join(kw) if kw else "") for n, kw in ENCODER_CASES]
)
def test_encoder_runs_on_the_accelerator_and_matches_cpu(name, extra):
    x = ENCODER_CLASSES[name].example_inputs(batch_size=B)
    enc = _encoder(name, extra)
    ref = enc(x)
    enc = module_to_device(enc)
    with fake_accelerator():
        out = enc(to_device(x))
        assert_on_device(out.tokens, out.mask, out.present, out.times)
        torch.testing.assert_close(host(out.tokens), ref.tokens, rtol=1e-5, atol=1e-5)
        assert torch.equal(host(out.mask), ref.mask) and torch.equal(host(out.present), ref.present)
        if _has_training_branch(type(enc)):  # training-only paths (patch sampling, random crops)
            enc.train()
            torch.manual_seed(0)
            out = enc(to_device(x))
            assert_on_device(out.tokens, out.mask, out.present, out.times)


# --------------------------------------------------------------------------- fusion heads

HEAD_VARIANTS = {
    "transformer": [{"max_tokens_per_modality": 2}],
    "multimodn": [{"shuffle_order": True}],
}
HEAD_CASES = [(h, {}) for h in sorted(FUSION_HEADS)] + [(h, kw) for h in sorted(HEAD_VARIANTS) for kw in HEAD_VARIANTS[h]]


@pytest.mark.parametrize("head_name,extra", HEAD_CASES, ids=[h + ("-" + "-".join(kw) if kw else "") for h, kw in HEAD_CASES])
def test_head_runs_on_the_accelerator_and_matches_cpu(head_name, extra):
    names = [f"mod{i}" for i in range(3)]
    inputs = random_tokens(names, batch=5, seed=3)
    torch.manual_seed(0)
    head = FUSION_HEADS[head_name](D, names, **extra).eval()
    ref, ref_pooled = head(inputs), head.pooled_output(inputs)
    head = module_to_device(head)
    with fake_accelerator():
        dev_inputs = to_device(inputs)
        out = head(dev_inputs)
        assert_on_device(out.pooled, *(out.per_modality or {}).values(), *(out.per_step or []))
        # off the CPU the transformer takes its padded path (packed_pays is False): same result
        conformance.assert_outputs_close(
            type(out)(**{k: tree_map(host, v) for k, v in vars(out).items()}), ref, rtol=1e-5, atol=1e-5
        )
        pooled = head.pooled_output(dev_inputs)  # what Prognosis calls
        assert_on_device(pooled.pooled)
        torch.testing.assert_close(host(pooled.pooled), ref_pooled.pooled, rtol=1e-5, atol=1e-5)
        head.train()  # training-only paths (auxiliary losses, dropout, shuffled order)
        out = head(dev_inputs)
        assert_on_device(out.pooled, out.aux_loss)


def test_modality_dropout_and_encoders_chain_into_a_head_on_the_accelerator():
    from clinfuse.fusion.modality_dropout import ModalityDropout

    torch.manual_seed(0)
    encoders = module_to_device(torch.nn.ModuleDict({m: build_encoder(cls.__name__) for m, cls in ENCODERS.items()}))
    head = module_to_device(build_head("masked_mean", list(ENCODERS)))
    batch = {m: cls.example_inputs(batch_size=B, seed=1) for m, cls in ENCODERS.items()}
    with fake_accelerator():
        tokens = {m: encoders[m](x) for m, x in to_device(batch).items()}
        dropped = ModalityDropout(0.5).train()(tokens)
        for t in dropped.values():
            assert_on_device(t.tokens, t.mask, t.present)
        assert_on_device(head(dropped).pooled)


# --------------------------------------------------------------------------- task module, losses, survival


def _module(task: str, **kw):
    from clinfuse.experiments.module import ClinFuseModule

    spec = {m: ENCODERS[m].example_spec() for m in ("tabular", "genomics")}
    torch.manual_seed(0)
    model = ClinFuseModule(spec=spec, d_model=D, task=task, n_time_bins=4, modality_dropout=0.3, **kw)
    if model.objective is not None and model.objective.discrete:
        model.objective.fit_bins(torch.linspace(0.5, 10.0, 40), torch.ones(40))
    batch = {
        "patient_id": [f"p{i}" for i in range(B)],
        "inputs": {m: ENCODERS[m].example_inputs(B, seed=2) for m in spec},
        "labels": {
            "time": torch.tensor([2.0, 7.0, 2.0, 9.0]), "event": torch.tensor([1.0, 0.0, 1.0, 1.0]),
            "cause": torch.tensor([1.0, 0.0, 2.0, 1.0]), "binary": torch.tensor([0.0, 1.0, 1.0, 0.0]),
            "multiclass": torch.tensor([0, 2, 1, 2]),
        },
    }
    return model, batch


MODULE_CASES = [  # every task and loss family once; fusion heads chosen for their extra outputs
    ("survival", {"cox_ties": "efron", "fusion": "late"}),  # late averaging of per-modality predictions
    ("survival", {"risk_memory": 8, "fusion": "masked_mean"}),  # the Cox risk memory (filled by step 1)
    ("survival", {"survival_loss": "logistic_hazard", "fusion": "transformer"}),
    ("survival", {"survival_loss": "deephit", "fusion": "masked_mean"}),  # PMF likelihood + ranking
    ("survival", {"survival_loss": "deephit_cr", "n_causes": 2, "fusion": "cascaded"}),  # per-step losses
    ("binary", {"fusion": "symile"}),
    ("multiclass", {"n_classes": 3, "fusion": "early"}),
]


@pytest.mark.parametrize("task,kw", MODULE_CASES, ids=[f"{t}-{'-'.join(map(str, kw.values()))}" for t, kw in MODULE_CASES])
def test_module_forward_loss_backward_and_predict_on_the_accelerator(task, kw):
    model, batch = _module(task, **kw)
    model = module_to_device(model)
    with fake_accelerator():
        inputs, labels = to_device(batch["inputs"]), to_device(batch["labels"])
        model.train()
        for _ in range(2 if kw.get("risk_memory") else 1):  # the Cox risk memory is filled by the first step
            out, fused = model(inputs)
            loss = model.loss(out, labels)
            steps = model.step_outputs(fused)
            if steps:
                loss = loss + torch.stack([model.loss(o, labels) for o in steps]).mean()
            if fused.aux_loss is not None:
                loss = loss + fused.aux_loss
            assert_on_device(out, loss, model.risk(out))
            assert math.isfinite(float(loss.detach()))
            loss.backward()
        assert all(p.grad is None or isinstance(p.grad, OnDevice) for p in model.parameters())
        model.eval()
        with torch.no_grad():
            pred = model.predict_step({"inputs": inputs, "patient_id": batch["patient_id"]}, 0)
        assert type(pred["out"]) is torch.Tensor and pred["out"].device == CPU  # predictions come back to the host
        if model.objective is not None and model.objective.discrete:  # curves from outputs on the device
            out, _ = model(inputs)
            times = torch.tensor([1.0, 5.0, 20.0], device=out.device)
            assert_on_device(model.objective.survival(out, times), model.objective.median(out))
            if model.objective.competing:
                assert_on_device(model.objective.cumulative_incidence_at(out, times))


DISCRETE = [("logistic_hazard", {}), ("pmf", {}), ("pmf_cr", {"n_causes": 2})]


@pytest.mark.parametrize("loss,kw", DISCRETE, ids=[d[0] for d in DISCRETE])
def test_survival_curves_of_outputs_gathered_to_the_host(loss, kw):
    """``ClinFuseModule._survival_function`` (validation epoch end), ``survival_report`` and
    ``Prognosis`` hand the objective CPU outputs and CPU times while the model (and its ``edges``
    buffer) may sit on the accelerator: S(t), CIF(t) and the median must accept them and answer
    on the outputs' device."""
    model, _ = _module("survival", survival_loss=loss, **kw)
    objective = module_to_device(model).objective
    out = torch.randn(5, objective.n_outputs)
    times = torch.tensor([1.0, 5.0, 20.0], dtype=torch.float64)
    with fake_accelerator():
        assert type(objective.survival(out, times)) is torch.Tensor
        assert type(objective.median(out)) is torch.Tensor
        if objective.competing:
            assert type(objective.cumulative_incidence_at(out, times)) is torch.Tensor


def test_validation_survival_metrics_with_the_model_on_the_accelerator():
    """The validation-epoch path of a discrete-time model (``_ipcw_metrics`` -> ``_survival_function``):
    the collected outputs are moved to the host, the objective's bin edges stay on the device."""
    import numpy as np

    model, _ = _module("survival", survival_loss="pmf", fusion="masked_mean")
    model = module_to_device(model)
    with fake_accelerator():
        model._collected["val_preds"]["raw"].update(to_device(torch.randn(5, model.objective.n_outputs)))
        surv = model._survival_function("val", None)(np.array([1.0, 5.0, 20.0]))
    assert surv.shape == (5, 3)


def test_prognosis_predicts_with_a_model_on_the_accelerator(monkeypatch):
    """``Prognosis(model, ...)`` is public: a model the caller moved to the GPU must predict too
    (the predictor collates CPU batches and reads curves with ``.numpy()``), equal to the CPU model."""
    import copy

    from clinfuse.experiments.prognosis import Prognosis

    # harness limitation: a wrapper tensor cannot be viewed inside inference_mode (no version
    # counter to share); no_grad computes the same values
    monkeypatch.setattr(torch, "inference_mode", torch.no_grad)
    model, batch = _module("survival", survival_loss="pmf_cr", n_causes=2, fusion="multimodn")
    states = {"tabular": {"modality": "tabular", "fitted": {}},
              "genomics": {"modality": "genomics", "fitted": {"genes": [], "mutations": []}}}
    used = [list(model.modalities)] * B
    want = Prognosis(copy.deepcopy(model), {"modalities": states}, None, "model.ckpt")._predict_batch(
        batch["inputs"], used, (1.0, 5.0), True)
    with fake_accelerator():
        predictor = Prognosis(module_to_device(model), {"modalities": states}, None, "model.ckpt")
        got = predictor._predict_batch(batch["inputs"], used, (1.0, 5.0), True)  # what predict() collates: CPU
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for g, w in zip(got, want):
        assert g["risk"] == pytest.approx(w["risk"], rel=1e-5, abs=1e-6)
        assert g["survival_at"] == pytest.approx(w["survival_at"], rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------- checkpoints on a CPU-only machine


def _loads_without_map_location() -> list[str]:
    """``torch.load`` / ``load_from_checkpoint`` calls of the library that pass no ``map_location``."""
    bad = []
    for folder in ("encoders", "fusion", "experiments", "datasets"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    name = node.func.attr
                    is_load = name == "load_from_checkpoint" or (
                        name == "load" and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    )
                    if is_load and not any(k.arg == "map_location" for k in node.keywords):
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return bad


def test_every_checkpoint_load_maps_to_the_cpu():
    """A checkpoint written on a GPU machine must load on a CPU-only one (Prognosis, predict, resume checks)."""
    assert _loads_without_map_location() == []


def test_a_checkpoint_saved_from_cuda_loads_on_a_cpu_only_machine(tmp_path, monkeypatch):
    import torch.serialization as serialization

    from clinfuse.experiments.cli import check_checkpoint
    from clinfuse.experiments.module import ClinFuseModule

    model, _ = _module("survival", survival_loss="pmf", fusion="masked_mean")
    path = tmp_path / "gpu.ckpt"
    with monkeypatch.context() as patch:  # every storage tagged as a CUDA one, as torch.save on a GPU writes it
        patch.setattr(serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                    "pytorch-lightning_version": "2.4.0"}, path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)  # the fixture really is a "GPU" checkpoint
    check_checkpoint(path, model, model.hparams.spec)
    loaded = ClinFuseModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)  # as Prognosis loads
    assert torch.equal(loaded.objective.edges, model.objective.edges) and loaded.objective.edges.device == CPU
