"""LLM From Scratch: the shared package behind the textbook's lessons.

Which module holds which lesson's component:

============  ==========================================================================
Lesson        Modules
============  ==========================================================================
1             ``tokenizer`` (byte-level BPE, GPT-2's tokenizer), ``tokenizer_base``
              (characters), ``bpe_merge``, ``tokenizer_files``, ``data`` (Tiny Shakespeare)
2             ``positions`` (sinusoidal, RoPE), ``model.BigramLanguageModel``,
              ``data.get_batch``
3, 4, 6       ``attention`` (one head, multi-head, grouped-query, causal and padding masks)
5             ``norm`` (BatchNorm, LayerNorm, RMSNorm), ``blocks`` (feed-forward, block)
7             ``model.GPT``, ``flops`` (parameter and FLOP counts), ``gpt2`` (GPT-2's
              weights), ``progression`` (the loss progression)
8             ``optim`` (AdamW, schedule), ``train`` (the loop), ``checkpoint``,
              ``distributed`` (torchrun), ``presets``, ``cli``, ``trained`` (cached
              trained models, the book's model)
9             ``generation`` (sampling filters, ``generate``, beam search, streaming),
              ``perplexity``, ``attention.KVCache`` (the KV cache), ``generate`` (the
              command line that talks to a model)
10            ``tasks`` (instructions with checkable answers), ``chat_template`` (chat
              tokens, loss masking), ``lora`` (LoRA), ``sft`` (supervised fine-tuning,
              the chat model), ``chat`` (the command line to chat with it)
all           ``runtime`` (threads, precision, compilation), ``artifacts`` (disk cache),
              ``source`` (showing the package's code in the lessons)
============  ==========================================================================

Lower modules never import higher ones: ``tokenizer_base``, ``bpe_merge``, ``tokenizer_files``
→ ``tokenizer`` → ``data``; ``positions``, ``norm``, ``runtime`` → ``attention`` → ``blocks``
→ ``model`` → ``perplexity`` → ``generation``; ``optim``, ``checkpoint``, ``distributed``
→ ``train`` → ``presets`` → ``trained`` → ``progression``; ``tasks``, ``lora``,
``chat_template`` → ``sft``; ``cli``, ``generate`` and ``chat`` on top.

Importing the package sets PyTorch's CPU threads to the cores that are free
(:func:`llm_from_scratch.runtime.use_free_cores`; ``LLMFS_THREADS`` fixes the number). With
``LLMFS_SEED_OFFSET=k`` set, it also shifts every seed set afterwards by ``k``
(:mod:`llm_from_scratch.seeding`), to run the book as another draw.
"""

__version__ = "0.1.0"

from llm_from_scratch.runtime import use_free_cores as _use_free_cores
from llm_from_scratch.seeding import install_from_environment as _shift_seeds

_use_free_cores()
_shift_seeds()
