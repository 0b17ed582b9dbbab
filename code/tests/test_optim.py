"""llm_from_scratch.optim: AdamW equals torch.optim.AdamW; decay groups; the schedule."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.optim import AdamW, cosine_lr, param_groups

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIG = GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16)


def run_adamw(make_optimizer, steps: int = 100, dtype=torch.float32):
    """Train a small GPT for ``steps`` steps with the same data and return its parameters."""
    torch.manual_seed(0)
    model = GPT(CONFIG).to(dtype)
    optimizer = make_optimizer(param_groups(model, weight_decay=0.1))
    g = torch.Generator().manual_seed(1)
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:  # a changing rate, as in training
            group["lr"] = cosine_lr(step, 3e-3, warmup_steps=10, max_steps=steps, min_lr=3e-4)
        x = torch.randint(0, 23, (4, 8), generator=g)
        _, loss = model(x, x.roll(1, dims=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.9, 0.95)])
def test_adamw_equals_torch_over_100_steps(betas):
    """Same parameters to 1e-6 after 100 steps (in practice: bit for bit)."""
    ours, ours_losses = run_adamw(lambda groups: AdamW(groups, lr=1e-3, betas=betas, eps=1e-8))
    ref, ref_losses = run_adamw(
        lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=betas, eps=1e-8)
    )
    diff = max(
        (a - b).abs().max().item() for a, b in zip(ours.parameters(), ref.parameters(), strict=True)
    )
    assert diff < 1e-6
    assert ours_losses[-1] < ours_losses[0] - 0.2  # it trained: the comparison is not vacuous
    assert ours_losses == pytest.approx(ref_losses, abs=1e-6)


@pytest.mark.parametrize("variant", ["foreach", "fused"])
def test_adamw_equals_torchs_multi_tensor_kernels(variant):
    """PyTorch's foreach and fused kernels round in another order; in float64 all agree.

    (In float32 the last-bit differences grow over 100 steps of training to about 1e-3:
    training amplifies rounding noise, whoever computes it.)
    """
    ours, _ = run_adamw(lambda groups: AdamW(groups, lr=1e-3), dtype=torch.float64)
    ref, _ = run_adamw(
        lambda groups: torch.optim.AdamW(groups, lr=1e-3, **{variant: True}), dtype=torch.float64
    )
    diff = max(
        (a - b).abs().max().item() for a, b in zip(ours.parameters(), ref.parameters(), strict=True)
    )
    assert diff < 1e-10


def test_adamw_equals_torch_in_float64_to_rounding():
    ours, _ = run_adamw(lambda groups: AdamW(groups, lr=1e-3), dtype=torch.float64)
    ref, _ = run_adamw(
        lambda groups: torch.optim.AdamW(groups, lr=1e-3, foreach=False), dtype=torch.float64
    )
    diff = max(
        (a - b).abs().max().item() for a, b in zip(ours.parameters(), ref.parameters(), strict=True)
    )
    assert diff < 1e-12


def test_a_wrong_adamw_is_caught():
    """Coupled weight decay (Adam + L2, the pre-AdamW way) must fail the comparison."""

    class AdamL2(AdamW):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.add_(p, alpha=group["weight_decay"])
            saved = [g["weight_decay"] for g in self.param_groups]
            for g in self.param_groups:
                g["weight_decay"] = 0.0
            super().step()
            for g, wd in zip(self.param_groups, saved, strict=True):
                g["weight_decay"] = wd

    ours, _ = run_adamw(lambda groups: AdamL2(groups, lr=1e-3), steps=20)
    ref, _ = run_adamw(lambda groups: torch.optim.AdamW(groups, lr=1e-3), steps=20)
    diff = max(
        (a - b).abs().max().item() for a, b in zip(ours.parameters(), ref.parameters(), strict=True)
    )
    assert diff > 1e-5


def test_adamw_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = GPT(CONFIG)
    opt = AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 23, (2, 8))
    for _ in range(3):
        opt.zero_grad()
        model(x, x)[1].backward()
        opt.step()
    clone = GPT(CONFIG)
    clone.load_state_dict(model.state_dict())
    opt2 = AdamW(clone.parameters(), lr=1e-2)
    buffer = io.BytesIO()  # through a file, as a checkpoint does (state_dict() holds references)
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x, x)[1].backward()
        o.step()
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters(), strict=True)
    )


def test_adamw_argument_errors():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr > 0"):
        AdamW(p, lr=0.0)
    with pytest.raises(ValueError, match="betas"):
        AdamW(p, betas=(0.9, 1.0))


def test_param_groups_decay_only_linear_weights():
    model = GPT(GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16))
    decay, no_decay = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = sorted(names[id(p)] for p in decay["params"])
    no_decay_names = sorted(names[id(p)] for p in no_decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in decay_names)
    assert len(decay_names) == 2 * 4
    assert "wte.weight" in no_decay_names and "wpe.weight" in no_decay_names  # tied head: once
    assert all(
        n.endswith("bias") or ".ln_" in n or n.startswith(("ln_f", "wte", "wpe"))
        for n in no_decay_names
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_param_groups_untied_head_decays():
    model = GPT(
        GPTConfig(vocab_size=23, block_size=8, n_layer=1, n_head=2, n_embd=16, tie_weights=False)
    )
    decay, _ = param_groups(model, 0.1)
    assert any(p is model.lm_head.weight for p in decay["params"])


def test_cosine_schedule():
    lrs = [cosine_lr(s, 1.0, warmup_steps=10, max_steps=110, min_lr=0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0  # linear warmup, peak at step 9
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10], strict=True))
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))  # then never rises
    assert lrs[60] == pytest.approx(0.55)  # half way down: (max + min) / 2
    assert lrs[110] == lrs[119] == 0.1
    assert cosine_lr(5, 1.0, 0, math.inf) == 1.0  # constant after warmup
