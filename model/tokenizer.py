"""Byte-level BPE tokenizer of the embedded model, trained with ``tokenizers`` on the corpus' train split.

The special tokens take the first ids, in this order (the layout contract of the sampler and trainer relies on
the names, and readers of a checkpoint look the ids up by name, never by number)::

    <pad>=0 <eos>=1 <bos>=2 <unk>=3 <|fim_pad|>=4 <|mask|>=5 <|image|>=6 <|boi|>=7 <|eoi|>=8

``<|fim_pad|>`` is the filler emitted for unused canvas slots; ``<|image|>``, ``<|boi|>``, ``<|eoi|>`` exist
because DiffusionGemma's config needs valid image token ids. The pre-tokenizer is byte-level with the GPT-2
regex and no prefix space, so any text (tabs, CRLF, trailing spaces, emoji) round-trips losslessly. No BOS is
added automatically: callers prepend it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
FILLER, MASK, IMAGE, BOI, EOI = "<|fim_pad|>", "<|mask|>", "<|image|>", "<|boi|>", "<|eoi|>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK, FILLER, MASK, IMAGE, BOI, EOI)
DEFAULT_VOCAB_SIZE = 8192


def train_tokenizer(
    texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on ``texts``, save it into ``out_dir`` and return the loaded tokenizer.

    ``out_dir`` receives ``tokenizer.json`` and the ``save_pretrained`` files, so that
    ``AutoTokenizer.from_pretrained(out_dir)`` works.
    """
    if vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS) + 256} (specials + bytes), found {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(out / "tokenizer.json"),
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        mask_token=MASK,
        additional_special_tokens=[FILLER, IMAGE, BOI, EOI],
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out))
    loaded = load_tokenizer(out)
    check_special_tokens(loaded)
    return loaded


def load_tokenizer(folder: str | os.PathLike) -> PreTrainedTokenizerFast:
    """``AutoTokenizer.from_pretrained(folder)`` with a clear error when the folder has no tokenizer."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"tokenizer expected at {folder}: no tokenizer.json")
    return cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(str(folder)))


def check_special_tokens(tok) -> dict[str, int]:
    """Check that every special token exists as one token with its contract id; return ``{token: id}``.

    Raises ``ValueError`` naming the first token whose id differs from its place in ``SPECIAL_TOKENS``.
    """
    ids = {}
    for expected_id, name in enumerate(SPECIAL_TOKENS):
        got = tok.convert_tokens_to_ids(name)
        if got != expected_id:
            raise ValueError(f"special token {name!r}: expected id {expected_id}, found {got}")
        ids[name] = got
    return ids


def filler_token_id(tok) -> int:
    """Id of the filler ``<|fim_pad|>`` in this tokenizer (raises ``ValueError`` when it is missing)."""
    tid = tok.convert_tokens_to_ids(FILLER)
    if tid is None or tid == tok.unk_token_id:
        raise ValueError(f"tokenizer has no {FILLER} token")
    return tid
