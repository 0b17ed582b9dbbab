"""Tests for llm_from_scratch.baselines: the MLP and LSTM language models before attention."""

from __future__ import annotations

import pytest
import torch

from llm_from_scratch.baselines import (
    LSTMConfig,
    LSTMLanguageModel,
    MLPConfig,
    MLPLanguageModel,
    lstm_cell,
)
from llm_from_scratch.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_lstm_equals_torch_lstm():
    torch.manual_seed(0)
    model = LSTMLanguageModel(LSTMConfig(vocab_size=11, n_embd=6, n_hidden=10))
    reference = torch.nn.LSTM(6, 10, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(reference, f"{name}_l0").copy_(getattr(model, name))
    x = torch.randint(0, 11, (3, 9))
    states, _ = reference(model.token_embedding(x))
    torch.testing.assert_close(model(x)[0], model.head(states))


def test_lstm_cell_gate_order_is_torchs():
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(4, 5)
    x, h, c = torch.randn(2, 4), torch.randn(2, 5), torch.randn(2, 5)
    ours = lstm_cell(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh)
    for a, b in zip(ours, cell(x, (h, c)), strict=True):
        torch.testing.assert_close(a, b)


def test_mlp_sees_exactly_its_window():
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=7, window=3, n_embd=4, n_hidden=8))
    x = torch.randint(0, 7, (1, 10))
    logits = model(x)[0]
    before = x.clone()
    before[0, 5] = (x[0, 5] + 1) % 7  # outside the window of position 9, inside that of 7
    changed = model(before)[0]
    torch.testing.assert_close(changed[0, 8:], logits[0, 8:])
    assert not torch.allclose(changed[0, 5:8], logits[0, 5:8])
    torch.testing.assert_close(changed[0, :5], logits[0, :5])  # and nothing looks ahead


def test_mlp_equals_the_formula_at_one_position():
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=7, window=3, n_embd=4, n_hidden=8))
    x = torch.randint(0, 7, (1, 6))
    window = model.token_embedding(x[0, 2:5]).flatten()  # the three characters before 5
    expected = model.head(torch.tanh(model.hidden(window)))
    torch.testing.assert_close(model(x)[0][0, 4], expected)
    first = torch.cat([torch.zeros(8), model.token_embedding(x[0, :1]).flatten()])
    torch.testing.assert_close(model(x)[0][0, 0], model.head(torch.tanh(model.hidden(first))))


@pytest.mark.parametrize("bad", [dict(window=0), dict(n_embd=-1), dict(n_hidden=2.5)])
def test_mlp_config_rejects_nonsense(bad):
    field = next(iter(bad))
    with pytest.raises(ValueError, match=f"MLPConfig.{field} must be"):
        MLPConfig(**bad)


def test_lstm_config_rejects_nonsense():
    with pytest.raises(ValueError, match="LSTMConfig.n_hidden must be"):
        LSTMConfig(n_hidden=0)


@pytest.mark.parametrize("model", [
    MLPLanguageModel(MLPConfig(vocab_size=5, window=2, n_embd=4, n_hidden=8)),
    LSTMLanguageModel(LSTMConfig(vocab_size=5, n_embd=4, n_hidden=8)),
], ids=["mlp", "lstm"])  # fmt: skip
def test_baselines_train_and_check_their_input(model):
    torch.manual_seed(0)
    ids = torch.arange(200) % 5  # a periodic text: easy to learn
    result = train(model, ids, ids, TrainConfig(block_size=6, batch_size=8, max_steps=60,
                                               learning_rate=1e-2, eval_interval=60,
                                               eval_batches=2), progress=False)
    assert result.val_loss < 1.0  # from ln 5 = 1.61
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        model(torch.tensor([[5]]))
