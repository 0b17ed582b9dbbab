"""llm_from_scratch.lora: LoRA adapters on the book's GPT, checked against Hugging Face's peft."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from llm_from_scratch.gpt2 import load_hf_gpt2
from llm_from_scratch.lora import (
    LoRALinear,
    add_lora,
    count_trainable,
    lora_parameters,
    merge_lora,
)
from llm_from_scratch.model import GPT, GPTConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests must never reach the hub

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIG = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)


def small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def random_ids(vocab_size: int = 50, shape: tuple[int, int] = (3, 16)) -> torch.Tensor:
    return torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(1))


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out[0] if isinstance(out, tuple) else out.logits


def randomise_lora_B(model: nn.Module, seed: int = 2) -> None:
    """Non-zero B matrices: with B = 0 every comparison would pass trivially."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(0.1 * torch.randn(m.lora_B.shape, generator=generator))


def test_at_initialisation_the_adapted_model_equals_the_original():
    original = small_gpt()
    adapted = add_lora(copy.deepcopy(original), ["c_attn", "c_fc"], r=4, alpha=8)
    ids = random_ids()
    assert torch.equal(logits(adapted, ids), logits(original, ids))
    randomise_lora_B(adapted)  # and the check sees an update once B is not zero
    assert not torch.allclose(logits(adapted, ids), logits(original, ids), atol=1e-3)


