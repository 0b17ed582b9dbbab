"""llm_from_scratch.generation and the KV cache: sampling, beam search, streaming.

The logit filters, the repetition penalty, greedy decoding and beam search are compared with
``transformers`` (its logits processors, and ``GPT2LMHeadModel.generate`` on small GPT-2
checkpoints written offline); beam search also with brute-force enumeration; the cache with
the model run without it, step by step.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

from llm_from_scratch.attention import KVCache, MultiHeadAttention
from llm_from_scratch.generation import (
    apply_repetition_penalty,
    beam_search,
    filter_logits,
    generate,
    stream,
)
from llm_from_scratch.model import GPT, POS_ENCODINGS, BigramLanguageModel, LanguageModel
from llm_from_scratch.tokenizer import BPETokenizer
from llm_from_scratch.tokenizer_base import CharTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests must never reach the hub
transformers = pytest.importorskip("transformers")
from training_helpers import SMALL, ids, small_gpt  # noqa: E402
from transformers.generation import logits_process as hf  # noqa: E402

from llm_from_scratch.gpt2 import load_hf_gpt2  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- logit filters and the repetition penalty --------------------------------------------


def hf_filters(logits, temperature=1.0, top_k=None, top_p=None, min_p=None):
    """transformers' warpers, chained in the order its generate() applies them."""
    warpers = [hf.TemperatureLogitsWarper(float(temperature))]
    if top_k is not None:
        warpers.append(hf.TopKLogitsWarper(top_k))
    if top_p is not None:
        warpers.append(hf.TopPLogitsWarper(top_p))
    if min_p is not None:
        warpers.append(hf.MinPLogitsWarper(min_p))
    for warper in warpers:
        logits = warper(None, logits)
    return logits


FILTERS = [
    dict(temperature=0.7),
    dict(top_k=1), dict(top_k=5), dict(top_k=64),
    dict(top_p=0.05), dict(top_p=0.5), dict(top_p=0.9), dict(top_p=1.0),
    dict(min_p=0.0), dict(min_p=0.05), dict(min_p=0.3), dict(min_p=1.0),
    dict(temperature=1.5, top_k=10, top_p=0.8, min_p=0.1),
    dict(temperature=0.5, top_p=0.7, min_p=0.02),
]  # fmt: skip


@pytest.mark.parametrize("settings", FILTERS, ids=str)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_filter_logits_equals_transformers_warpers(settings, ties):
    logits = torch.randn(6, 50, generator=seeded(1)) * 3
    if ties:  # integer logits: many tokens share the k-th value, top-p's boundary, the maximum
        logits = logits.round()
    expected = hf_filters(logits.clone(), **settings)
    got = filter_logits(logits, **settings)
    assert torch.equal(got.isinf(), expected.isinf())  # the same tokens kept
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert (got.isfinite().sum(-1) >= 1).all()


def test_filters_by_hand():
    logits = torch.tensor([3.0, 2.0, 2.0, 1.0, 0.0])
    assert filter_logits(logits, top_k=2).isfinite().tolist() == [1, 1, 1, 0, 0]  # ties survive
    probs = logits.softmax(-1)  # 0.49, 0.18, 0.18, 0.07, 0.02
    kept = filter_logits(logits, top_p=0.75).isfinite()
    assert kept.tolist() == [1, 1, 1, 0, 0] and probs[:2].sum() < 0.75 <= probs[:3].sum()
    assert filter_logits(logits, top_p=1e-6).isfinite().tolist() == [1, 0, 0, 0, 0]
    # two of four equally likely tokens hold exactly 0.5: they reach top_p=0.5, no third needed
    assert filter_logits(torch.zeros(4), top_p=0.5).isfinite().sum() == 2
    # min-p compares with the largest probability after the temperature
    assert filter_logits(logits, min_p=0.3).isfinite().tolist() == [1, 1, 1, 0, 0]
    assert filter_logits(logits, temperature=0.5, min_p=0.3).isfinite().tolist() == [1, 0, 0, 0, 0]


