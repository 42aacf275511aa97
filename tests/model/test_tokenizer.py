import sysconfig
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from dgls.model.tokenizer import (
    FILLER,
    SPECIAL_TOKENS,
    check_special_tokens,
    filler_token_id,
    load_tokenizer,
    train_tokenizer,
)

SHIPPED = Path(__file__).resolve().parents[2] / "model" / "checkpoints" / "dgls-tiny"

SNIPPETS = [
    "def f(x):\n\treturn x  \n",  # tab, trailing spaces
    "class A:\r\n    pass\r\n",  # CRLF
    "s = 'héllo wörld — ñandú'   \n\n\n",  # non-ASCII, runs of newlines
    "# 🚀 emoji 👩‍💻 and 中文注释\nx = '\\u2603'\n",  # emoji (with ZWJ), CJK
    "    \t  \n\x0c\nif a:\n        b = {'k': [1, 2]}  # trailing\t\n",  # mixed whitespace, form feed
    "",
]


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text() for name in ("textwrap.py", "bisect.py", "colorsys.py", "keyword.py")]
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts, out, vocab_size=600)
    return out


def test_special_token_ids_in_contract_order(small_tok):
    tok = load_tokenizer(small_tok)
    ids = check_special_tokens(tok)
    assert list(ids.values()) == list(range(len(SPECIAL_TOKENS)))
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert filler_token_id(tok) == 4 and tok.mask_token_id == 5
    assert len(tok) == 600


def test_saved_folder_loads_with_autotokenizer(small_tok):
    assert (small_tok / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(small_tok))
    assert tok.convert_tokens_to_ids(FILLER) == 4
    assert tok.clean_up_tokenization_spaces is False
    # no BOS/EOS added implicitly: the caller prepends <bos>
    ids = tok("x = 1\n")["input_ids"]
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids
    # each special token encodes to exactly its own id
    for i, name in enumerate(SPECIAL_TOKENS):
        assert tok(name, add_special_tokens=False)["input_ids"] == [i]


@pytest.mark.parametrize("text", SNIPPETS)
def test_lossless_round_trip(small_tok, text):
    tok = AutoTokenizer.from_pretrained(str(small_tok))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.backend_tokenizer.decode(tok.backend_tokenizer.encode(text).ids) == text


def test_pieces_concatenate_back(small_tok):
    """Prefix, middle and suffix are tokenized separately at inference: decoding each piece must be exact."""
    tok = load_tokenizer(small_tok)
    text = "def f(x):\n    return x + 1  # é 🚀\n"
    for cut in range(len(text) + 1):
        a, b = text[:cut], text[cut:]
        assert (
            tok.decode(tok.encode(a, add_special_tokens=False)) + tok.decode(tok.encode(b, add_special_tokens=False))
            == text
        )


def test_vocab_too_small_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        train_tokenizer(["x"], tmp_path, vocab_size=100)


def test_missing_folder_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


@pytest.mark.skipif(not (SHIPPED / "tokenizer.json").is_file(), reason="no shipped checkpoint yet")
@pytest.mark.parametrize("text", SNIPPETS)
def test_shipped_tokenizer_round_trip(text):
    tok = AutoTokenizer.from_pretrained(str(SHIPPED))
    check_special_tokens(tok)
    assert len(tok) == 8192
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
