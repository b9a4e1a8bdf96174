"""NotesTransformerEncoder: note-order equivariance, words and times matter, it learns, real batches."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.encoders.note_time_attention import NoteTimeAttention, Time2Vec
from clinfuse.encoders.notes_transformer import NotesTransformerEncoder

D = 16


def build(**kwargs) -> NotesTransformerEncoder:
    torch.manual_seed(0)
    spec = NotesTransformerEncoder.example_spec()
    return NotesTransformerEncoder(D, spec, **{**NotesTransformerEncoder.example_kwargs(), **kwargs}).eval()


def test_permuting_notes_permutes_their_tokens():
    enc, x = build(), NotesTransformerEncoder.example_inputs(4, seed=2)
    perm = torch.tensor([2, 0, 1])
    shuffled = {k: v[:, perm] if k != "present" else v for k, v in x.items()}
    ref, out = enc(x), enc(shuffled)
    torch.testing.assert_close(out.tokens, ref.tokens[:, perm], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.mask, ref.mask[:, perm])
    torch.testing.assert_close(out.times, ref.times[:, perm])


def test_word_order_time_and_other_notes_all_matter():
    enc = build()
    x = NotesTransformerEncoder.example_inputs(4, seed=0)
    x["note_mask"][0] = True  # patient 0: three real notes of 12 words each
    x["token_mask"][0] = True
    x["token_ids"][0] = torch.randint(2, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    ref = enc(x).tokens[0]
    reversed_words = dict(x, token_ids=x["token_ids"].clone())
    reversed_words["token_ids"][0, 0] = x["token_ids"][0, 0].flip(0)  # same bag of words, new order
    assert not torch.allclose(enc(reversed_words).tokens[0, 0], ref[0], atol=1e-4)  # learned positions
    later = dict(x, note_times=x["note_times"].clone())
    later["note_times"][0, 0] += 20.0
    assert not torch.allclose(enc(later).tokens[0, 1], ref[1], atol=1e-4)  # time reaches other notes
    other = dict(x, token_ids=x["token_ids"].clone())
    other["token_ids"][0, 2] = torch.randint(2, 50, (12,), generator=torch.Generator().manual_seed(9))
    assert not torch.allclose(enc(other).tokens[0, 0], ref[0], atol=1e-4)  # notes attend to each other
    cls = build(pooling="cls")
    assert not torch.allclose(cls(x).tokens[0], ref, atol=1e-4)


def test_word_order_matters_from_initialisation():
    """Words and positions start on one scale: reversing a note's words moves its vector a fair part
    of what replacing its words does. With N(0, 0.02) positions against nn.Embedding's N(0, 1)
    words this ratio was 0.003 (0.08 now), and some training seeds never learned word order."""
    torch.manual_seed(0)
    enc = NotesTransformerEncoder(32, {"vocab_size": 200, "max_words": 16}).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 200, (50, 16), generator=g)
    words = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        ref = enc.encode_notes(ids, words)
        reversed_order = enc.encode_notes(ids.flip(1), words)
        other_words = enc.encode_notes(torch.randint(2, 200, (50, 16), generator=g), words)
    ratio = ((reversed_order - ref).norm(dim=1) / (other_words - ref).norm(dim=1)).mean()
    assert ratio > 0.03, float(ratio)


def test_time2vec_hand_computed():
    torch.manual_seed(0)
    t2v = Time2Vec(4, n_frequencies=3, time_scale=24.0)
    times = torch.tensor([[0.0, 12.0, 48.0]])
    s = times[0] / 24.0
    feats = torch.stack(
        [t2v.linear.weight[0, 0] * s + t2v.linear.bias[0],
         *[torch.sin(t2v.frequency[i] * s + t2v.phase[i]) for i in range(3)]], dim=-1)  # (3, 4)
    torch.testing.assert_close(t2v(times)[0], feats @ t2v.out.weight.T + t2v.out.bias)
    # periods start geometrically spaced from 1 h to 1000 h
    torch.testing.assert_close(2 * torch.pi / t2v.frequency * 24.0, torch.tensor([1.0, 10 ** 1.5, 1000.0]))


def test_a_patient_without_notes_gets_zero_tokens_from_time_attention():
    torch.manual_seed(0)
    att = NoteTimeAttention(D, n_heads=2).eval()
    notes = torch.randn(2, 3, D)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = att(notes, torch.rand(2, 3) * 48, mask)
    assert torch.isfinite(out).all() and (out[~mask] == 0).all() and (out[mask] != 0).all()


def test_too_many_words_raise_naming_the_input():
    enc, x = build(), NotesTransformerEncoder.example_inputs(4)
    wide = dict(x, token_ids=torch.cat([x["token_ids"]] * 2, 2), token_mask=torch.cat([x["token_mask"]] * 2, 2))
    with pytest.raises(ValueError, match="token_ids.*max_words=12"):
        enc(wide)


@pytest.fixture
def one_thread():
    """Tiny training loops run much faster on one thread than on a few contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_learns_which_patients_mention_a_word(one_thread):
    """Label = "word 7 occurs in some note" (at a random note and position, among random filler
    words 8..29): the encoder + a linear read-out learn it and generalise to held-out patients."""
    g = torch.Generator().manual_seed(0)
    b, k, w = 192, 2, 8
    ids = torch.randint(8, 30, (b, k, w), generator=g)
    label = torch.rand(b, generator=g) < 0.5
    rows = label.nonzero()[:, 0]
    ids[rows, torch.randint(0, k, (len(rows),), generator=g), torch.randint(0, w, (len(rows),), generator=g)] = 7
    x = {"token_ids": ids, "token_mask": torch.ones(b, k, w, dtype=torch.bool),
         "note_times": torch.rand(b, k, generator=g) * 48, "note_mask": torch.ones(b, k, dtype=torch.bool),
         "present": torch.ones(b, dtype=torch.bool)}
    train, test = ({key: v[part] for key, v in x.items()} for part in (slice(0, 96), slice(96, None)))
    torch.manual_seed(0)
    enc = NotesTransformerEncoder(D, {"vocab_size": 30, "max_words": w}, embed_dim=32, dropout=0.0)
    head = torch.nn.Linear(D, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(60):
        logit = head(enc(train).tokens.mean(1))[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, label[:96].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        held_out = ((head(enc.eval()(test).tokens.mean(1))[:, 0] > 0) == label[96:]).float().mean()
    assert held_out > 0.9, f"held-out accuracy {held_out:.2f}"


def test_encodes_a_real_bpe_batch(tmp_path):
    """A cohort folder with notes only, read with the BPE tokenizer, through the encoder."""
    ids = [f"p{i}" for i in range(8)]
    pd.DataFrame({"patient_id": ids, "binary": [i % 2 for i in range(8)], "multiclass": [0] * 8,
                  "time": [1.0 + i for i in range(8)], "event": [1] * 8}).to_parquet(tmp_path / "labels.parquet")
    pd.DataFrame({"patient_id": ids, "split": ["train"] * 6 + ["val", "test"]}).to_csv(tmp_path / "splits.csv", index=False)
    notes = [(p, float(t), f"note {t}: patient {p} severe sepsis, worsening; lactate {i + t}")
             for i, p in enumerate(ids[:7]) for t in range(1 + i % 3)]
    pd.DataFrame(notes, columns=["patient_id", "time", "text"]).to_parquet(tmp_path / "notes.parquet")
    dm = ClinicalDataModule(root=str(tmp_path), modalities=["notes"], batch_size=8, notes_tokenizer="bpe",
                            notes_vocab_size=60, max_words=10)
    batch = next(iter(dm.split_dataloader("train")))["inputs"]["notes"]
    enc = NotesTransformerEncoder(D, dm.spec["notes"], embed_dim=16, n_heads=2).eval()
    out = enc(batch)
    assert torch.equal(out.mask, batch["note_mask"]) and out.tokens.shape == (6, 3, D)
    assert torch.isfinite(out.tokens).all() and (out.tokens[out.mask] != 0).all()