@pytest.mark.parametrize("penalty", [1.3, 0.7, 1.0])
def test_repetition_penalty_equals_transformers(penalty):
    logits = torch.randn(3, 20, generator=seeded(2)) * 4
    seen = torch.tensor([[1, 1, 5, 7], [0, 19, 19, 19], [3, 4, 5, 6]])
    expected = hf.RepetitionPenaltyLogitsProcessor(penalty)(seen, logits.clone())
    got = apply_repetition_penalty(logits, seen, penalty)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert penalty == 1.0 or not torch.equal(got, logits)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": 0.0}, "temperature must be a finite number > 0, got 0.0"),
     ({"temperature": math.nan}, "temperature"),
     ({"top_k": 0}, "top_k must be None or an integer >= 1, got 0"),
     ({"top_p": 0.0}, "top_p must be None or a number in (0, 1], got 0.0"),
     ({"min_p": 1.5}, "min_p must be None or a number in [0, 1], got 1.5")],
)  # fmt: skip
def test_filter_logits_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        filter_logits(torch.zeros(4), **kwargs)


# ---- the KV cache ----------------------------------------------------------------------


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_cached_forward_equals_the_full_forward(pos_encoding, n_kv_head):
    model = small_gpt(pos_encoding=pos_encoding, n_kv_head=n_kv_head)
    x = ids(2, 8)
    full = model(x)[0]
    cache = model.new_kv_cache()
    # a prompt of 3, two tokens at once (a query block after cached keys), then one at a time
    pieces = [model(x[:, a:b], kv_cache=cache)[0] for a, b in [(0, 3), (3, 5), (5, 6), (6, 8)]]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)
    assert all(len(layer) == 8 for layer in cache)
    assert cache[0].keys.shape == (2, n_kv_head or 2, 8, 8)  # GQA caches the shared heads once


def test_the_cache_needs_an_aligned_mask():
    """A one-token step with PyTorch's is_causal=True would see only the first key."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(n_embd=8, n_head=2, block_size=6).eval()
    x = torch.randn(1, 6, 8)
    cache = KVCache()
    mha(x[:, :5], kv_cache=cache)
    step = mha(x[:, 5:], kv_cache=cache)
    torch.testing.assert_close(step, mha(x)[:, 5:], atol=1e-6, rtol=0)
    k, v = cache.keys, cache.values
    q = mha.c_attn(x[:, 5:])[..., :8].view(1, 1, 2, 4).transpose(1, 2)
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # sees key 0 only
    wrong = mha.c_proj(top_left.transpose(1, 2).reshape(1, 1, 8))
    assert not torch.allclose(wrong, step, atol=1e-3)
    # the written-out attention, which also returns the weights, agrees
    cache = KVCache()
    mha(x[:, :4], kv_cache=cache)
    y, weights = mha(x[:, 4:], kv_cache=cache, return_weights=True)
    full_y, full_weights = mha(x, return_weights=True)
    torch.testing.assert_close(y, full_y[:, 4:], atol=1e-6, rtol=0)
    torch.testing.assert_close(weights, full_weights[:, :, 4:], atol=1e-6, rtol=0)


def test_kv_cache_refuses_what_it_cannot_do():
    model = small_gpt()
    cache = model.new_kv_cache()
    model(ids(1, 6), kv_cache=cache)
    with pytest.raises(ValueError, match="6 cached \\+ 3 new tokens exceed block_size=8"):
        model(ids(1, 3), kv_cache=cache)
    with pytest.raises(ValueError, match="kv_cache has 1 layers, the model 2"):
        model(ids(1, 1), kv_cache=[KVCache()])
    mha = MultiHeadAttention(n_embd=8, n_head=2, block_size=4, causal=False)
    with pytest.raises(ValueError, match="a KV cache needs causal attention"):
        mha(torch.randn(1, 2, 8), kv_cache=KVCache())
    with pytest.raises(ValueError, match="padding_mask cannot be combined with a kv_cache"):
        MultiHeadAttention(n_embd=8, n_head=2, block_size=4)(
            torch.randn(1, 2, 8), padding_mask=torch.ones(1, 2, dtype=torch.bool),
            kv_cache=KVCache(),
        )


def test_kv_cache_select_reorders_rows():
    cache = KVCache()
    k = torch.arange(3.0).view(3, 1, 1, 1)
    cache.append(k, -k)
    cache.select(torch.tensor([2, 2, 0]))
    assert cache.keys.flatten().tolist() == [2, 2, 0]
    assert cache.values.flatten().tolist() == [-2, -2, 0]


# ---- generate --------------------------------------------------------------------------


def last_logits_per_call(model):
    """Record the last position's logits of every forward call."""
    seen = []
    model.register_forward_hook(lambda _module, _args, out: seen.append(out[0][:, -1]))
    return seen


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope"])
def test_cached_and_uncached_generation_agree_past_block_size(pos_encoding):
    prompt, steps = ids(2, 3), 14  # 17 tokens: the window of 8 fills, then slides
    runs = {}
    for use_cache in (True, False):
        model = small_gpt(pos_encoding=pos_encoding, n_kv_head=1)
        logits = last_logits_per_call(model)
        out = generate(model, prompt, steps, top_p=0.9, use_cache=use_cache, generator=seeded(3))
        runs[use_cache] = out, logits
    assert torch.equal(runs[True][0], runs[False][0])
    assert len(runs[True][1]) == len(runs[False][1]) == steps
    for cached, uncached in zip(runs[True][1], runs[False][1], strict=True):
        torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=0)


