"""Tests for llm_from_scratch.data: the corpus, its split, its tokens and the batches drawn.

Tiny Shakespeare is found via the environment, downloaded and verified, or a clear error.
"""

from __future__ import annotations

import hashlib
import io
import urllib.error

import pytest
import torch

from llm_from_scratch import data
from llm_from_scratch.data import (
    DATA_DIR_ENV,
    TINY_SHAKESPEARE_SHA256,
    DataUnavailableError,
    TokenWindows,
    get_batch,
    shakespeare_tokens,
    tiny_shakespeare,
    train_val_split,
)
from llm_from_scratch.tokenizer import GPT2_END_OF_TEXT, BPETokenizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_reads_the_verified_corpus_from_the_data_dir():
    # .ci/run and the README point LLMFS_DATA_DIR at a local copy.
    text = tiny_shakespeare()
    assert len(text) == 1_115_394
    assert hashlib.sha256(text.encode()).hexdigest() == TINY_SHAKESPEARE_SHA256
    assert text.startswith("First Citizen:")


def test_standard_split_is_first_90_percent_and_last_10_percent():
    text = tiny_shakespeare()
    train, val = train_val_split(text)
    assert train + val == text
    assert len(train) == int(0.9 * len(text)) == 1_003_854
    assert train_val_split(list(range(10))) == (list(range(9)), [9])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5])
def test_split_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        train_val_split("abc", fraction)


def test_missing_file_in_data_dir_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DataUnavailableError, match=str(tmp_path / "tinyshakespeare.txt")):
        tiny_shakespeare()


def test_corrupt_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare.txt").write_text("To be or not to be")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        tiny_shakespeare()


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "cache" / "tinyshakespeare.txt"


def test_offline_without_a_copy_gives_a_clear_message(empty_cache, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(DataUnavailableError) as excinfo:
        tiny_shakespeare()
    message = str(excinfo.value)
    assert str(empty_cache) in message and DATA_DIR_ENV in message
    assert data.TINY_SHAKESPEARE_URL in message
    assert not empty_cache.exists()


@pytest.fixture(scope="module")
def corpus_bytes() -> bytes:
    return tiny_shakespeare().encode("utf-8")


def test_download_is_verified_then_cached(corpus_bytes, empty_cache, monkeypatch):
    real = corpus_bytes
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        return io.BytesIO(real)

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    assert tiny_shakespeare().startswith("First Citizen:")
    assert empty_cache.read_bytes() == real
    tiny_shakespeare()  # second call reads the cache, no download
    assert calls == [data.TINY_SHAKESPEARE_URL]


def test_download_with_wrong_content_is_not_saved(empty_cache, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"404"))
    with pytest.raises(ValueError, match="sha256"):
        tiny_shakespeare()
    assert not empty_cache.exists()
    assert not list(empty_cache.parent.glob("*.part"))


# ---- get_batch --------------------------------------------------------------------------


def test_get_batch_targets_are_inputs_shifted_by_one():
    tokens = torch.arange(100) * 7 % 101  # distinct values, not simply position + 1
    x, y = get_batch(tokens, block_size=6, batch_size=16,
                     generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 6)
    assert x.dtype == tokens.dtype
    for row_x, row_y in zip(x, y, strict=True):
        start = int((tokens == row_x[0]).nonzero())
        assert torch.equal(row_x, tokens[start : start + 6])
        assert torch.equal(row_y, tokens[start + 1 : start + 7])


def test_get_batch_reaches_every_window_and_no_further():
    tokens = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(50):
        x, _ = get_batch(tokens, block_size=3, batch_size=8, generator=g)
        starts |= set(x[:, 0].tolist())
    assert starts == set(range(7))  # the last window's target is the last token


def test_get_batch_is_reproducible_with_a_generator():
    tokens = torch.arange(50)
    a = get_batch(tokens, 4, 5, torch.Generator().manual_seed(3))
    b = get_batch(tokens, 4, 5, torch.Generator().manual_seed(3))
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))


def test_get_batch_errors():
    with pytest.raises(ValueError, match="data has 8 tokens; need more than block_size=8"):
        get_batch(torch.arange(8), block_size=8, batch_size=2)
    get_batch(torch.arange(9), block_size=8, batch_size=2)  # one window fits
    with pytest.raises(ValueError, match=r"1-D tensor of token ids, got shape \(2, 10\)"):
        get_batch(torch.zeros(2, 10, dtype=torch.long), block_size=3, batch_size=2)


# ---- TokenWindows -----------------------------------------------------------------------


def test_token_windows_sample_like_get_batch():
    windows = TokenWindows(torch.arange(50), block_size=4)
    a = windows.sample(5, torch.Generator().manual_seed(3))
    b = get_batch(torch.arange(50), 4, 5, torch.Generator().manual_seed(3))
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))


def test_token_windows_batches_predict_every_token_once():
    tokens = torch.arange(23) * 5 % 23
    batches = list(TokenWindows(tokens, block_size=4).batches(batch_size=2))
    assert [len(x) for x, _ in batches] == [2, 2, 1]  # (23 - 1) // 4 = 5 windows
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert torch.equal(x.flatten(), tokens[:20]) and torch.equal(y.flatten(), tokens[1:21])
    with pytest.raises(ValueError, match="data has 4 tokens; need more than block_size=4"):
        list(TokenWindows(torch.arange(4), 4).batches(2))


def test_token_windows_check_the_vocabulary_once():
    windows = TokenWindows(torch.tensor([0, 3, 9, 2]), block_size=2)
    windows.check_vocab(10)
    windows.check_vocab(None)  # a model without a vocabulary size: nothing to check
    with pytest.raises(ValueError, match="val_data holds token ids from 0 to 9, but the model's "
                                         "vocabulary has 9 tokens"):
        windows.check_vocab(9, "val_data")
    with pytest.raises(ValueError, match="data holds token ids from -1"):
        TokenWindows(torch.tensor([-1, 2]), 1).check_vocab(5)


# ---- shakespeare_tokens -----------------------------------------------------------------


def test_shakespeare_tokens_bpe_is_trained_on_the_train_split_only():
    tokens = shakespeare_tokens("bpe", 300)
    train_text, val_text = train_val_split(tiny_shakespeare())
    assert tokens.tokenizer.vocab_size == 300
    assert GPT2_END_OF_TEXT in tokens.tokenizer.special_tokens
    assert tokens.tokenizer.decode(tokens.val_ids.tolist()) == val_text
    assert (tokens.train_chars, tokens.val_chars) == (len(train_text), len(val_text))
    # losses per token convert to per character by the tokens-per-character ratio
    assert tokens.per_char(2.0) == pytest.approx(2.0 * len(tokens.val_ids) / len(val_text))
    retrained = BPETokenizer().train(train_text, vocab_size=300,
                                     special_tokens=[GPT2_END_OF_TEXT])
    assert retrained.merges == tokens.tokenizer.merges


def test_shakespeare_tokens_char_and_errors():
    char = shakespeare_tokens("char")
    assert char.tokenizer.vocab_size == 65 and char.per_char(1.5) == 1.5
    assert char.train_ids.dtype == torch.long and len(char.train_ids) == char.train_chars
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        shakespeare_tokens("words")
