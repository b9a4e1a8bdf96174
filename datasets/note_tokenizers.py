"""Subword (BPE) tokenizers for clinical notes, trained with HuggingFace ``tokenizers``.

The tokenizer is trained on the training split's note texts only and travels as its JSON string
(``Tokenizer.to_str()``) inside the notes reader's ``state_dict()``, so a checkpoint rebuilds the
exact same ids without the training data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

#: special tokens in id order: 0 = padding, 1 = unknown (the ids of docs/formats.md section 2)
PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD, UNK = 0, 1


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a lowercasing byte-pair-encoding tokenizer on ``texts``.

    Words are split on whitespace and punctuation, then into subwords. No continuing-subword prefix
    is used: with it, ``tokenizers`` assigns ids in hash-map order and training is not reproducible
    across processes; without it, training on the same texts gives the same tokenizer every time.

    Args:
        texts: the training notes.
        vocab_size: subword vocabulary size, without the two special ids (0 = pad, 1 = unknown).

    Returns:
        The trained tokenizer; ``[PAD]`` has id 0 and ``[UNK]`` id 1.
    """
    if vocab_size < 1:
        raise ValueError(f"BPE vocab_size must be >= 1, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + 2, special_tokens=[PAD_TOKEN, UNK_TOKEN], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.token_to_id(PAD_TOKEN) != PAD or tokenizer.token_to_id(UNK_TOKEN) != UNK:
        raise RuntimeError("BPE training did not put [PAD] at id 0 and [UNK] at id 1")
    return tokenizer


def load_bpe(json_str: str) -> Tokenizer:
    """Rebuild a tokenizer from its ``Tokenizer.to_str()`` JSON."""
    try:
        return Tokenizer.from_str(json_str)
    except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"cannot rebuild the notes BPE tokenizer from its saved JSON: {err}") from err


def encode_bpe(tokenizer: Tokenizer, texts: Sequence[str], max_words: int) -> list[np.ndarray]:
    """Token ids of every text, its first ``max_words`` subwords.

    A text that literally contains ``[PAD]`` would be matched as the padding token; such ids become
    unknown (1) so that id 0 only ever marks padding.

    Returns:
        One ``(W_i,)`` int64 array per text, ``W_i <= max_words``.
    """
    out = []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids = np.asarray(enc.ids[:max_words], dtype=np.int64)
        ids[ids == PAD] = UNK
        out.append(ids)
    return out