def test_the_context_policy_crops_then_restarts_at_half_a_window():
    model = small_gpt()
    long_prompt = ids(2, 13)  # longer than block_size=8: the model sees only the last 8
    out = generate(model, long_prompt, 10, generator=seeded())
    assert out.shape == (2, 23)
    short = generate(model, long_prompt[:, -8:], 10, generator=seeded())
    assert torch.equal(out[:, 13:], short[:, 8:])
    # Uncached, each step reads its window; cached, only the new token, except when the window
    # restarts from the last 4 tokens (at 9 tokens and at 14).
    reads = {False: [3, 4, 5, 6, 7, 8, 4, 5, 6, 7, 8, 4],
             True: [3, 1, 1, 1, 1, 1, 4, 1, 1, 1, 1, 4]}
    seen = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(args[0].size(1)))
    for use_cache, expected in reads.items():
        seen.clear()
        generate(model, ids(1, 3), 12, use_cache=use_cache)
        assert seen == expected


def test_the_context_policy_written_out():
    model, prompt = small_gpt(), ids(2, 11)
    expected = greedy_decode(model, prompt, 20)
    for use_cache in (True, False):
        assert torch.equal(generate(model, prompt, 20, temperature=0, use_cache=use_cache),
                           expected)


def old_generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    """The sampler that LanguageModel.generate had before this module, for the lessons' sake."""
    for _ in range(max_new_tokens):
        context = idx if model.block_size is None else idx[:, -model.block_size :]
        logits = model(context)[0][:, -1, :].float()
        scale = max(temperature, torch.finfo(logits.dtype).tiny)
        logits = (logits - logits.max(dim=-1, keepdim=True).values) / scale
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        idx = torch.cat((idx, next_id), dim=1)
    return idx


@pytest.mark.parametrize("kwargs", [{}, {"temperature": 0.8, "top_k": 5}, {"temperature": 1.7}])
@pytest.mark.parametrize("use_cache", [True, False])
def test_the_same_seed_draws_what_the_first_sampler_drew(kwargs, use_cache):
    """Within the context window, this module draws what the lessons' first sampler drew."""
    for model, steps in ((small_gpt(), 5), (BigramLanguageModel(11), 30)):
        with torch.no_grad():
            expected = old_generate(model, ids(2, 3), steps, generator=seeded(7), **kwargs)
        got = generate(model, ids(2, 3), steps, use_cache=use_cache, generator=seeded(7),
                       **kwargs)
        assert torch.equal(got, expected)


def test_generate_shape_prompt_and_reproducibility():
    model = small_gpt()
    prompt = ids(3, 2)
    out = generate(model, prompt, max_new_tokens=5, generator=seeded())
    assert out.shape == (3, 7) and torch.equal(out[:, :2], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < 11
    assert torch.equal(generate(model, prompt, 20, generator=seeded(1)),
                       generate(model, prompt, 20, generator=seeded(1)))
    assert not torch.equal(generate(model, prompt, 20, generator=seeded(1)),
                           generate(model, prompt, 20, generator=seeded(2)))


@torch.no_grad()
def greedy_decode(model, prompt, steps):
    """Argmax decoding with the context policy written out: crop, then restart at half."""
    out, block = prompt, model.block_size
    start = max(0, prompt.size(1) - block)
    for _ in range(steps):
        if out.size(1) - start > block:
            start = out.size(1) - block // 2
        next_id = model(out[:, start:])[0][:, -1].argmax(-1, keepdim=True)
        out = torch.cat((out, next_id), dim=1)
    return out


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0}, {"top_k": 1}, {"temperature": 1e-4}, {"temperature": 1e-45},
     {"temperature": 5e-324}, {"top_p": 1e-9}, {"min_p": 1.0}],
)  # fmt: skip
def test_greedy_settings_pick_the_argmax(kwargs):
    model = small_gpt()
    prompt = ids(3, 4)
    with torch.no_grad():
        expected = greedy_decode(model, prompt, 10)
    assert torch.equal(generate(model, prompt, 10, generator=seeded(), **kwargs), expected)


