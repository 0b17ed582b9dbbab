"""Tests for llm_from_scratch.model and llm_from_scratch.blocks.

Losses are compared with ``F.cross_entropy``, the feed-forward network with a hand-written
tanh-GELU MLP, blocks with their formulas; causality is checked end to end through the GPT.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from training_helpers import SMALL, ids, small_gpt

from llm_from_scratch.attention import padding_mask
from llm_from_scratch.blocks import Block, FeedForward
from llm_from_scratch.model import GPT, POS_ENCODINGS, BigramLanguageModel, GPTConfig
from llm_from_scratch.norm import LayerNorm, RMSNorm
from llm_from_scratch.positions import sinusoidal_positions

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# ---- forward and loss -------------------------------------------------------------------


def test_forward_shapes_and_loss_equals_cross_entropy():
    model = small_gpt()
    x, y = ids(3, 8), ids(3, 8, seed=1)
    logits, loss = model(x, y)
    assert logits.shape == (3, 8, 11)
    expected = F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1))
    torch.testing.assert_close(loss, expected)
    assert loss.dim() == 0
    logits_only, no_loss = model(x)
    assert no_loss is None
    torch.testing.assert_close(logits_only, logits)
    # shorter sequences than block_size are fine
    assert model(x[:, :3])[0].shape == (3, 3, 11)


def test_loss_ignores_targets_of_minus_100():
    model = small_gpt()
    x, y = ids(2, 6), ids(2, 6, seed=1)
    y_masked = y.clone()
    y_masked[0, 3:] = -100
    logits, loss = model(x, y_masked)
    keep = y_masked != -100
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], y[keep]))


def test_initial_loss_is_near_uniform():
    # Small init: logits near zero, so the loss starts near ln(vocab_size).
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=32))
    _, loss = model(ids(4, 8, vocab=50), ids(4, 8, vocab=50, seed=1))
    assert abs(loss.item() - math.log(50)) < 0.05


def test_targets_shape_must_match():
    model = small_gpt()
    with pytest.raises(ValueError, match=r"targets of shape \(2, 5\) do not match ids \(2, 6\)"):
        model(ids(2, 6), ids(2, 5))


def test_bigram_logits_are_rows_of_the_table():
    torch.manual_seed(0)
    model = BigramLanguageModel(vocab_size=7)
    x, y = ids(2, 5, vocab=7), ids(2, 5, vocab=7, seed=1)
    logits, loss = model(x, y)
    torch.testing.assert_close(logits, model.token_embedding.weight[x])
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 7), y.reshape(-1)))
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        BigramLanguageModel(0)


# ---- input validation -------------------------------------------------------------------


def test_sequence_longer_than_block_size_is_a_clear_error():
    model = small_gpt()
    with pytest.raises(ValueError, match="sequence length 9 exceeds block_size=8"):
        model(ids(1, 9))


@pytest.mark.parametrize("bad", [11, 100, -1])
def test_ids_out_of_range(bad):
    model = small_gpt()
    x = ids(2, 4)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\)"):
        model(x)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\)"):
        BigramLanguageModel(11)(x)


def test_ids_must_be_2d_integers():
    model = small_gpt()
    with pytest.raises(ValueError, match=r"shape \(B, T\), got \(4,\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="must be integers"):
        model(torch.zeros(1, 4))


def test_config_n_embd_not_divisible_by_n_head():
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        GPTConfig(n_embd=30, n_head=4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pos_encoding", "alibi", "pos_encoding must be one of"),
        ("norm", "batchnorm", "norm must be 'layernorm', 'rmsnorm' or None"),
        ("n_kv_head", 3, "n_head=4 must be a multiple of n_kv_head=3"),
        ("n_kv_head", 0, "multiple of n_kv_head=0"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
        ("dropout", -0.1, r"dropout must be in \[0, 1\)"),
        ("vocab_size", 0, "vocab_size must be a positive integer"),
        ("block_size", 8.0, "block_size must be a positive integer"),
        ("n_layer", -1, "n_layer must be a positive integer"),
    ],
)
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{field: value})


def test_config_to_dict_round_trips():
    config = dataclasses.replace(SMALL, pos_encoding="rope", n_kv_head=1)
    assert GPTConfig(**config.to_dict()) == config


# ---- parameters and initialisation ------------------------------------------------------


def test_weight_tying_shares_storage_and_counts_once():
    tied = small_gpt(tie_weights=True)
    untied = small_gpt(tie_weights=False)
    assert tied.lm_head.weight is tied.wte.weight
    assert tied.lm_head.weight.data_ptr() == tied.wte.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.wte.weight.data_ptr()
    V, C = SMALL.vocab_size, SMALL.n_embd
    assert untied.num_parameters() - tied.num_parameters() == V * C
    # a gradient step through the head moves the embedding too
    with torch.no_grad():
        tied.lm_head.weight[3, 0] = 7.0
    assert tied.wte.weight[3, 0].item() == 7.0


def test_num_parameters_equals_a_hand_count():
    c = GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=16)
    V, T, C = c.vocab_size, c.block_size, c.n_embd
    per_block = (
        2 * C  # ln_1
        + C * 3 * C
        + 3 * C  # c_attn
        + C * C
        + C  # attn.c_proj
        + 2 * C  # ln_2
        + C * 4 * C
        + 4 * C  # mlp.c_fc
        + 4 * C * C
        + C  # mlp.c_proj
    )
    expected = V * C + T * C + per_block + 2 * C  # wte (tied with lm_head), wpe, block, ln_f
    assert GPT(c).num_parameters() == expected == 4480


def test_gpt2_initialisation_statistics():
    n_layer, init_std = 6, 0.02
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, block_size=32, n_layer=n_layer, n_head=4, n_embd=192))
    proj_std = init_std / math.sqrt(2 * n_layer)
    seen = 0
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            seen += 1
            # std of a sample of N normals has relative standard error 1/sqrt(2N) < 0.5 % here
            assert p.std().item() == pytest.approx(proj_std, rel=0.03), name
            assert abs(p.mean().item()) < 4 * proj_std / math.sqrt(p.numel()), name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert p.std().item() == pytest.approx(init_std, rel=0.03), name
        elif name.endswith(".bias") and "ln_" not in name:
            assert (p == 0).all(), name
        elif "ln_" in name:
            expected = 1.0 if name.endswith("weight") else 0.0
            assert (p == expected).all(), name
    assert seen == 2 * n_layer  # attention and MLP projections of every block


def test_init_std_is_configurable():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, n_embd=64, n_layer=1, init_std=0.1))
    assert model.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.1, rel=0.05)
    assert model.h[0].attn.c_proj.weight.std().item() == pytest.approx(0.1 / 2**0.5, rel=0.05)


# ---- positional encodings and causality -------------------------------------------------


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_every_positional_encoding_runs_and_trains(pos_encoding):
    model = small_gpt(pos_encoding=pos_encoding).train()
    x, y = ids(2, 8), ids(2, 8, seed=1)
    logits, loss = model(x, y)
    assert logits.shape == (2, 8, 11) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert (model.wpe is not None) == (pos_encoding == "learned")
    assert (model.pos_table is not None) == (pos_encoding == "sinusoidal")
    assert all((block.attn.rope is not None) == (pos_encoding == "rope") for block in model.h)


def test_sinusoidal_table_is_added_and_not_saved():
    model = small_gpt(pos_encoding="sinusoidal")
    torch.testing.assert_close(model.pos_table, sinusoidal_positions(8, 16))
    assert "pos_table" not in model.state_dict()


def test_positions_matter_only_with_a_positional_encoding():
    # The same token everywhere: without positions (and causal), a bidirectional model gives
    # the same logits at every position; with any encoding, positions differ.
    x = torch.full((1, 8), 3)
    flat = small_gpt(pos_encoding="none", causal=False)(x)[0]
    torch.testing.assert_close(flat, flat[:, :1].expand_as(flat), atol=1e-5, rtol=1e-5)
    for pe in ("learned", "sinusoidal"):
        logits = small_gpt(pos_encoding=pe, causal=False)(x)[0]
        assert not torch.allclose(logits[:, 0], logits[:, 5], atol=1e-4)
    # RoPE only sees relative positions: two identical tokens' scores do not change with
    # position, but a sequence of different tokens does get position-dependent outputs.
    x = ids(1, 8)
    swapped = x.flip(1)
    model = small_gpt(pos_encoding="rope", causal=False)
    assert not torch.allclose(model(x)[0].flip(1), model(swapped)[0], atol=1e-4)


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
@pytest.mark.parametrize("prenorm", [True, False])
def test_logits_at_t_ignore_tokens_after_t(pos_encoding, prenorm):
    model = small_gpt(pos_encoding=pos_encoding, prenorm=prenorm)
    x = ids(2, 8)
    base = model(x)[0]
    for t in (0, 3, 6):
        changed = x.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % 11
        logits = model(changed)[0]
        torch.testing.assert_close(logits[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(logits[:, t + 1 :], base[:, t + 1 :])


def test_non_causal_gpt_sees_the_future():
    model = small_gpt(causal=False)
    x = ids(1, 8)
    changed = x.clone()
    changed[0, 7] = (x[0, 7] + 1) % 11
    assert not torch.allclose(model(x)[0][0, 0], model(changed)[0][0, 0])


def test_padding_mask_reaches_every_block():
    model = small_gpt(causal=False)
    x = ids(2, 8)
    alone = model(x[1:, :5])[0]
    padded = x.clone()
    padded[1, 5:] = 0
    logits = model(padded, padding_mask=padding_mask([8, 5], T=8))[0]
    torch.testing.assert_close(logits[1, :5], alone[0], atol=1e-5, rtol=1e-5)


# ---- blocks -----------------------------------------------------------------------------


def test_feed_forward_equals_hand_written_tanh_gelu_mlp():
    torch.manual_seed(0)
    ff = FeedForward(8)
    assert ff.c_fc.weight.shape == (32, 8) and ff.c_proj.weight.shape == (8, 32)
    x = torch.randn(2, 5, 8) * 2
    h = x @ ff.c_fc.weight.T + ff.c_fc.bias
    gelu = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h**3)))
    expected = gelu @ ff.c_proj.weight.T + ff.c_proj.bias
    torch.testing.assert_close(ff(x), expected, atol=1e-6, rtol=1e-5)
    # the exact (erf) GELU differs: the tanh approximation is really used
    exact = F.gelu(h) @ ff.c_proj.weight.T + ff.c_proj.bias
    assert not torch.allclose(ff(x), exact, atol=1e-6, rtol=0)


def test_feed_forward_hidden_width_and_bias():
    ff = FeedForward(8, hidden=10, bias=False)
    assert ff.c_fc.weight.shape == (10, 8) and ff.c_fc.bias is None and ff.c_proj.bias is None


def randomized_block(**kwargs) -> Block:
    torch.manual_seed(0)
    block = Block(n_embd=16, n_head=2, block_size=6, **kwargs).eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if "ln_" not in name:
                p.normal_(0.0, 0.3)
    return block


def test_prenorm_block_formula():
    block = randomized_block()
    x = torch.randn(2, 6, 16)
    h = x + block.attn(block.ln_1(x))
    expected = h + block.mlp(block.ln_2(h))
    torch.testing.assert_close(block(x), expected)


def test_postnorm_block_formula_and_normalized_output():
    block = randomized_block(prenorm=False)
    x = torch.randn(2, 6, 16) * 5 + 3
    h = block.ln_1(x + block.attn(x))
    expected = block.ln_2(h + block.mlp(h))
    y = block(x)
    torch.testing.assert_close(y, expected)
    # LayerNorm with default weight and bias last: every token has mean 0 and variance 1
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(2, 6), atol=1e-3, rtol=0)
    # pre-norm leaves the residual stream un-normalized
    y_pre = randomized_block()(x)
    assert (y_pre.mean(-1).abs() > 0.1).any()


def test_block_switches():
    x = torch.randn(2, 6, 16)
    no_res = randomized_block(residual=False)
    h = no_res.attn(no_res.ln_1(x))
    torch.testing.assert_close(no_res(x), no_res.mlp(no_res.ln_2(h)))

    attn_only = randomized_block(ffwd=False)
    assert attn_only.mlp is None and attn_only.ln_2 is None
    torch.testing.assert_close(attn_only(x), x + attn_only.attn(attn_only.ln_1(x)))

    no_norm = randomized_block(norm=None)
    assert isinstance(no_norm.ln_1, nn.Identity) and isinstance(no_norm.ln_2, nn.Identity)
    h = x + no_norm.attn(x)
    torch.testing.assert_close(no_norm(x), h + no_norm.mlp(h))

    assert isinstance(randomized_block(norm="rmsnorm").ln_1, RMSNorm)
    assert isinstance(randomized_block().ln_2, LayerNorm)


def test_gpt_final_norm_only_with_prenorm():
    assert isinstance(small_gpt().ln_f, LayerNorm)
    assert isinstance(small_gpt(prenorm=False).ln_f, nn.Identity)
    assert isinstance(small_gpt(norm="rmsnorm").ln_f, RMSNorm)
    assert isinstance(small_gpt(norm=None).ln_f, nn.Identity)


def test_feedforward_gelu_forms_match_pytorch_and_reject_unknown():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8)
    for form, approximate in (("tanh", "tanh"), ("exact", "none")):
        ff = FeedForward(8, gelu=form)
        expected = ff.c_proj(F.gelu(ff.c_fc(x), approximate=approximate))
        assert torch.equal(ff(x), expected)
    exact, approx = FeedForward(8, gelu="exact"), FeedForward(8)
    approx.load_state_dict(exact.state_dict())
    assert not torch.equal(exact(x), approx(x))  # the two forms really differ
    for unknown in ("relu", "none"):  # "none" is PyTorch's name, not the config's
        with pytest.raises(ValueError, match="gelu"):
            FeedForward(8, gelu=unknown)
    with pytest.raises(ValueError, match="gelu"):
        GPTConfig(gelu="erf")
