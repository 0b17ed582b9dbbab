"""llm_from_scratch.perplexity: scoring a text per token and per character."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from training_helpers import ids, small_gpt

from llm_from_scratch.model import BigramLanguageModel
from llm_from_scratch.perplexity import perplexity, perplexity_per_char
from llm_from_scratch.tokenizer import BPETokenizer
from llm_from_scratch.tokenizer_base import CharTokenizer


def test_perplexity_is_exp_of_the_loss():
    model = small_gpt()
    x = ids(2, 9)
    with torch.no_grad():
        loss = model(x[:, :-1], x[:, 1:])[1]
    assert perplexity(model, x) == pytest.approx(math.exp(float(loss)), rel=1e-5)
    uniform = BigramLanguageModel(7)
    with torch.no_grad():
        uniform.token_embedding.weight.zero_()
    assert perplexity(uniform, [1, 2, 3, 4, 5]) == pytest.approx(7.0)


@pytest.mark.parametrize("stride", [1, 3, None, 8])
def test_perplexity_of_a_long_text_reads_sliding_windows(stride):
    model = small_gpt()
    x = ids(1, 30)[0]
    window, size = 8, stride or 4
    # Token t is predicted from the window that first reaches it; windows start `size` apart.
    nll = 0.0
    with torch.no_grad():
        for t in range(1, 30):
            begin = 0 if t <= window else math.ceil((t - window) / size) * size
            logits = model(x[None, begin:t])[0][0, -1]
            nll -= float(F.log_softmax(logits, -1)[x[t]])
    assert perplexity(model, x, stride=stride) == pytest.approx(math.exp(nll / 29), rel=1e-5)


def test_perplexity_per_character():
    text = "to be or not to be"
    chars = CharTokenizer.from_text(text)
    model = small_gpt(vocab_size=chars.vocab_size)
    per_token = perplexity(model, chars.encode(text))
    assert perplexity_per_char(model, chars, text) == pytest.approx(per_token)
    bpe = BPETokenizer()
    bpe.train(text * 3, vocab_size=262)
    byte_model = small_gpt(vocab_size=bpe.vocab_size)
    ids_ = bpe.encode(text)
    nll = math.log(perplexity(byte_model, ids_)) * (len(ids_) - 1)
    expected = math.exp(nll / (len(text) - len(bpe.decode(ids_[:1]))))
    assert perplexity_per_char(byte_model, bpe, text) == pytest.approx(expected)


def test_perplexity_rejects_what_it_cannot_score():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(small_gpt(), [3])
    with pytest.raises(ValueError, match=r"stride must be an integer in \[1, 8\], got 9"):
        perplexity(small_gpt(), ids(1, 20), stride=9)