def smallest_set_reaching(probs, p):
    ordered = probs.sort(descending=True)
    return ordered.indices[: int((ordered.values.cumsum(0) < p).sum()) + 1]


@pytest.mark.parametrize(
    ("kwargs", "allowed"),
    [({"top_k": 2}, lambda probs: probs.topk(2).indices),
     ({"top_p": 0.5}, lambda probs: smallest_set_reaching(probs, 0.5)),
     ({"min_p": 0.5}, lambda probs: (probs >= 0.5 * probs.max()).nonzero().flatten())],
)  # fmt: skip
def test_filters_restrict_samples(kwargs, allowed):
    torch.manual_seed(0)
    model = BigramLanguageModel(6)
    prompt = torch.zeros(300, 1, dtype=torch.long)
    out = generate(model, prompt, 1, generator=seeded(), **kwargs)
    probs = model.token_embedding.weight[0].detach().softmax(-1)
    assert set(out[:, 1].tolist()) == set(allowed(probs).tolist())
    assert 1 < len(set(out[:, 1].tolist())) < 6


def test_eos_finishes_rows_and_stops_the_call():
    model = BigramLanguageModel(5)
    with torch.no_grad():
        table = model.token_embedding.weight
        table.fill_(-1e9)
        table[0, 1] = table[1, 2] = table[2, 3] = table[3, 4] = table[4, 4] = 0.0  # 0 1 2 3 4 4..
    prompt = torch.tensor([[0], [2]])
    out = generate(model, prompt, 10, eos_id=3)
    assert out.tolist() == [[0, 1, 2, 3], [2, 3, 3, 3]]  # row 2 finished first, then padded
    assert generate(model, prompt, 10, eos_id=4).tolist() == [[0, 1, 2, 3, 4], [2, 3, 4, 4, 4]]
    assert generate(model, prompt, 10).shape == (2, 11)  # no end token: all the steps


def test_repetition_penalty_in_greedy_generation_equals_transformers(gpt2_checkpoint):
    hf_model, ours = gpt2_checkpoint
    prompt = ids(2, 4, vocab=50, seed=5)
    with torch.no_grad():
        expected = hf_model.generate(prompt, max_new_tokens=12, do_sample=False,
                                     repetition_penalty=1.5, pad_token_id=0)
        plain = hf_model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    got = generate(ours, prompt, 12, temperature=0, repetition_penalty=1.5)
    assert torch.equal(got, expected) and not torch.equal(got, plain)


def test_greedy_generation_equals_transformers(gpt2_checkpoint):
    hf_model, ours = gpt2_checkpoint
    prompt = ids(3, 5, vocab=50, seed=6)
    with torch.no_grad():
        expected = hf_model.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 20, temperature=0), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": -1.0}, "temperature must be a finite number >= 0 (0 is greedy), got -1.0"),
     ({"temperature": math.nan}, "temperature must be a finite number >= 0 (0 is greedy), got nan"),
     ({"temperature": math.inf}, "temperature"),
     ({"top_k": 0}, "top_k must be None or an integer >= 1, got 0"),
     ({"top_k": 2.5}, "top_k must be None or an integer >= 1, got 2.5"),
     ({"top_p": 0.0}, "top_p must be None or a number in (0, 1], got 0.0"),
     ({"top_p": 1.5}, "top_p must be None or a number in (0, 1], got 1.5"),
     ({"min_p": -0.1}, "min_p must be None or a number in [0, 1], got -0.1"),
     ({"repetition_penalty": 0.0}, "repetition_penalty must be a finite number > 0"),
     ({"repetition_penalty": -2.0}, "repetition_penalty must be a finite number > 0"),
     ({"max_new_tokens": -1}, "max_new_tokens must be an integer >= 0, got -1"),
     ({"max_new_tokens": 2.0}, "max_new_tokens must be an integer >= 0, got 2.0"),
     ({"eos_id": 11}, "eos_id must be None or a token id in [0, 11), got 11")],
)  # fmt: skip
def test_generate_rejects_bad_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(small_gpt(), ids(1, 2), **{"max_new_tokens": 3, **kwargs})


def test_generate_needs_a_prompt_in_the_vocabulary():
    empty = torch.zeros(2, 0, dtype=torch.long)
    for model in (small_gpt(), BigramLanguageModel(5)):
        with pytest.raises(ValueError, match="idx must hold at least one token"):
            generate(model, empty, 3)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\)"):
        generate(small_gpt(), torch.tensor([[3, 11]]), 3)
    assert torch.equal(generate(small_gpt(), ids(1, 2), 0), ids(1, 2))  # nothing to add