def test_training_changes_only_lora_and_merging_keeps_the_logits():
    model = add_lora(small_gpt(), ["c_attn", "c_proj"], r=4, alpha=8).train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    # An optimizer over *all* parameters: only the freezing keeps the base weights fixed.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = random_ids()
    for _ in range(5):
        _, loss = model(ids, ids.roll(-1, dims=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    lora_names = {name for name in before if name.endswith(("lora_A", "lora_B"))}
    assert len(lora_names) == 2 * 3 * CONFIG.n_layer  # c_attn, attn.c_proj, mlp.c_proj
    assert changed == lora_names
    model.eval()
    adapted = logits(model, ids)
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    torch.testing.assert_close(logits(merged, ids), adapted, rtol=0, atol=1e-5)


def test_gradients_reach_only_the_lora_matrices():
    model = add_lora(small_gpt(), ["c_attn", "mlp.c_proj"], r=3, alpha=6)
    ids = random_ids()
    _, loss = model(ids, ids)
    loss.backward()
    lora = {id(p) for p in lora_parameters(model)}
    for name, p in model.named_parameters():
        if id(p) in lora:
            assert p.grad is not None, name
        else:
            assert p.grad is None and not p.requires_grad, name
    # A's gradient is B-weighted, so zero while B = 0; B's is not.
    assert all(
        float(m.lora_B.grad.abs().max()) > 0 for m in model.modules() if isinstance(m, LoRALinear)
    )
    E = CONFIG.n_embd
    per_layer = 3 * ((E + 3 * E) + (4 * E + E))  # r (in + out) for c_attn and mlp.c_proj
    assert count_trainable(model) == CONFIG.n_layer * per_layer
    assert count_trainable(model) == sum(p.numel() for p in lora_parameters(model))


def test_tied_embedding_stays_frozen_and_merging_lm_head_unties_it():
    model = add_lora(small_gpt(), ["lm_head"], r=2, alpha=4)
    assert model.wte.weight is model.lm_head.base.weight  # still one matrix...
    assert not model.wte.weight.requires_grad  # ...frozen under both names
    assert count_trainable(model) == 2 * (CONFIG.n_embd + CONFIG.vocab_size)
    randomise_lora_B(model)
    embedding = model.wte.weight.detach().clone()
    ids = random_ids()
    adapted = logits(model, ids)
    merge_lora(model)
    assert model.lm_head.weight is not model.wte.weight  # the update belongs to the head only
    assert torch.equal(model.wte.weight, embedding)
    torch.testing.assert_close(logits(model, ids), adapted, rtol=0, atol=1e-5)


def test_merge_restores_requires_grad_as_it_was():
    model = small_gpt()
    model.wte.requires_grad_(False)  # the user had frozen the embeddings before
    merge_lora(add_lora(model))
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"wte.weight"}
    assert not hasattr(model, "_lora_saved_requires_grad")


def test_suffix_matching_follows_module_boundaries():
    attn_only = add_lora(small_gpt(), ["attn.c_proj"])
    assert isinstance(attn_only.h[0].attn.c_proj, LoRALinear)
    assert not isinstance(attn_only.h[0].mlp.c_proj, LoRALinear)
    both = add_lora(small_gpt(), "c_proj")  # one name, not its characters
    assert isinstance(both.h[1].mlp.c_proj, LoRALinear)
    with pytest.raises(ValueError, match="'proj'"):  # a suffix of a name, not of a dotted part
        add_lora(small_gpt(), ["proj"])


def test_dropout_follows_the_models_mode():
    model = add_lora(small_gpt(), r=2, dropout=0.5)  # small_gpt() is in eval mode
    randomise_lora_B(model)
    assert not model.h[0].attn.c_attn.training
    ids = random_ids()
    assert torch.equal(logits(model, ids), logits(model, ids))
    model.train()
    assert not torch.equal(logits(model, ids), logits(model, ids))
    # Dropout acts on the LoRA path only: with B = 0 the layer is its base, even in training.
    layer = LoRALinear(nn.Linear(8, 4), r=2, alpha=4, dropout=0.5).train()
    x = torch.randn(6, 8)
    assert torch.equal(layer(x), layer.base(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r": 0}, r"r \(the rank\) must be an integer >= 1, got 0"),
        ({"r": -1}, r"r \(the rank\) must be an integer >= 1, got -1"),
        ({"r": 2.0}, r"r \(the rank\) must be an integer"),
        ({"alpha": 0}, "alpha must be a finite number > 0, got 0"),
        ({"alpha": float("nan")}, "alpha must be a finite number > 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_are_refused_and_leave_the_model_unchanged(kwargs, message):
    model = small_gpt()
    with pytest.raises(ValueError, match=message):
        add_lora(model, **kwargs)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_unknown_targets_and_double_adaptation_are_refused():
    with pytest.raises(ValueError, match=r"target 'q_proj' matches no nn.Linear.*'c_attn'"):
        add_lora(small_gpt(), ["c_attn", "q_proj"])
    with pytest.raises(ValueError, match="target 'ln_1' matches no nn.Linear"):
        add_lora(small_gpt(), ["ln_1"])  # a LayerNorm, not a Linear
    with pytest.raises(ValueError, match="targets is empty"):
        add_lora(small_gpt(), [])
    model = add_lora(small_gpt())
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(model, ["c_fc"])
    with pytest.raises(ValueError, match="no LoRA layers to merge"):
        merge_lora(small_gpt())
    with pytest.raises(TypeError, match="must be an nn.Linear"):
        LoRALinear(nn.Embedding(3, 4), r=1, alpha=1)


# --- against Hugging Face's peft ---------------------------------------------------------------


def peft_and_ours(tmp_path):
    """A random GPT-2 as peft's LoRA model and as ours, with the same non-zero A and B."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=50, n_positions=16)
    hf = transformers.GPT2LMHeadModel(config)
    hf.save_pretrained(tmp_path)
    ours = add_lora(load_hf_gpt2(tmp_path), ["c_attn"], r=4, alpha=8)
    # fan_in_fan_out: GPT-2's Conv1D stores W as (in, out); A and B keep nn.Linear's layout.
    lora_config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, fan_in_fan_out=True
    )
    theirs = peft.get_peft_model(hf, lora_config).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for i, block in enumerate(ours.h):
            layer = theirs.base_model.model.transformer.h[i].attn.c_attn
            A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            B.copy_(0.1 * torch.randn(B.shape, generator=generator))
            block.attn.c_attn.lora_A.copy_(A)
            block.attn.c_attn.lora_B.copy_(B)
    return theirs, ours


def test_logits_equal_peft(tmp_path):
    theirs, ours = peft_and_ours(tmp_path)
    ids = random_ids()
    expected = logits(theirs, ids)
    with theirs.disable_adapter():  # B is not zero: the adapters change the logits
        assert not torch.allclose(logits(theirs, ids), expected, atol=1e-3)
    torch.testing.assert_close(logits(ours, ids), expected, rtol=0, atol=1e-5)
    with torch.no_grad():  # the comparison sees a wrong B
        ours.h[1].attn.c_attn.lora_B.mul_(-1)
    assert not torch.allclose(logits(ours, ids), expected, atol=1e-3)


def test_merged_model_equals_peft_merge_and_unload(tmp_path):
    theirs, ours = peft_and_ours(tmp_path)
    ids = random_ids()
    hf_merged = theirs.merge_and_unload()
    merged = merge_lora(ours)
    torch.testing.assert_close(logits(merged, ids), logits(hf_merged, ids), rtol=0, atol=1e-5)
    # peft's merged Conv1D weight is (in, out): ours is its transpose.
    hf_weight = hf_merged.transformer.h[0].attn.c_attn.weight
    torch.testing.assert_close(merged.h[0].attn.c_attn.weight, hf_weight.T, rtol=0, atol=1e-6)
