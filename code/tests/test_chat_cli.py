"""Tests for llm_from_scratch.chat: ``python -m llm_from_scratch.chat``.

The fine-tuned model takes minutes to train, so ``sft.sft_model`` is replaced by tiny models:
a scripted one, whose reply is known in advance and which reads whatever it is given, and a
small random GPT on a small BPE vocabulary with the chat tokens. The conversations the chat
sends to the model are recorded where it calls ``generate_steps``. Mistakes in the options are
usage errors (exit status 2) that name the option, reported before any model is loaded.
"""

from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys

import pytest
import torch

from llm_from_scratch import chat, sft
from llm_from_scratch.chat_template import (
    ASSISTANT,
    END,
    USER,
    add_chat_tokens,
    encode_chat,
    resize_vocab,
)
from llm_from_scratch.data import DataUnavailableError
from llm_from_scratch.model import GPT, GPTConfig, LanguageModel
from llm_from_scratch.tokenizer import BPETokenizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REPLY = "fine thanks"


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    text = "hi hello there how are you fine thanks good day to you " * 20
    return add_chat_tokens(BPETokenizer().train(text, vocab_size=280))


class Scripted(LanguageModel):
    """Replies with ``script``'s tokens one by one, whatever the conversation, then repeats
    its last token. It counts the reply so far from the conversation's last ``<|assistant|>``.
    """

    def __init__(self, tok: BPETokenizer, script: list[int], block_size: int = 64) -> None:
        super().__init__()
        self.vocab_size, self.block_size, self.script = tok.vocab_size, block_size, script
        self.assistant = tok.special_tokens[ASSISTANT]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        row = idx[0].tolist()
        done = row[::-1].index(self.assistant)  # tokens of the reply so far
        logits = torch.zeros(idx.size(0), idx.size(1), self.vocab_size)
        logits[:, -1, self.script[min(done, len(self.script) - 1)]] = 100.0
        return logits, None


def scripted(tok: BPETokenizer, reply: str = REPLY, block_size: int = 64) -> Scripted:
    """A model that answers ``reply``, then ``<|end|>``: after the template's space, as the
    fine-tuned model learned to."""
    return Scripted(tok, [*tok.encode(" " + reply), tok.special_tokens[END]], block_size)


@pytest.fixture(scope="module")
def gpt(tok) -> GPT:
    """A small random GPT, grown to the chat tokens as fine-tuning grows the book's model."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size - 3, block_size=64, n_layer=1, n_head=2,
                          n_embd=16))
    return resize_vocab(model, tok.vocab_size).eval()


@pytest.fixture
def loads(monkeypatch):
    """Make ``sft.sft_model`` return ``model`` (set with ``loads.model = ...``); record calls."""

    class Loader:
        def __init__(self) -> None:
            self.model: LanguageModel | None = None
            self.tokenizer: BPETokenizer | None = None
            self.calls: list[tuple[int | None, bool]] = []  # (lora_rank, progress)

        def __call__(self, lora_rank=None, progress=True):
            self.calls.append((lora_rank, progress))
            return sft.FineTuned("sft", self.model, self.tokenizer, result=None,
                                 trainable_params=0, from_cache=True)

    loader = Loader()
    monkeypatch.setattr(sft, "sft_model", loader)
    return loader


@pytest.fixture
def prompts(monkeypatch) -> list[tuple[list[int], int]]:
    """The conversations (ids) the chat asks the model to answer, with their max_new_tokens."""
    seen = []
    real = chat.generate_steps

    def recording(model, idx, max_new_tokens, **kwargs):
        seen.append((idx[0].tolist(), max_new_tokens))
        return real(model, idx, max_new_tokens, **kwargs)

    monkeypatch.setattr(chat, "generate_steps", recording)
    return seen


def run(capsys, monkeypatch, stdin: str, *argv: str) -> tuple[str, str]:
    """What ``chat.main(argv)`` prints (out, err) with ``stdin`` piped in; it must succeed."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    assert chat.main(list(argv)) == 0
    printed = capsys.readouterr()
    return printed.out, printed.err