@pytest.mark.parametrize("training", [True, False])
def test_an_error_while_generating_restores_the_training_mode(training, monkeypatch):
    model = small_gpt(dropout=0.1).train(training)
    forward, calls = model.forward, []

    def fails_on_the_second_call(*args, **kwargs):
        calls.append(model.training)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", fails_on_the_second_call)
    with pytest.raises(RuntimeError, match="out of memory"):
        generate(model, ids(1, 2), 5)
    assert calls == [False, False]  # sampling ran in eval mode
    assert model.training is training
    monkeypatch.undo()
    model.train(training)
    with pytest.raises(TypeError):  # a bad generator fails inside the loop too
        generate(model, ids(1, 2), 5, generator="not a generator")
    assert model.training is training


def test_generate_restores_training_mode_and_needs_no_grad():
    model = small_gpt(dropout=0.5).train()
    out = generate(model, ids(1, 2), 3)
    assert model.training and not out.requires_grad
    # dropout is off while sampling: the same generator seed gives the same tokens
    assert torch.equal(generate(model, ids(1, 2), 6, generator=seeded(5)),
                       generate(model, ids(1, 2), 6, generator=seeded(5)))


def test_bigram_generate_has_no_context_limit():
    out = generate(BigramLanguageModel(5), torch.zeros(1, 1, dtype=torch.long), 30)
    assert out.shape == (1, 31)


# ---- beam search -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory):
    """A small random GPT-2, as transformers' model and as ours, with peaked predictions.

    Large embeddings make the predictions depend on the input, and a large output layer makes
    them peaked: the beams' scores differ by far more than float rounding (a noise of 1e-3 on
    every logit changes none of the results below), so the comparison is not decided by ties.
    """
    directory = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2,
                                     n_head=2, bos_token_id=None, eos_token_id=None,
                                     tie_word_embeddings=False)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # biases and norms away from 0 and 1, to be loaded in their place
                p.normal_(mean=1.0 if "ln" in name else 0.0, std=0.02)
        model.transformer.wte.weight.mul_(50.0)
        model.transformer.wpe.weight.mul_(50.0)
        model.lm_head.weight.mul_(100.0)
    model.save_pretrained(directory)
    return model, load_hf_gpt2(directory)


EOS = 32  # a token this checkpoint generates, so that beams finish at different lengths
BEAM_CASES = [
    (num_beams, length_penalty, early_stopping, eos_id)
    for num_beams, length_penalty, early_stopping, eos_id in itertools.product(
        [1, 2, 4], [1.0, 0.0, -1.0, 2.0], [False, True, "never"], [None, EOS]
    )
    if num_beams != 1 or (length_penalty == 1.0 and early_stopping is False)
]


def test_beam_search_equals_transformers(gpt2_checkpoint):
    hf_model, ours = gpt2_checkpoint
    prompt = ids(2, 4, vocab=50)
    results = {}
    for num_beams, length_penalty, early_stopping, eos_id in BEAM_CASES:
        settings = dict(num_beams=num_beams, length_penalty=length_penalty,
                        early_stopping=early_stopping)
        with torch.no_grad():
            expected = hf_model.generate(
                prompt, max_new_tokens=12, do_sample=False, eos_token_id=eos_id,
                pad_token_id=0 if eos_id is None else eos_id, **settings,
            )
        got = beam_search(ours, prompt, 12, eos_id=eos_id, **settings)
        assert torch.equal(got, expected), (settings, eos_id)
        results[num_beams, length_penalty, early_stopping, eos_id] = got.flatten().tolist()
    # The comparison tells the settings apart: the three stopping rules, and length penalties.
    stopping = [results[4, 2.0, rule, EOS] for rule in (False, True, "never")]
    assert all(a != b for a, b in itertools.combinations(stopping, 2))
    assert results[4, 0.0, False, EOS] != results[4, 1.0, False, EOS]
    assert results[4, 1.0, False, EOS] != results[1, 1.0, False, EOS]


def score(model, prompt, tokens, length_penalty):
    with torch.no_grad():
        log_probs = F.log_softmax(model(torch.cat((prompt, tokens))[None, :-1])[0][0], -1)
    generated = log_probs[len(prompt) - 1 :].gather(-1, tokens[:, None]).sum()
    return float(generated / len(tokens) ** length_penalty)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0, -1.0])
