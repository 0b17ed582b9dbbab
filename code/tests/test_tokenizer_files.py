"""Tests for llm_from_scratch.tokenizer_files: a broken tokenizer file gives an error that names
the file and says what is wrong, with the underlying error chained (``raise ... from err``).

The tests that GPT-2's files are found and checked are in test_tokenizer.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llm_from_scratch.tokenizer import BPETokenizer, CharTokenizer, gpt2_files
from llm_from_scratch.tokenizer_files import read_gpt2_files, read_json, read_tokenizer_json

NOT_UTF8 = b'{"type": "bpe", "pattern": "\xff\xfe"}'


@pytest.fixture
def gpt2_copy(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of GPT-2's files in a temporary directory, free to break."""
    encoder_json, vocab_bpe = gpt2_files()
    return (
        Path(shutil.copy(encoder_json, tmp_path / "encoder.json")),
        Path(shutil.copy(vocab_bpe, tmp_path / "vocab.bpe")),
    )


def test_read_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"type": "bpe",', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON") as info:
        read_json(path)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    path.write_bytes(NOT_UTF8)
    with pytest.raises(ValueError, match=r"broken\.json: not UTF-8 text") as info:
        read_json(path)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


def test_read_tokenizer_json_checks_the_type(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list\.json: expected a 'bpe' tokenizer file"):
        read_tokenizer_json(path, expected_type="bpe")


@pytest.mark.parametrize("loader", [BPETokenizer.load, CharTokenizer.load])
def test_tokenizer_loaders_name_the_file(tmp_path: Path, loader) -> None:
    path = tmp_path / "tok.json"
    path.write_bytes(NOT_UTF8)
    with pytest.raises(ValueError, match=r"tok\.json: not UTF-8") as info:
        loader(path)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    path.write_text("not json {", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tok\.json: not valid JSON") as info:
        loader(path)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_a_broken_bpe_file_keeps_its_cause(tmp_path: Path) -> None:
    BPETokenizer().train("ab ab", 258).save(tmp_path / "bpe.json")
    data = json.loads((tmp_path / "bpe.json").read_text(encoding="utf-8"))
    del data["merges"]
    (tmp_path / "bpe.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bpe\.json: not a valid BPE tokenizer file") as info:
        BPETokenizer.load(tmp_path / "bpe.json")
    assert isinstance(info.value.__cause__, KeyError)


def test_read_gpt2_files(gpt2_copy: tuple[Path, Path]) -> None:
    encoder, merges = read_gpt2_files(*gpt2_copy)
    assert len(encoder) == 50257 and len(merges) == 50000
    assert merges[:2] == [("Ġ", "t"), ("Ġ", "a")]


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("encoder.json", b'{"!": 0,', r"encoder\.json: not valid JSON"),
        ("encoder.json", b'{"\xff": 0}', r"encoder\.json: not UTF-8"),
        ("encoder.json", b"[1, 2, 3]", r"encoder\.json: expected a JSON object of token -> "),
        ("encoder.json", b'{"!": "0"}', r"encoder\.json: expected a JSON object of token -> "),
        ("vocab.bpe", b"#version: 0.2\n\xc4\xa0 t\n\xff\n", r"vocab\.bpe: not UTF-8"),
        ("vocab.bpe", b"#version: 0.2\n\xc4\xa0 t\nbad line here\n", r"bpe, line 3: expected two"),
    ],
)
def test_from_gpt2_names_the_broken_file(
    gpt2_copy: tuple[Path, Path], which: str, content: bytes, message: str
) -> None:
    encoder_json, vocab_bpe = gpt2_copy
    (encoder_json if which == "encoder.json" else vocab_bpe).write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        BPETokenizer.from_gpt2(encoder_json, vocab_bpe)
    assert str(encoder_json.parent) in str(info.value)


def test_from_gpt2_names_both_files_when_they_disagree(gpt2_copy: tuple[Path, Path]) -> None:
    encoder_json, vocab_bpe = gpt2_copy
    encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    del encoder["!"]  # the token of byte 33
    encoder_json.write_text(json.dumps(encoder), encoding="utf-8")
    with pytest.raises(ValueError, match=r"KeyError\('!'\)") as info:
        BPETokenizer.from_gpt2(encoder_json, vocab_bpe)
    assert str(encoder_json) in str(info.value) and str(vocab_bpe) in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)