def usage_error(capsys, *argv: str) -> str:
    """The message of the usage error that ``chat.main(argv)`` must end with."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        chat.main(list(argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def user(*texts: str) -> list[dict[str, str]]:
    """A conversation of these user messages, each answered with REPLY."""
    turns = [[{"role": "user", "content": t}, {"role": "assistant", "content": REPLY}]
             for t in texts]
    return [message for pair in turns for message in pair][:-1]


def encoded(tok: BPETokenizer, *texts: str) -> list[int]:
    return encode_chat(tok, user(*texts), add_generation_prompt=True)[0]


def test_each_line_gets_its_reply(tok, loads, prompts, capsys, monkeypatch):
    loads.model, loads.tokenizer = scripted(tok), tok
    out, _ = run(capsys, monkeypatch, "hi\n  how are you \n")
    assert out == f"{REPLY}\n{REPLY}\n"  # piped input: replies only, no "> " prompt
    # the model answers the chat template's encoding, surrounding spaces stripped
    assert prompts == [(encoded(tok, "hi"), 32), (encoded(tok, "how are you"), 32)]
    assert loads.calls == [(None, True)]  # the fully fine-tuned model; a progress bar to train


def test_replies_stream_token_by_token_and_keep_characters_whole(tok):
    reply = "fine café"  # "é" is two bytes, two tokens of this ASCII-trained vocabulary
    conversation = chat.Chat(scripted(tok, reply), tok)
    pieces = list(conversation.reply(encoded(tok, "hi")))
    # the template's space before the reply is left out; "é" comes whole, from two tokens
    assert "".join(pieces) == reply and pieces[-1] == "é"
    tokens = [tok.decode([t]) for t in tok.encode(" " + reply)]
    assert tokens[0].startswith(" ") and tokens[-2:] == ["\ufffd", "\ufffd"]
    assert pieces == [tokens[0].lstrip(), *tokens[1:-2], "é"]  # one piece per token


def test_a_marker_that_starts_a_turn_ends_the_reply(tok):
    script = [*tok.encode(" fine"), tok.special_tokens[USER], *tok.encode(" hi"),
              tok.special_tokens[END]]
    conversation = chat.Chat(Scripted(tok, script), tok)
    assert "".join(conversation.reply(encoded(tok, "hi"))) == "fine"


@pytest.mark.parametrize("flags, history", [([], False), (["--single-turn"], False),
                                             (["--multi-turn"], True)])
def test_single_turn_is_the_default_and_multi_turn_keeps_the_history(
        flags, history, tok, loads, prompts, capsys, monkeypatch):
    loads.model, loads.tokenizer = scripted(tok), tok
    out, _ = run(capsys, monkeypatch, "hi\nhello\ngood day\n", *flags)
    assert out == f"{REPLY}\n" * 3
    if history:
        expected = [encoded(tok, "hi"), encoded(tok, "hi", "hello"),
                    encoded(tok, "hi", "hello", "good day")]
    else:
        expected = [encoded(tok, "hi"), encoded(tok, "hello"), encoded(tok, "good day")]
    assert [ids for ids, _ in prompts] == expected


@pytest.mark.parametrize("stdin", ["hi\nquit\nhello\n", "hi\nEXIT\nhello\n", "hi\n\nhello\n",
                                   "hi\n   \nhello\n", "hi"])
def test_quit_exit_an_empty_line_and_end_of_input_stop(stdin, tok, loads, prompts, capsys,
                                                       monkeypatch):
    loads.model, loads.tokenizer = scripted(tok), tok
    out, _ = run(capsys, monkeypatch, stdin)
    assert out == f"{REPLY}\n"
    assert [ids for ids, _ in prompts] == [encoded(tok, "hi")]


def test_reset_forgets_the_conversation(tok, loads, prompts, capsys, monkeypatch):
    loads.model, loads.tokenizer = scripted(tok), tok
    out, _ = run(capsys, monkeypatch, "hi\nhello\n/reset\ngood day\n", "--multi-turn")
    assert out == f"{REPLY}\n" * 3  # /reset is not a message: no reply
    assert [ids for ids, _ in prompts] == [encoded(tok, "hi"), encoded(tok, "hi", "hello"),
                                           encoded(tok, "good day")]


def test_the_oldest_turns_are_left_out_when_the_conversation_outgrows_the_context(
        tok, loads, prompts, capsys, monkeypatch):
    block_size, new = 40, 8  # the reply is 7 tokens with its <|end|>
    loads.model, loads.tokenizer = scripted(tok, block_size=block_size), tok
    lines = ["hi", "hello there", "how are you", "good day", "hi", "you"]
    out, _ = run(capsys, monkeypatch, "\n".join(lines) + "\n", "--multi-turn",
                 "--max-new-tokens", str(new))
    assert out == f"{REPLY}\n" * len(lines)
    assert len(prompts) == len(lines)
    truncated = 0
    for turn, (ids, max_new) in enumerate(prompts):
        assert max_new == new and len(ids) + new <= block_size  # the reply fits in the context
        # the longest run of the latest whole turns that fits, by encoding whole conversations
        fitting = [encoded(tok, *lines[first : turn + 1]) for first in range(turn + 1)]
        fitting = [candidate for candidate in fitting if len(candidate) + new <= block_size]
        assert ids == fitting[0]
        truncated += ids != encoded(tok, *lines[: turn + 1])
    assert truncated >= 2  # the test does reach the limit


def test_a_message_too_long_alone_is_skipped(tok, loads, prompts, capsys, monkeypatch):
    loads.model, loads.tokenizer = scripted(tok, block_size=32), tok
    long = "hello there " * 10
    out, err = run(capsys, monkeypatch, f"hi\n{long}\nhello\n", "--multi-turn",
                   "--max-new-tokens", "8")
    assert out == f"{REPLY}\n" * 2
    assert "error: the message is" in err and "more than the 24 that fit" in err
    assert "message skipped" in err
    # the conversation goes on as if the long message had not been sent
    assert [ids for ids, _ in prompts] == [encoded(tok, "hi"), encoded(tok, "hi", "hello")]


def test_message_answers_one_message_without_reading_input(tok, loads, prompts, capsys,
                                                           monkeypatch):
    loads.model, loads.tokenizer = scripted(tok), tok
    out, _ = run(capsys, monkeypatch, "hello\n", "--message", " hi ", "--max-new-tokens", "20")
    assert out == f"{REPLY}\n"
    assert prompts == [(encoded(tok, "hi"), 20)]
    assert sys.stdin.read() == "hello\n"  # left for whoever reads it next


def test_a_message_too_long_for_the_context_is_a_usage_error(tok, loads, capsys):
    loads.model, loads.tokenizer = scripted(tok, block_size=24), tok
    err = usage_error(capsys, "--message", "hello there " * 10, "--max-new-tokens", "4")
    assert "argument --message: the message is" in err and "the 20 that fit" in err


def test_an_empty_reply_is_printed_as_an_empty_line_and_kept_out_of_the_history(
        tok, loads, prompts, capsys, monkeypatch):
    loads.model, loads.tokenizer = scripted(tok, reply=""), tok  # <|end|> at once
    out, err = run(capsys, monkeypatch, "hi\nhello\n", "--multi-turn")
    assert out == "\n\n"
    assert err.count("empty reply") == 2
    # an assistant turn must have content: the unanswered turn is not in the history
    assert [ids for ids, _ in prompts] == [encoded(tok, "hi"), encoded(tok, "hello")]
    out, _ = run(capsys, monkeypatch, "", "--message", "hi")
    assert out == "\n"


def test_greedy_replies_are_deterministic_and_match_the_task_scorer(tok, gpt, loads, capsys,
                                                                    monkeypatch):
    loads.model, loads.tokenizer = gpt, tok
    args = ["--message", "how are you", "--max-new-tokens", "12"]
    greedy = run(capsys, monkeypatch, "", *args, "--seed", "1")[0]
    assert run(capsys, monkeypatch, "", *args, "--seed", "2")[0] == greedy
    assert len(greedy) > 5  # a real reply, not one that ended at once
    # the replies that Lesson 10 scores: greedy, up to <|end|>, stripped of spaces
    assert greedy[:-1].strip() == sft.replies(gpt, tok, ["how are you"], max_new_tokens=12)[0]


def test_a_seed_makes_sampled_replies_reproducible(tok, gpt, loads, capsys, monkeypatch):
    loads.model, loads.tokenizer = gpt, tok
    args = ["--message", "how are you", "--max-new-tokens", "12", "--temperature", "1"]
    first = run(capsys, monkeypatch, "", *args, "--seed", "1")[0]
    assert run(capsys, monkeypatch, "", *args, "--seed", "1")[0] == first
    assert run(capsys, monkeypatch, "", *args, "--seed", "2")[0] != first


def test_lora_rank_picks_the_lora_model(tok, loads, capsys, monkeypatch):
    loads.model, loads.tokenizer = scripted(tok), tok
    run(capsys, monkeypatch, "", "--message", "hi", "--lora-rank", "4")
    assert loads.calls == [(4, True)]


def test_the_prompt_and_notes_are_for_a_terminal(tok, loads, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    loads.model, loads.tokenizer = scripted(tok), tok
    monkeypatch.setattr(sys, "stdin", Terminal("hi\n/reset\n"))
    capsys.readouterr()
    assert chat.main([]) == 0
    printed = capsys.readouterr()
    assert printed.out == f"> {REPLY}\n> > \n"  # end of input ends the prompt's line
    assert "quit" in printed.err and "(a new conversation)" in printed.err


def test_ctrl_c_exits_130(tok, loads, capsys, monkeypatch):
    def interrupted(prompt=""):
        raise KeyboardInterrupt

    loads.model, loads.tokenizer = scripted(tok), tok
    monkeypatch.setattr(builtins, "input", interrupted)
    assert chat.main([]) == 130


def test_missing_data_exits_1(capsys, monkeypatch):
    def no_data(lora_rank=None, progress=True):
        raise DataUnavailableError("put input.txt in the data directory")

    monkeypatch.setattr(sft, "sft_model", no_data)
    assert chat.main(["--message", "hi"]) == 1
    assert "error: put input.txt in the data directory" in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "1", "--top-p", "1.5"], "--top-p"),
    (["--temperature", "1", "--top-k", "0"], "--top-k"),
    (["--temperature", "1", "--min-p", "2"], "--min-p"),
    (["--top-k", "5"], "--top-k"),  # greedy by default: a filter would do nothing
    (["--temperature", "0", "--top-p", "0.9"], "--top-p"),
    (["--repetition-penalty", "0"], "--repetition-penalty"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--max-new-tokens", "ten"], "--max-new-tokens"),
    (["--lora-rank", "0"], "--lora-rank"),
    (["--message", ""], "--message"),
    (["--message", "  "], "--message"),
    (["--single-turn", "--multi-turn"], "--multi-turn"),
])
def test_bad_options_are_usage_errors_before_any_model_is_made(argv, flag, capsys,
                                                               monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a usage error must come before the chat model is trained")

    monkeypatch.setattr(sft, "sft_model", no_training)
    assert f"argument {flag}:" in usage_error(capsys, *argv)


def test_sampling_options_that_work_are_accepted(tok, loads, capsys, monkeypatch):
    loads.model, loads.tokenizer = scripted(tok), tok
    out, _ = run(capsys, monkeypatch, "", "--message", "hi", "--temperature", "0.5",
                 "--top-k", "3", "--top-p", "0.9", "--min-p", "0.1",
                 "--repetition-penalty", "1.0", "--seed", "0")
    assert out == f"{REPLY}\n"  # the scripted model is sure of every token


@pytest.mark.parametrize("new", ["64", "61"])
def test_a_reply_that_leaves_no_room_for_a_message_is_a_usage_error(new, tok, loads, capsys):
    loads.model, loads.tokenizer = scripted(tok, block_size=64), tok
    err = usage_error(capsys, "--message", "hi", "--max-new-tokens", new)
    assert "argument --max-new-tokens: the model reads 64 tokens" in err


def test_help_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "llm_from_scratch.chat", "--help"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LLMFS_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "--message TEXT" in proc.stdout and "--multi-turn" in proc.stdout


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["--top-p", "2"], 2)])
def test_the_package_command_line_runs_it_too(args, code):
    """``python -m llm_from_scratch chat`` passes its exit status on."""
    proc = subprocess.run(
        [sys.executable, "-m", "llm_from_scratch", "chat", *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LLMFS_THREADS": "1"},
    )
    assert proc.returncode == code, proc.stderr
    assert "--message TEXT" in proc.stdout + proc.stderr
