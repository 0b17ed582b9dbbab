"""LoRA: fine-tune a large model by training two small matrices per layer (Hu et al., 2021).

A fine-tuned weight ``W + ΔW`` rarely needs a full-rank ``ΔW``. LoRA freezes ``W`` and learns
``ΔW = (alpha / r) · B A`` with ``A`` of shape ``(r, in)`` and ``B`` of shape ``(out, r)``: a
layer that had ``in · out`` trainable numbers now has ``r · (in + out)``. ``B`` starts at zero,
so the adapted model begins exactly where the pretrained one was; after training,
:func:`merge_lora` folds ``ΔW`` into ``W`` and the model is a plain one again, no slower than
before. The layers, initialisation and scaling follow Hugging Face's ``peft``, which the tests
check this module against.

>>> import torch
>>> from llm_from_scratch.model import GPT, GPTConfig
>>> model = GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=2, n_head=2, n_embd=16))
>>> model = add_lora(model, ["c_attn"], r=4, alpha=8)
>>> count_trainable(model)  # two layers of 4 * (16 in + 48 out)
512
>>> model.h[0].attn.c_attn
LoRALinear(
  r=4, alpha=8, scaling=2.0
  (base): Linear(in_features=16, out_features=48, bias=True)
  (dropout): Dropout(p=0.0, inplace=False)
)
>>> type(merge_lora(model).h[0].attn.c_attn).__name__
'Linear'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch
from torch import nn

#: Where :func:`add_lora` keeps each parameter's ``requires_grad`` for :func:`merge_lora`.
_SAVED_REQUIRES_GRAD = "_lora_saved_requires_grad"


class LoRALinear(nn.Module):
    """A frozen :class:`torch.nn.Linear` plus a trainable low-rank update.

    ``y = base(x) + (alpha / r) · dropout(x) Aᵀ Bᵀ``. ``A`` starts Kaiming-uniform and ``B`` at
    zero (as ``peft``), so at first the layer computes exactly what ``base`` does.

    >>> layer = LoRALinear(nn.Linear(6, 3), r=2, alpha=4)
    >>> x = torch.randn(5, 6)
    >>> torch.equal(layer(x), layer.base(x))  # B = 0: the update is zero
    True
    >>> [name for name, p in layer.named_parameters() if p.requires_grad]
    ['lora_A', 'lora_B']
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r (the rank) must be an integer >= 1, got {r!r}")
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, Real)
            or not (math.isfinite(alpha) and alpha > 0)
        ):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        weight = base.weight
        self.lora_A = nn.Parameter(
            torch.empty(r, base.in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, r, dtype=weight.dtype, device=weight.device)
        )
        # peft's choice (nn.Linear's default init): A's rows are random directions of the
        # input, so B's first gradients are informative even though B, and the update, are 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        self.train(base.training)  # a LoRA inserted into a model in eval mode must not drop out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (x Aᵀ) Bᵀ, never x (B A)ᵀ: two thin matmuls instead of building an (out, in) matrix.
        return self.base(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) · B A``: the weight of the plain Linear this layer equals."""
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling}"  # dropout prints itself


def _matches(name: str, target: str) -> bool:
    """peft's ``target_modules`` rule: the whole name, or its last dotted parts."""
    return name == target or name.endswith(f".{target}")


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)


def add_lora(
    model: nn.Module,
    targets: Sequence[str] = ("c_attn",),
    *,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
) -> nn.Module:
    """Wrap every ``nn.Linear`` named by ``targets`` in a :class:`LoRALinear`; freeze the rest.

    A target matches a layer whose name is the target or ends with ``"." + target`` (peft's
    ``target_modules``): ``"c_proj"`` adapts the attention's and the MLP's output projections,
    ``"attn.c_proj"`` the attention's only. Afterwards only the LoRA matrices have
    ``requires_grad``, so an optimizer over ``model.parameters()`` trains only them. Tied weights
    (GPT's ``lm_head`` and ``wte``) are one parameter and stay frozen together. Changes
    ``model`` in place and returns it.

    >>> from llm_from_scratch.model import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=16))
    >>> add_lora(model, ["c_proj"], r=2).h[0].mlp.c_proj.r  # "c_proj" also hits the MLP's
    2
    """
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    if not targets:
        raise ValueError("targets is empty: name at least one Linear layer to adapt")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError(
            "the model already has LoRA layers: merge them with merge_lora() before adding more"
        )
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [name for name in linears if any(_matches(name, t) for t in targets)]
    for target in targets:
        if not any(_matches(name, target) for name in linears):
            leaves = sorted({name.rsplit(".", 1)[-1] for name in linears})
            raise ValueError(
                f"target {target!r} matches no nn.Linear layer of the model; its Linear layers "
                f"end in {leaves} (e.g. {linears[:3]})"
            )
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    # Build every layer before replacing any, so that bad arguments leave the model as it was.
    adapted = {name: LoRALinear(model.get_submodule(name), r, alpha, dropout) for name in chosen}
    for name, layer in adapted.items():
        _replace(model, name, layer)
    model.requires_grad_(False)
    for layer in adapted.values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    # A plain attribute, not a buffer: bookkeeping for merge_lora, not part of the state_dict.
    setattr(model, _SAVED_REQUIRES_GRAD, saved)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by a plain ``nn.Linear`` of weight ``W + (alpha/r) B A``.

    The model then computes what the adapted one did, without the extra matmuls. Each
    parameter's ``requires_grad`` returns to what it was before :func:`add_lora` (for a fresh
    model, everything trainable again), so ``merge_lora(add_lora(m))`` trains like ``m``. The
    merged weight is a new tensor: a tied ``W`` (LoRA on GPT's ``lm_head``) is left unchanged
    where else it is used, so merging unties it. Changes ``model`` in place and returns it.

    >>> layer = LoRALinear(nn.Linear(4, 2), r=1, alpha=1)
    >>> merged = merge_lora(nn.Sequential(layer))[0]
    >>> type(merged).__name__, merged.weight.requires_grad
    ('Linear', True)
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not layers:
        raise ValueError("the model has no LoRA layers to merge (see add_lora)")
    for name, layer in layers:
        plain = layer.base
        # A new Parameter, not an in-place update: the old weight may be shared (tied).
        plain.weight = nn.Parameter(layer.merged_weight())
        plain.train(layer.training)
        if name:
            _replace(model, name, plain)
        else:
            model = plain
    saved = getattr(model, _SAVED_REQUIRES_GRAD, {})
    for name, param in model.named_parameters():
        param.requires_grad_(saved.get(name, True))
    if hasattr(model, _SAVED_REQUIRES_GRAD):
        delattr(model, _SAVED_REQUIRES_GRAD)
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``lora_A`` and ``lora_B`` matrices of every :class:`LoRALinear` in ``model``.

    >>> len(lora_parameters(nn.Sequential(LoRALinear(nn.Linear(4, 2), r=1, alpha=1))))
    2
    """
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


def count_trainable(model: nn.Module) -> int:
    """The number of trainable numbers in ``model`` (a tied matrix counts once).

    >>> count_trainable(LoRALinear(nn.Linear(4, 2), r=1, alpha=1))  # 1 * (4 + 2)
    6
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
