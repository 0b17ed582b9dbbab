"""Tests for llm_from_scratch.attention.

The written-out :func:`attention` is checked against PyTorch's fused
``scaled_dot_product_attention`` (values and gradients), and :class:`MultiHeadAttention` against
``torch.nn.MultiheadAttention`` with the same weights, against itself with explicitly repeated
key/value heads (GQA), and for causality through its Jacobian.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_from_scratch.attention import (
    MultiHeadAttention,
    SelfAttentionHead,
    attention,
    causal_mask,
    padding_mask,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TOL = {"atol": 1e-5, "rtol": 1e-5}


def qkv(*shape_q, T_k=None, d_v=None, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    *batch, T_q, d = shape_q
    T_k = T_q if T_k is None else T_k
    d_v = d if d_v is None else d_v
    q = torch.randn(*batch, T_q, d, generator=g, dtype=dtype)
    k = torch.randn(*batch, T_k, d, generator=g, dtype=dtype)
    v = torch.randn(*batch, T_k, d_v, generator=g, dtype=dtype)
    return q, k, v


def make_mha(seed=0, **kwargs) -> MultiHeadAttention:
    torch.manual_seed(seed)
    mha = MultiHeadAttention(**kwargs).eval()
    with torch.no_grad():  # non-zero biases, so that a bias mix-up cannot hide
        for p in mha.parameters():
            p.normal_(0.0, 0.3)
    return mha


# ---- masks ------------------------------------------------------------------------------


def test_causal_mask_values():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert m.tolist() == [[i >= j for j in range(4)] for i in range(4)]


def test_padding_mask_values():
    m = padding_mask([3, 0, 5], T=6)
    assert m.dtype == torch.bool
    assert m.int().tolist() == [[1, 1, 1, 0, 0, 0], [0] * 6, [1, 1, 1, 1, 1, 0]]
    assert padding_mask(torch.tensor([2, 4])).shape == (2, 4)  # T defaults to the longest


def test_padding_mask_errors():
    with pytest.raises(ValueError, match="does not fit in T=3"):
        padding_mask([4, 1], T=3)
    with pytest.raises(ValueError, match="non-negative"):
        padding_mask([2, -1])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        padding_mask([])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        padding_mask([[1, 2]])


# ---- attention() against scaled_dot_product_attention -----------------------------------


def test_attention_equals_sdpa_without_mask():
    q, k, v = qkv(2, 3, 7, 8, T_k=7, d_v=5)
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v), **TOL)


def test_attention_equals_sdpa_causal():
    q, k, v = qkv(2, 3, 9, 8)
    torch.testing.assert_close(
        attention(q, k, v, is_causal=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        **TOL,
    )


def test_attention_equals_sdpa_with_boolean_mask_broadcast():
    q, k, v = qkv(2, 3, 6, 4)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 1, 6, 6, generator=g) > 0.4
    mask[..., 0] = True  # no fully masked rows here (tested separately)
    torch.testing.assert_close(
        attention(q, k, v, mask=mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        **TOL,
    )
    # a (T_k,) key mask broadcasts too
    key_mask = torch.tensor([True, False, True, True, False, True])
    torch.testing.assert_close(
        attention(q, k, v, mask=key_mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask.expand(6, 6)),
        **TOL,
    )


def test_attention_equals_sdpa_with_mask_and_causal_combined():
    q, k, v = qkv(2, 2, 5, 4)
    key_mask = padding_mask([5, 3])[:, None, None, :]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask & causal_mask(5))
    torch.testing.assert_close(attention(q, k, v, mask=key_mask, is_causal=True), expected, **TOL)


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_attention_equals_sdpa_with_custom_scale(scale):
    q, k, v = qkv(2, 5, 8)
    for causal in (False, True):
        torch.testing.assert_close(
            attention(q, k, v, scale=scale, is_causal=causal),
            F.scaled_dot_product_attention(q, k, v, scale=scale, is_causal=causal),
            **TOL,
        )
    # and the default really is 1/sqrt(d): a different scale gives a different answer
    assert not torch.allclose(attention(q, k, v, scale=scale), attention(q, k, v), atol=1e-3)


@pytest.mark.parametrize(("T_q", "T_k"), [(3, 7), (1, 5), (5, 5)])
def test_causal_with_fewer_queries_aligns_to_the_end(T_q, T_k):
    # Ours: query i sits at absolute position T_k - T_q + i (a KV-cache continuation).
    # SDPA's is_causal aligns top-left instead, so compare with an explicit bottom-right mask.
    q, k, v = qkv(2, 2, T_q, 8, T_k=T_k)
    bottom_right = torch.tensor(
        [[j <= T_k - T_q + i for j in range(T_k)] for i in range(T_q)], dtype=torch.bool
    )
    out = attention(q, k, v, is_causal=True)
    torch.testing.assert_close(
        out, F.scaled_dot_product_attention(q, k, v, attn_mask=bottom_right), **TOL
    )
    # ...which is what the last T_q rows of the full causal attention give.
    q_full = torch.cat((torch.randn(2, 2, T_k - T_q, 8), q), dim=-2)
    full = attention(q_full, k, v, is_causal=True)
    torch.testing.assert_close(out, full[..., T_k - T_q :, :], **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_gradients_equal_sdpa(causal):
    q, k, v = qkv(2, 2, 6, 4, dtype=torch.float64)
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[2, 1] = mask[4, 0] = False
    ours_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_mask = mask & causal_mask(6) if causal else mask
    w = torch.randn(2, 2, 6, 4, dtype=torch.float64)
    (attention(*ours_in, mask=mask, is_causal=causal) * w).sum().backward()
    (F.scaled_dot_product_attention(*ref_in, attn_mask=ref_mask) * w).sum().backward()
    for ours, ref in zip(ours_in, ref_in, strict=True):
        torch.testing.assert_close(ours.grad, ref.grad, atol=1e-10, rtol=1e-8)


def test_fully_masked_rows_give_zeros_not_nan():
    q, k, v = qkv(1, 2, 3, 4)
    mask = torch.tensor([[False, False, False], [True, False, False], [True, True, True]])
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out, weights = attention(q, k, v, mask=mask, return_weights=True)
    assert not out.isnan().any() and not weights.isnan().any()
    assert (out[..., 0, :] == 0).all()
    assert (weights[..., 0, :] == 0).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL)
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


def test_returned_weights_are_the_softmax_that_mixes_values():
    q, k, v = qkv(2, 5, 4)
    out, weights = attention(q, k, v, is_causal=True, return_weights=True)
    assert weights.shape == (2, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    assert (weights.triu(1) == 0).all()  # nothing from the future
    torch.testing.assert_close(weights @ v, out)
    expected = F.softmax((q @ k.transpose(-2, -1) / 2.0).masked_fill(~causal_mask(5), -1e9), -1)
    torch.testing.assert_close(weights, expected)


def test_attention_input_errors():
    q, k, v = qkv(1, 4, 8)
    with pytest.raises(ValueError, match="at least two dimensions"):
        attention(q[0, 0], k, v)
    with pytest.raises(ValueError, match="queries have 8 channels but keys have 6"):
        attention(q, k[..., :6], v)
    with pytest.raises(ValueError, match="4 keys but 3 values"):
        attention(q, k, v[:, :3])


@pytest.mark.parametrize("causal", [False, True])
def test_non_boolean_mask_is_a_type_error(causal):
    q, k, v = qkv(1, 4, 8)
    with pytest.raises(TypeError, match="mask must be boolean"):
        attention(q, k, v, mask=torch.ones(4, 4), is_causal=causal)


# ---- SelfAttentionHead ------------------------------------------------------------------


def test_self_attention_head_equals_hand_computation():
    torch.manual_seed(0)
    head = SelfAttentionHead(n_embd=12, head_size=6, block_size=8)
    x = torch.randn(3, 7, 12)
    q, k, v = x @ head.query.weight.T, x @ head.key.weight.T, x @ head.value.weight.T
    scores = (q @ k.transpose(1, 2)) / 6**0.5
    scores = scores.masked_fill(~causal_mask(7), float("-inf"))
    torch.testing.assert_close(head(x), F.softmax(scores, -1) @ v, **TOL)
    out, w = head(x, return_weights=True)
    assert w.shape == (3, 7, 7)
    torch.testing.assert_close(out, head(x))


def test_self_attention_head_errors():
    head = SelfAttentionHead(n_embd=8, head_size=4, block_size=4)
    with pytest.raises(ValueError, match="exceeds block_size=4"):
        head(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, T, n_embd=8\)"):
        head(torch.randn(1, 4, 7))


# ---- MultiHeadAttention: fused kernel path == written-out path --------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"causal": False},
        {"rope": True},
        {"n_kv_head": 2},
        {"n_kv_head": 1, "rope": True},
        {"bias": False},
    ],
    ids=["mha", "bidirectional", "rope", "gqa", "mqa-rope", "no-bias"],
)
def test_fused_path_equals_written_out_path(kwargs):
    mha = make_mha(n_embd=16, n_head=4, block_size=8, **kwargs)
    x = torch.randn(3, 8, 16)
    y_fast = mha(x)
    y_slow, weights = mha(x, return_weights=True)
    assert weights.shape == (3, 4, 8, 8)
    torch.testing.assert_close(y_fast, y_slow, **TOL)
    # with a padding mask (right padding, one sequence empty of padding)
    pm = padding_mask([8, 5, 2], T=8)
    torch.testing.assert_close(
        mha(x, padding_mask=pm), mha(x, padding_mask=pm, return_weights=True)[0], **TOL
    )
    # shorter sequences than block_size work too
    torch.testing.assert_close(mha(x[:, :5]), mha(x[:, :5], return_weights=True)[0], **TOL)


def test_fused_path_equals_written_out_path_with_left_padding():
    # Left padding leaves padded queries with no visible key under the causal mask: both paths
    # must agree on those rows (zeros before the output projection) and stay finite.
    mha = make_mha(n_embd=8, n_head=2, block_size=5)
    x = torch.randn(2, 5, 8)
    pm = torch.tensor([[False, False, True, True, True], [True] * 5])
    fast = mha(x, padding_mask=pm)
    slow, weights = mha(x, padding_mask=pm, return_weights=True)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, slow, **TOL)
    assert (weights[0, :, :2] == 0).all()
    torch.testing.assert_close(fast[0, 0], mha.c_proj.bias)  # nothing attended: only the bias


# ---- MultiHeadAttention against torch.nn.MultiheadAttention -----------------------------


def reference_mha(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(mha.n_embd, mha.n_head, batch_first=True, bias=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.c_attn.weight)
        ref.in_proj_bias.copy_(mha.c_attn.bias)
        ref.out_proj.weight.copy_(mha.c_proj.weight)
        ref.out_proj.bias.copy_(mha.c_proj.bias)
    return ref


def test_equals_torch_multihead_attention_causal():
    mha = make_mha(n_embd=24, n_head=3, block_size=10)
    ref = reference_mha(mha)
    x = torch.randn(4, 10, 24)
    # nn.MultiheadAttention's boolean attn_mask means True = NOT allowed: the opposite of ours.
    expected, ref_weights = ref(
        x, x, x, attn_mask=~causal_mask(10), need_weights=True, average_attn_weights=False
    )
    torch.testing.assert_close(mha(x), expected, **TOL)
    y, weights = mha(x, return_weights=True)
    torch.testing.assert_close(y, expected, **TOL)
    torch.testing.assert_close(weights, ref_weights, **TOL)


def test_equals_torch_multihead_attention_bidirectional_with_padding():
    mha = make_mha(n_embd=16, n_head=4, block_size=6, causal=False)
    ref = reference_mha(mha)
    x = torch.randn(3, 6, 16)
    pm = padding_mask([6, 4, 1])
    expected, _ = ref(x, x, x, key_padding_mask=~pm, need_weights=False)
    torch.testing.assert_close(mha(x, padding_mask=pm), expected, **TOL)
    torch.testing.assert_close(mha(x, padding_mask=pm, return_weights=True)[0], expected, **TOL)
    expected_plain, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(mha(x), expected_plain, **TOL)


# ---- grouped-query attention ------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_head", "n_kv_head", "rope"), [(4, 2, False), (6, 2, True), (4, 1, False)]
)
def test_gqa_equals_mha_with_repeated_key_value_heads(n_head, n_kv_head, rope):
    hs = 4
    C = n_head * hs
    gqa = make_mha(n_embd=C, n_head=n_head, block_size=7, n_kv_head=n_kv_head, rope=rope)
    full = MultiHeadAttention(C, n_head, 7, n_kv_head=n_head, rope=rope).eval()
    repeat = n_head // n_kv_head
    kv_dim = n_kv_head * hs
    with torch.no_grad():
        w_q, w_k, w_v = gqa.c_attn.weight.split([C, kv_dim, kv_dim])
        b_q, b_k, b_v = gqa.c_attn.bias.split([C, kv_dim, kv_dim])

        def rep(t):  # key/value head j serves query heads j*repeat .. (j+1)*repeat - 1
            return t.reshape(n_kv_head, hs, *t.shape[1:]).repeat_interleave(repeat, 0).flatten(0, 1)

        full.c_attn.weight.copy_(torch.cat((w_q, rep(w_k), rep(w_v))))
        full.c_attn.bias.copy_(torch.cat((b_q, rep(b_k), rep(b_v))))
        full.c_proj.load_state_dict(gqa.c_proj.state_dict())
    x = torch.randn(2, 7, C)
    torch.testing.assert_close(gqa(x), full(x), **TOL)
    torch.testing.assert_close(gqa(x, return_weights=True)[1], full(x, return_weights=True)[1])
    # query heads in one group see the same keys but have their own queries
    weights = gqa(x, return_weights=True)[1]
    assert not torch.allclose(weights[:, 0], weights[:, 1])


def test_gqa_has_fewer_parameters():
    C, H, hs = 64, 8, 8

    def count(n_kv_head):
        mha = MultiHeadAttention(C, H, 16, n_kv_head=n_kv_head)
        return sum(p.numel() for p in mha.parameters())

    for kv in (8, 4, 2, 1):
        c_attn = C * (C + 2 * kv * hs) + (C + 2 * kv * hs)
        c_proj = C * C + C
        assert count(kv) == c_attn + c_proj
    assert count(1) < count(2) < count(4) < count(8) == count(None)
    assert count(8) - count(2) == 2 * (8 - 2) * hs * (C + 1)


# ---- causality --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"rope": True}, {"n_kv_head": 1}])
def test_output_at_t_ignores_inputs_after_t(kwargs):
    mha = make_mha(n_embd=8, n_head=2, block_size=6, **kwargs)
    x = torch.randn(2, 6, 8)
    for t in range(5):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(2, 5 - t, 8)
        for weights in (False, True):
            a = mha(x, return_weights=weights)
            b = mha(changed, return_weights=weights)
            a, b = (a[0], b[0]) if weights else (a, b)
            torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=0, rtol=0)
            assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def jacobian(mha: MultiHeadAttention, x: torch.Tensor, return_weights: bool) -> torch.Tensor:
    def f(inp):
        out = mha(inp, return_weights=return_weights)
        return out[0] if return_weights else out

    return torch.autograd.functional.jacobian(f, x)  # (1, T, C, 1, T, C)


@pytest.mark.parametrize("return_weights", [False, True])
def test_jacobian_from_the_future_is_exactly_zero(return_weights):
    T, C = 5, 8
    mha = make_mha(n_embd=C, n_head=2, block_size=T, rope=True)
    x = torch.randn(1, T, C, dtype=torch.float64)
    mha.double()
    jac = jacobian(mha, x, return_weights)[0, :, :, 0]  # (T_out, C, T_in, C)
    for t in range(T):
        for s in range(T):
            block = jac[t, :, s, :]
            if s > t:
                assert (block == 0).all(), f"output {t} depends on input {s}"
            else:
                assert block.abs().max() > 0, f"output {t} ignores input {s}"


def test_jacobian_from_the_future_is_not_zero_without_causal_mask():
    T, C = 4, 8
    mha = make_mha(n_embd=C, n_head=2, block_size=T, causal=False)
    x = torch.randn(1, T, C)
    jac = jacobian(mha, x, False)[0, :, :, 0]
    for t in range(T):
        for s in range(t + 1, T):
            assert jac[t, :, s, :].abs().max() > 1e-4


def test_rope_attention_is_translation_invariant():
    # With RoPE scores depend on relative positions only: shifting a sequence right behind
    # masked-out padding leaves every real token's output unchanged. Absolute positions, or
    # rotating only the queries, would break this.
    mha = make_mha(n_embd=16, n_head=2, block_size=8, rope=True)
    x = torch.randn(1, 5, 16)
    alone = mha(x)
    for shift in (1, 3):
        shifted = torch.cat((torch.randn(1, shift, 16), x), dim=1)
        pm = torch.arange(5 + shift)[None, :] >= shift  # left padding
        torch.testing.assert_close(mha(shifted, padding_mask=pm)[:, shift:], alone, **TOL)
        y, _ = mha(shifted, padding_mask=pm, return_weights=True)
        torch.testing.assert_close(y[:, shift:], alone, **TOL)
    # without RoPE the model has no positions at all, so this holds trivially; with RoPE a
    # permutation of the tokens does change the outputs (positions are seen)
    bidirectional = make_mha(n_embd=16, n_head=2, block_size=8, rope=True, causal=False)
    perm = torch.tensor([4, 0, 3, 1, 2])
    assert not torch.allclose(bidirectional(x)[:, perm], bidirectional(x[:, perm]), atol=1e-4)


# ---- padding ----------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("return_weights", [False, True])
def test_padded_batch_equals_each_sequence_alone(causal, return_weights):
    mha = make_mha(n_embd=16, n_head=4, block_size=8, causal=causal, rope=True)
    lengths = [8, 5, 2]
    seqs = [torch.randn(1, n, 16) for n in lengths]
    batch = torch.zeros(3, 8, 16)
    for i, s in enumerate(seqs):
        batch[i, : lengths[i]] = s[0]
        batch[i, lengths[i] :] = 100.0 * torch.randn(8 - lengths[i], 16)  # loud padding

    def run(x, pm=None):
        out = mha(x, padding_mask=pm, return_weights=return_weights)
        return out[0] if return_weights else out

    out = run(batch, padding_mask(lengths, T=8))
    for i, s in enumerate(seqs):
        torch.testing.assert_close(out[i, : lengths[i]], run(s)[0], **TOL)
    if not causal:  # without the mask the padding leaks into the real tokens
        assert not torch.allclose(run(batch)[1, :5], run(seqs[1])[0], atol=1e-3)


def test_padding_mask_argument_is_checked():
    mha = MultiHeadAttention(8, 2, 4)
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match=r"boolean \(B, T\) = \(2, 4\)"):
        mha(x, padding_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="padding_mask must be a boolean"):
        mha(x, padding_mask=torch.ones(2, 4))


# ---- construction and input errors ------------------------------------------------------


def test_n_embd_not_divisible_by_n_head():
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        MultiHeadAttention(n_embd=30, n_head=4, block_size=8)


@pytest.mark.parametrize("n_kv_head", [3, 0, -2])
def test_n_head_not_divisible_by_n_kv_head(n_kv_head):
    with pytest.raises(ValueError, match=f"n_head=4 is not divisible by n_kv_head={n_kv_head}"):
        MultiHeadAttention(n_embd=32, n_head=4, block_size=8, n_kv_head=n_kv_head)


def test_non_positive_sizes():
    with pytest.raises(ValueError, match="must be positive"):
        MultiHeadAttention(n_embd=32, n_head=0, block_size=8)


def test_sequence_longer_than_block_size():
    mha = MultiHeadAttention(n_embd=8, n_head=2, block_size=4)
    mha(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="sequence length 5 exceeds block_size=4"):
        mha(torch.randn(1, 5, 8))


@pytest.mark.parametrize("shape", [(4, 8), (1, 4, 6), (1, 1, 4, 8)])
def test_wrong_input_shape(shape):
    mha = MultiHeadAttention(n_embd=8, n_head=2, block_size=4)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, T, n_embd=8\), got"):
        mha(torch.randn(*shape))


def test_dropout_only_in_training():
    mha = make_mha(n_embd=8, n_head=2, block_size=4, dropout=0.5)
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(mha(x), mha(x))  # eval: deterministic
    mha.train()
    torch.manual_seed(0)
    a = mha(x)
    b = mha(x)
    assert not torch.allclose(a, b)


def test_cpu_bfloat16_autocast_runs_the_fused_kernel_in_float32(monkeypatch):
    # PyTorch's CPU flash-attention backward is slow in bfloat16, so the layer upcasts; autocast
    # must be off inside, or it casts the float32 inputs straight back to bfloat16.
    seen = []
    fused = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return fused(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    mha, x = MultiHeadAttention(32, 4, 8), torch.randn(2, 8, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mha(x)
    assert seen == [(torch.float32, False)]
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), mha(x), atol=2e-2, rtol=2e-2)