@pytest.mark.parametrize("early_stopping", [False, "never"])
def test_a_wide_beam_finds_the_brute_force_best(length_penalty, early_stopping):
    """With a beam wider than the number of sequences, beam search is exhaustive."""
    model = small_gpt(vocab_size=3, n_embd=8, init_std=1.0)
    prompt, eos, steps = torch.tensor([1, 2]), 0, 3
    sequences = [torch.tensor(s) for n in range(1, steps + 1)
                 for s in itertools.product(range(3), repeat=n)
                 if (eos in s) == (s[-1] == eos) and (s[-1] == eos or n == steps)
                 and s.count(eos) <= 1]  # fmt: skip
    best = max(sequences, key=lambda s: score(model, prompt, s, length_penalty))
    got = beam_search(model, prompt[None], steps, num_beams=len(sequences), eos_id=eos,
                      length_penalty=length_penalty, early_stopping=early_stopping)
    assert got[0, 2 : 2 + len(best)].tolist() == best.tolist()


def test_beam_search_slides_past_block_size():
    model = small_gpt()
    long_prompt = ids(1, 11)
    out = beam_search(model, long_prompt, 6, num_beams=3)
    short = beam_search(model, long_prompt[:, -8:], 6, num_beams=3)
    assert out.shape == (1, 17) and torch.equal(out[:, 11:], short[:, 8:])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_beams": 0}, "num_beams must be an integer >= 1, got 0"),
     ({"length_penalty": math.nan}, "length_penalty must be a finite number, got nan"),
     ({"early_stopping": "always"}, "early_stopping must be True, False or 'never'"),
     ({"eos_id": -1}, "eos_id must be None or a token id in [0, 11), got -1")],
)  # fmt: skip
def test_beam_search_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        beam_search(small_gpt(), ids(1, 2), 3, **{"num_beams": 2, **kwargs})


# ---- streaming -------------------------------------------------------------------------


class Scripted(LanguageModel):
    """Always predicts the next token of a fixed script (position T - prompt length)."""

    def __init__(self, script: list[int], vocab_size: int, prompt_length: int) -> None:
        super().__init__()
        self.script, self.start = script, prompt_length
        self.vocab_size, self.block_size = vocab_size, None

    def forward(self, idx, targets=None):
        logits = torch.zeros(*idx.shape, self.vocab_size)
        logits[:, -1, self.script[idx.size(1) - self.start]] = 1e4
        return logits, None


def test_stream_yields_whole_characters_as_they_complete():
    tokenizer = BPETokenizer.gpt2()
    text = "héllo 😀 wörld"
    script = tokenizer.encode(text)  # the emoji's four bytes are split over two tokens
    model = Scripted(script, tokenizer.vocab_size, prompt_length=len(tokenizer.encode("Hi")))
    pieces = list(stream(model, tokenizer, "Hi", max_new_tokens=len(script), temperature=0))
    assert pieces == ["h", "é", "llo", " ", "😀", " w", "ör", "ld"]
    assert "".join(pieces) == text
    # stopped inside a character: its bytes come out at the end, as U+FFFD like decode() does
    pieces = list(stream(model, tokenizer, "Hi", max_new_tokens=4, temperature=0))
    assert pieces == ["h", "é", "llo", " ", "\ufffd"]
    assert "".join(pieces) == tokenizer.decode(script[:4])


def test_stream_joins_into_the_decoded_tokens():
    """Random byte-level tokens: broken UTF-8 too must decode as tokenizer.decode does."""
    tokenizer = BPETokenizer()  # the 256 single bytes
    model = GPT(dataclasses.replace(SMALL, vocab_size=256)).eval()
    prompt = "naïve café"
    pieces = list(stream(model, tokenizer, prompt, max_new_tokens=40, generator=seeded(4)))
    idx = torch.tensor([tokenizer.encode(prompt)])
    generated = generate(model, idx, 40, generator=seeded(4))[0, idx.size(1) :]
    assert "".join(pieces) == tokenizer.decode(generated.tolist())
    assert "\ufffd" in "".join(pieces) and len(pieces) < 40  # held bytes, and broken ones


def test_stream_checks_its_arguments_at_once():
    tokenizer = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="top_k must be None or an integer >= 1"):
        stream(BigramLanguageModel(3), tokenizer, "ab", max_new_tokens=3, top_k=0)
    with pytest.raises(ValueError, match="idx must hold at least one token"):
        stream(BigramLanguageModel(3), tokenizer, "", max_new_tokens=3)
