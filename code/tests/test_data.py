"""Tiny Shakespeare: found via the environment, downloaded and verified, or a clear error."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import pytest

from llm_from_scratch import data
from llm_from_scratch.data import (
    DATA_DIR_ENV,
    TINY_SHAKESPEARE_SHA256,
    DataUnavailableError,
    tiny_shakespeare,
    train_val_split,
)


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
