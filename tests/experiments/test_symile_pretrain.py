"""Symile pretraining: the loss goes down, retrieval, missing modalities, the hand-over downstream."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from clinfuse.encoders.registry import ENCODERS
from clinfuse.experiments.module import ClinFuseModule
from clinfuse.experiments.symile_pretrain import SymilePretrainModule, retrieval_accuracy, retrieve
from clinfuse.fusion.symile import SymileFusion
from clinfuse.fusion.symile_loss import mip, pairwise_clip_loss, symile_loss

MODS = ["tabular", "timeseries", "genomics"]
D = 16


@pytest.fixture
def spec() -> dict[str, dict]:
    return {m: ENCODERS[m].example_spec() for m in MODS}


def fake_batch(b: int = 8, seed: int = 0, mods: list[str] = MODS) -> dict:
    """A batch in the data module's format from each encoder's example inputs (last patient absent)."""
    g = torch.Generator().manual_seed(seed)
    labels = {"binary": torch.randint(0, 2, (b,), generator=g), "time": torch.rand(b, generator=g) + 0.1,
              "event": torch.ones(b), "multiclass": torch.zeros(b, dtype=torch.long)}
    inputs = {m: ENCODERS[m].example_inputs(batch_size=b, seed=seed + i) for i, m in enumerate(mods)}
    return {"inputs": inputs, "labels": labels, "patient_id": [f"p{i}" for i in range(b)]}


@torch.no_grad()
def eval_loss(module: SymilePretrainModule, batch: dict) -> float:
    module.eval()
    reps, _ = module.represent(batch["inputs"])
    torch.manual_seed(0)  # the same "n" permutations every time
    loss = module.loss(reps).item()
    module.train()
    return loss


def test_training_reduces_the_loss_and_logs(spec, tmp_path):
    torch.manual_seed(0)
    module = SymilePretrainModule(spec, d_model=D, lr=1e-2)
    batch = fake_batch()
    before = eval_loss(module, batch)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader([batch] * 12, batch_size=None), DataLoader([batch], batch_size=None))
    after = eval_loss(module, batch)
    assert after < 0.5 * before, (before, after)
    metrics = trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/acc@1_tabular"} <= set(metrics)
    assert torch.isfinite(metrics["val/loss"])
    # the checkpoint rebuilds the whole module
    trainer.save_checkpoint(tmp_path / "pre.ckpt")
    loaded = SymilePretrainModule.load_from_checkpoint(tmp_path / "pre.ckpt").eval()
    module.eval()
    with torch.no_grad():
        a, b = module.represent(batch["inputs"])[0], loaded.represent(batch["inputs"])[0]
    for m in MODS:
        torch.testing.assert_close(a[m], b[m])


def test_loss_is_symile_on_the_representations(spec):
    torch.manual_seed(0)
    module = SymilePretrainModule(spec, d_model=D, modalities=["genomics", "tabular"], negative_sampling="n_squared")
    reps, present = module.represent(fake_batch()["inputs"])
    assert sorted(reps) == ["genomics", "tabular"]  # timeseries is in the batch but not contrasted
    expected = symile_loss([reps["genomics"], reps["tabular"]], module.logit_scale, "n_squared")
    torch.testing.assert_close(module.loss(reps), expected)
    for m, r in reps.items():
        torch.testing.assert_close(r.norm(dim=1), torch.ones(8))
        missing = torch.nn.functional.normalize(module.fusion.missing[m], dim=0)
        torch.testing.assert_close(r[~present[m]], missing.expand(int((~present[m]).sum()), -1))


def test_pairwise_clip_objective_trains(spec):
    torch.manual_seed(0)
    module = SymilePretrainModule(spec, d_model=D, objective="pairwise_clip", lr=1e-2)
    batch = fake_batch()
    reps, _ = module.represent(batch["inputs"])
    torch.testing.assert_close(module.loss(reps), pairwise_clip_loss([reps[m] for m in MODS], module.logit_scale))
    before = eval_loss(module, batch)
    opt = module.configure_optimizers()
    for _ in range(8):
        opt.zero_grad()
        module.loss(module.represent(batch["inputs"])[0]).backward()
        opt.step()
    assert eval_loss(module, batch) < 0.5 * before


def test_incomplete_patients_still_train(spec):
    torch.manual_seed(0)
    module = SymilePretrainModule(spec, d_model=D, negative_sampling="n")
    batch = fake_batch()
    del batch["inputs"]["timeseries"]  # nobody has it
    batch["inputs"]["genomics"]["present"][:3] = False  # and some lack genomics
    reps, present = module.represent(batch["inputs"])
    assert not present["timeseries"].any() and present["genomics"].sum() == 4
    loss = module.loss(reps)
    loss.backward()
    assert torch.isfinite(loss)
    for m in MODS:
        grad = module.fusion.missing[m].grad
        assert grad is not None and (grad != 0).any(), m
    assert module.fusion.mlp[0].weight.grad is None  # the pooling MLP is for downstream only


def test_retrieval_on_obvious_representations():
    eye = torch.eye(5)
    reps = {"a": eye, "b": eye * 2, "c": eye.flip(1) + eye}
    scores = retrieve(reps, "a")
    assert scores.shape == (5, 5)
    for i, j in [(0, 0), (1, 3), (4, 0)]:  # scores[i, j] = MIP(b[i], c[i], a[j])
        assert scores[i, j].item() == pytest.approx(mip(reps["b"][i], reps["c"][i], reps["a"][j]).item())
    assert retrieval_accuracy(reps, "a") == 1.0
    shifted = dict(reps, a=eye.roll(1, dims=0))  # every patient's own candidate now belongs to another
    assert retrieval_accuracy(shifted, "a") == 0.0
    module = SymilePretrainModule({m: ENCODERS[m].example_spec() for m in MODS}, d_model=D)
    assert module.zero_shot_retrieval(reps, "a") == 1.0
    with pytest.raises(ValueError, match="'z'"):
        retrieve(reps, "z")


def test_zero_shot_retrieval_from_a_batch_uses_patients_with_the_target(spec):
    torch.manual_seed(0)
    module = SymilePretrainModule(spec, d_model=D).train()
    batch = fake_batch(b=9)
    acc = module.zero_shot_retrieval(batch, "tabular")
    assert module.training  # the mode is restored
    module.eval()
    with torch.no_grad():
        reps, present = module.represent(batch["inputs"])
    rows = present["tabular"]
    assert rows.sum() == 8
    assert acc == retrieval_accuracy({m: r[rows] for m, r in reps.items()}, "tabular")


def test_pretrained_encoders_and_head_plug_into_clinfuse_module(spec):
    torch.manual_seed(0)
    pre = SymilePretrainModule(spec, d_model=D, lr=1e-2)
    batch = fake_batch()
    opt = pre.configure_optimizers()
    for _ in range(3):
        opt.zero_grad()
        pre.loss(pre.represent(batch["inputs"])[0]).backward()
        opt.step()
    # downstream with one more modality than pretrained: its encoder and projection start fresh
    big_spec = dict(spec, wsi=ENCODERS["wsi"].example_spec())
    model = ClinFuseModule(big_spec, d_model=D, fusion=SymileFusion, task="binary")
    fresh = pre.load_into(model)
    assert any(k.startswith("head.") for k in fresh) and any(k.startswith("fusion.mlp.") for k in fresh)
    assert any(k.startswith("encoders.wsi.") for k in fresh) and "fusion.missing.wsi" in fresh
    assert not any(k.startswith(f"encoders.{m}.") for k in fresh for m in MODS)
    pre.eval(), model.eval()
    with torch.no_grad():
        ours, _ = pre.represent(batch["inputs"])
        theirs, _ = model.fusion.represent(model.encode(batch["inputs"]))
    for m in MODS:
        torch.testing.assert_close(theirs[m], ours[m])
    # and the supervised model trains from there
    model.train()
    out, fused = model(batch["inputs"])
    loss = model.loss(out, batch["labels"])
    loss.backward()
    assert torch.isfinite(loss) and fused.pooled.shape == (8, D)
    assert model.encoders["tabular"].embedding.weight.grad is not None
    # a model built differently is refused, naming the keys
    with pytest.raises(ValueError, match="encoders.tabular"):
        pre.load_into(ClinFuseModule(spec, d_model=2 * D, fusion=SymileFusion, task="binary"))


def test_downstream_state_saves_and_reloads(spec, tmp_path):
    torch.manual_seed(0)
    pre = SymilePretrainModule(spec, d_model=D)
    torch.save(pre.downstream_state(), tmp_path / "symile.pt")
    model = ClinFuseModule(spec, d_model=D, fusion=SymileFusion, task="survival")
    missing, unexpected = model.load_state_dict(torch.load(tmp_path / "symile.pt"), strict=False)
    assert not unexpected and all(k.startswith(("head.", "fusion.mlp.")) for k in missing)


def test_bad_arguments(spec):
    with pytest.raises(ValueError, match="at least two"):
        SymilePretrainModule(spec, modalities=["tabular"])
    with pytest.raises(ValueError, match=r"\['ecg'\]"):
        SymilePretrainModule(spec, modalities=["tabular", "ecg"])
    with pytest.raises(ValueError, match="negative_sampling"):
        SymilePretrainModule(spec, negative_sampling="n3")
    with pytest.raises(ValueError, match="objective"):
        SymilePretrainModule(spec, objective="infonce")
    with pytest.raises(ValueError, match="spec"):
        SymilePretrainModule(None)


def test_the_readme_snippet_runs_with_lightnings_default_logger(synthetic_cohort, tmp_path, monkeypatch):
    """README "Symile pretraining from Python", 1 short epoch: the data module's and the module's
    ``modalities`` hyperparameters must agree, or Lightning refuses to merge them for its logger."""
    from clinfuse.datasets import ClinicalDataModule
    from clinfuse.experiments.module import ClinFuseModule
    from clinfuse.fusion import SymileFusion

    monkeypatch.chdir(tmp_path)
    contrast = ["tabular", "ecg", "genomics"]
    everything = ClinicalDataModule(root=str(synthetic_cohort), batch_size=32)
    with pytest.raises(ValueError, match=r"data module loads modalities all but .*modalities=\['tabular', 'ecg', 'genomics'\]"):
        pl.Trainer(max_epochs=1, enable_progress_bar=False, default_root_dir=tmp_path).fit(
            SymilePretrainModule(spec=everything.spec, modalities=contrast), datamodule=everything)
    dm = ClinicalDataModule(root=str(synthetic_cohort), modalities=contrast, batch_size=32)
    pre = SymilePretrainModule(spec=dm.spec, modalities=contrast)
    pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False,
               default_root_dir=tmp_path).fit(pre, datamodule=dm)
    model = ClinFuseModule(spec=dm.spec, fusion=SymileFusion, task="survival")
    pre.load_into(model)
    enc = pre.encoders["tabular"].state_dict()
    for k, v in model.encoders["tabular"].state_dict().items():
        assert torch.equal(v, enc[k])
