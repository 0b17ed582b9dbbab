"""Load GPT-2 checkpoints in the Hugging Face layout into the book's :class:`GPT` (Lesson 7).

A checkpoint directory, as ``transformers``' ``save_pretrained`` writes it or as the hub serves
it, holds ``config.json`` (the shape) and ``model.safetensors`` (the weights). The book's
``GPT`` uses GPT-2's parameter names on purpose, so loading is a renaming exercise with one
twist: GPT-2 was written in TensorFlow with a ``Conv1D`` layer that stores each projection as
``(in, out)``, the transpose of ``nn.Linear``'s ``(out, in)``.

With internet access, the real 124M-parameter GPT-2 loads like this (not run in the book's
build, which is offline)::

    from huggingface_hub import snapshot_download
    directory = snapshot_download("openai-community/gpt2",
                                  allow_patterns=["config.json", "model.safetensors"])
    model = load_hf_gpt2(directory)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from llm_from_scratch.model import GPT, GPTConfig

#: Weights that ``Conv1D`` stores as ``(in, out)``; ``nn.Linear`` wants ``(out, in)``.
CONV1D_SUFFIXES = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)
#: Hugging Face's names for GPT-2's activation functions, and ours.
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}


def gpt2_config(hf_config: dict) -> GPTConfig:
    """The :class:`GPTConfig` of a Hugging Face GPT-2 ``config.json`` (as a dict).

    Refuses, with the reason, any option the book's GPT does not implement, instead of loading
    a model that would compute something else.

    >>> gpt2_config({"vocab_size": 50257, "n_positions": 1024, "n_layer": 12, "n_head": 12,
    ...              "n_embd": 768}).n_layer
    12
    """
    if hf_config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"not a GPT-2 checkpoint: model_type is {hf_config['model_type']!r}")
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation_function {activation!r} is not supported; GPT has {sorted(ACTIVATIONS)}"
        )
    n_embd = hf_config["n_embd"]
    unsupported = {
        "n_inner": (hf_config.get("n_inner"), (None, 4 * n_embd)),
        "layer_norm_epsilon": (hf_config.get("layer_norm_epsilon", 1e-5), (1e-5,)),
        "scale_attn_weights": (hf_config.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (
            hf_config.get("scale_attn_by_inverse_layer_idx", False),
            (False,),
        ),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not supported by the book's GPT ({allowed})")
    return GPTConfig(
        vocab_size=hf_config["vocab_size"],
        block_size=hf_config.get("n_positions", hf_config.get("n_ctx", 1024)),
        n_layer=hf_config["n_layer"],
        n_head=hf_config["n_head"],
        n_embd=n_embd,
        dropout=0.0,  # inference: Hugging Face's dropout settings are for training
        bias=True,
        tie_weights=hf_config.get("tie_word_embeddings", True),
        gelu=ACTIVATIONS[activation],
    )


def convert_hf_state_dict(hf_state: dict[str, torch.Tensor], config: GPTConfig) -> dict:
    """Rename and transpose Hugging Face GPT-2 weights into :class:`GPT`'s ``state_dict``."""
    state = {}
    for name, tensor in hf_state.items():
        # GPT2LMHeadModel saves "transformer.h.0..."; the hub's GPT2Model files "h.0...".
        name = name.removeprefix("transformer.")
        if name.endswith(("attn.bias", "attn.masked_bias")) and tensor.dim() != 1:
            continue  # old checkpoints store the causal mask as a buffer; ours is built in
        if name.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        state[name] = tensor.contiguous()
    if config.tie_weights and "wte.weight" in state:
        # One matrix under two names: save_pretrained writes it once, as wte.weight.
        state["lm_head.weight"] = state["wte.weight"]
    return state


def load_hf_gpt2(directory: str | os.PathLike) -> GPT:
    """Our :class:`GPT` holding the weights of the GPT-2 checkpoint in ``directory``.

    ``directory`` has ``config.json`` and ``model.safetensors`` (Hugging Face's layout). The
    result's logits equal ``transformers.GPT2LMHeadModel``'s on the same ids (to float error).
    """
    directory = Path(directory)
    config_file, weights_file = directory / "config.json", directory / "model.safetensors"
    for file in (config_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} not found: a GPT-2 checkpoint directory holds config.json and "
                "model.safetensors (transformers' save_pretrained writes both)"
            )
    config = _read_config(config_file)
    state = convert_hf_state_dict(_read_weights(weights_file), config)
    model = GPT(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights_file} does not match a GPT-2 of this config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{name}: checkpoint shape {tuple(tensor.shape)}, model expects "
                f"{tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)
    return model.eval()


def _read_config(path: Path) -> GPTConfig:
    """The :class:`GPTConfig` of a ``config.json``, with errors that name the file."""
    try:
        hf_config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a valid JSON file ({err})") from err
    if not isinstance(hf_config, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(hf_config).__name__}")
    try:
        return gpt2_config(hf_config)
    except KeyError as err:
        raise ValueError(f"{path}: the key {err} is missing") from err
    except ValueError as err:  # an option the book's GPT does not implement
        raise ValueError(f"{path}: {err}") from err


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, with errors that name the file."""
    try:
        return load_file(path)
    except SafetensorError as err:  # truncated, corrupt, or not a safetensors file at all
        raise ValueError(f"{path}: not a valid safetensors file ({err})") from err
