"""Counting a GPT's parameters and FLOPs, and measuring what this machine can do (Lessons 7–8).

>>> from llm_from_scratch.model import GPT, GPTConfig
>>> config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
>>> parameter_count(config) == GPT(config).num_parameters()
True
"""

from __future__ import annotations

import time

import torch

from llm_from_scratch.model import GPTConfig


def parameter_count(config: GPTConfig) -> int:
    """The parameters of ``GPT(config)``, from the formula rather than the module.

    With GPT-2's design (biases, LayerNorm, learned positions, tied head, no GQA) this is
    ``V·C + T·C + n_layer·(12·C² + 13·C) + 2·C``: per block, 4·C² for attention's query,
    key, value and output projections and 8·C² for the feed-forward network's two layers.
    """
    C, V, L = config.n_embd, config.vocab_size, config.n_layer
    kv_dim = C * (config.n_kv_head or config.n_head) // config.n_head
    b = 1 if config.bias else 0
    norm = {"layernorm": (1 + b) * C, "rmsnorm": C, None: 0}[config.norm]
    attention = C * (C + 2 * kv_dim) + b * (C + 2 * kv_dim) + C * C + b * C
    ffwd = (C * 4 * C + b * 4 * C + 4 * C * C + b * C) if config.ffwd else 0
    block = attention + ffwd + (2 * norm if config.ffwd else norm)
    embeddings = V * C + (config.block_size * C if config.pos_encoding == "learned" else 0)
    head = 0 if config.tie_weights else V * C
    final_norm = norm if config.prenorm else 0
    return embeddings + L * block + final_norm + head


def matmul_weights(config: GPTConfig) -> int:
    """The weights that multiply activations: every linear layer's matrix, the output layer's
    included. Embedding lookups, biases and norm gains do no matrix multiplies."""
    C = config.n_embd
    kv_dim = C * (config.n_kv_head or config.n_head) // config.n_head
    per_block = C * (C + 2 * kv_dim) + C * C + (8 * C * C if config.ffwd else 0)
    return config.n_layer * per_block + config.vocab_size * C


def flops_per_token(config: GPTConfig, seq_len: int | None = None, training: bool = True) -> int:
    """Matrix-multiply FLOPs to process one token in a sequence of ``seq_len`` (default: block).

    The forward pass multiplies each token's vector by every weight matrix once, 2 FLOPs (a
    multiply and an add) per weight: ``2·N`` with ``N`` = :func:`matmul_weights`, which is
    nearly all of a GPT's parameters. Attention adds ``4·n_layer·T·C``: scores ``q·kᵀ`` and the
    weighted sum of values, each ``2·T·C`` per token. Backward costs twice the forward, so
    training is ``6·N + 12·n_layer·T·C`` (Kaplan et al., 2020; the PaLM paper's MFU formula).
    Norms, softmax and GELU are left out: a few FLOPs per activation, not per weight.
    """
    T = config.block_size if seq_len is None else seq_len
    forward = 2 * matmul_weights(config) + 4 * config.n_layer * T * config.n_embd
    return 3 * forward if training else forward


def matmul_rate(
    m: int, k: int, n: int, seconds: float = 1.0, device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """Measured FLOP/s of an ``(m, k) @ (k, n)`` matrix multiply, over about ``seconds``."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, generator=g, device=device, dtype=dtype)
    b = torch.randn(k, n, generator=g, device=device, dtype=dtype)
    for _ in range(3):  # warm up caches and thread pools
        a @ b
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        if device != "cpu":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * m * k * n * count / elapsed


def matmul_peak_flops(
    size: int = 1024, seconds: float = 1.0, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Measured FLOP/s of a square ``size × size`` matrix multiply: a practical peak.

    The data sheet peak of a CPU is rarely reachable; a large matmul is the fastest thing it
    really does, so model FLOP utilisation (MFU) is reported against this number.
    """
    return matmul_rate(size, size, size, seconds, device, dtype)


def mfu(tokens_per_second: float, config: GPTConfig, peak_flops: float) -> float:
    """Model FLOP utilisation: the fraction of ``peak_flops`` a training run turned into model
    arithmetic (Chowdhery et al., 2022)."""
    return tokens_per_second * flops_per_token(config) / peak_flops
