"""llm_from_scratch.gpt2: Hugging Face GPT-2 checkpoints load into our GPT with equal logits.

The checkpoints are small, randomly initialised GPT-2s built by ``transformers`` and written
with ``save_pretrained``: the real file layout, no network.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests must never reach the hub
transformers = pytest.importorskip("transformers")

from llm_from_scratch.generation import generate  # noqa: E402
from llm_from_scratch.gpt2 import gpt2_config, load_hf_gpt2  # noqa: E402
from llm_from_scratch.model import GPT  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def save_random_gpt2(directory, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=97, n_positions=24, n_embd=48, n_layer=3, n_head=4, **overrides
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    # GPT-2's init sets biases and LayerNorms to 0 and 1: randomise them so that a bias or a
    # norm loaded into the wrong place cannot go unnoticed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(mean=1.0 if "ln" in name else 0.0, std=0.1)
    model.save_pretrained(directory)
    return model


def logits_diff(hf_model, ours: GPT, T: int = 24) -> float:
    ids = torch.randint(
        0, hf_model.config.vocab_size, (3, T), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = hf_model(ids).logits
        logits, _ = ours(ids)
    return float((expected - logits).abs().max())


@pytest.mark.parametrize(
    "overrides",
    [{}, {"activation_function": "gelu"}, {"tie_word_embeddings": False}],
    ids=["gpt2", "exact-gelu", "untied"],
)
def test_logits_equal_transformers(tmp_path, overrides):
    hf = save_random_gpt2(tmp_path, **overrides)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    ours = load_hf_gpt2(tmp_path)
    assert isinstance(ours, GPT) and not ours.training
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters())
    assert logits_diff(hf, ours) < 1e-4
    assert logits_diff(hf, ours, T=5) < 1e-4  # shorter than the context, too


def test_a_wrong_transpose_would_be_caught(tmp_path):
    """The check is sensitive: permuting one projection's rows changes the logits."""
    hf = save_random_gpt2(tmp_path)
    ours = load_hf_gpt2(tmp_path)
    with torch.no_grad():
        w = ours.h[0].attn.c_attn.weight
        w.copy_(w.flip(0))
    assert logits_diff(hf, ours) > 1e-2


def test_greedy_generation_matches_transformers(tmp_path):
    hf = save_random_gpt2(tmp_path)
    ours = load_hf_gpt2(tmp_path)
    prompt = torch.tensor([[5, 17, 42]])
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=0)
    got = generate(ours, prompt, max_new_tokens=10, temperature=0)  # greedy
    assert torch.equal(got, expected)


def test_config_mapping():
    config = gpt2_config(
        {
            "model_type": "gpt2",
            "vocab_size": 50257,
            "n_positions": 1024,
            "n_embd": 768,
            "n_layer": 12,
            "n_head": 12,
            "activation_function": "gelu_new",
        }
    )
    assert (config.vocab_size, config.block_size, config.n_embd) == (50257, 1024, 768)
    assert config.gelu == "tanh" and config.tie_weights and config.dropout == 0.0
    assert GPT(config).num_parameters() == 124_439_808  # GPT-2 small, as published


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activation_function": "relu"}, "activation_function 'relu' is not supported"),
        ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon=1e-06 is not supported"),
        ({"n_inner": 100}, "n_inner=100 is not supported"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"model_type": "llama"}, "not a GPT-2 checkpoint"),
    ],
)
def test_unsupported_configs_are_refused(change, message):
    base = {"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2}
    with pytest.raises(ValueError, match=message):
        gpt2_config({**base, **change})


def test_missing_files_and_mismatched_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_gpt2(tmp_path)
    save_random_gpt2(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 2}))
    with pytest.raises(ValueError, match=r"unexpected \['h\.2\."):
        load_hf_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    with pytest.raises(ValueError, match="checkpoint shape"):
        load_hf_gpt2(tmp_path)


@pytest.mark.parametrize(
    ("content", "message", "cause"),
    [
        (b'{"n_layer": 2,', r"config\.json: not a valid JSON file", json.JSONDecodeError),
        (b'{"n_layer": "\xff"}', r"config\.json: not a valid JSON file", UnicodeDecodeError),
        (b"[1, 2]", r"config\.json: expected a JSON object, found list", None),
        (b'{"vocab_size": 97}', r"config\.json: the key 'n_embd' is missing", KeyError),
        (
            b'{"vocab_size": 97, "n_embd": 48, "n_layer": 3, "n_head": 4, "n_inner": 7}',
            r"config\.json: n_inner=7 is not supported",
            ValueError,
        ),
    ],
)
def test_a_broken_config_names_the_file(tmp_path, content, message, cause):
    save_random_gpt2(tmp_path)
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_hf_gpt2(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert cause is None or isinstance(info.value.__cause__, cause)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_weights_file_names_the_file(tmp_path, damage):
    save_random_gpt2(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        b"not a safetensors file" if damage == "garbage" else data[: len(data) // 2]
    )
    with pytest.raises(ValueError, match=r"model\.safetensors: not a valid safetensors file"):
        load_hf_gpt2(tmp_path)
