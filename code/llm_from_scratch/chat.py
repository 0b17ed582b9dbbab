"""The command line that chats: ``python -m llm_from_scratch.chat`` (Lesson 10).

It talks with the fine-tuned model of :mod:`llm_from_scratch.sft` (trained on first use, with a
progress bar, then loaded from the cache), printing each reply as it is generated, up to the
model's ``<|end|>`` token. ``--message TEXT`` answers one message and exits, for scripts.

The model only ever saw one-turn conversations, a request and its answer, so by default each
message starts a fresh conversation; ``--multi-turn`` keeps the history instead. The
conversation, encoded with the chat template, and the reply must fit in the model's context
(``block_size`` tokens): the oldest (user, assistant) pairs are left out until the rest fits in
``block_size - max_new_tokens``, and a message too long to fit even alone is skipped. Replies
are greedy by default (``--temperature 0``): the tasks have one right answer, the likeliest.

    python -m llm_from_scratch.chat
    python -m llm_from_scratch.chat --message "Reverse these words: fair Verona sweet"
    python -m llm_from_scratch.chat --multi-turn --temperature 0.7 --top-p 0.9 --seed 1

>>> args = parser().parse_args(["--message", "Hi", "--temperature", "0.5", "--top-k", "5"])
>>> args.message, args.multi_turn, sampling(args)
('Hi', False, {'temperature': 0.5, 'top_k': 5})
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llm_from_scratch import sft
from llm_from_scratch.chat_template import END, Message, chat_token_ids, encode_chat
from llm_from_scratch.generate import (
    QUIT,
    SAMPLING_FLAGS,
    add_sampling_options,
    check_sampling,
    exit_status,
    new_generator,
    sampling_options,
)
from llm_from_scratch.generation import decode_stream, generate_steps
from llm_from_scratch.model import LanguageModel
from llm_from_scratch.tokenizer import BPETokenizer

#: The line that forgets the conversation so far.
RESET = "/reset"
#: The sampling options that only shape sampling, and so do nothing when decoding is greedy.
FILTER_FLAGS = ("--top-k", "--top-p", "--min-p")


def parser() -> argparse.ArgumentParser:
    """The options of ``python -m llm_from_scratch.chat``; ``--help`` lists them."""
    p = argparse.ArgumentParser(
        prog="python -m llm_from_scratch.chat",
        description="Chat with the book's fine-tuned model (trained on first use, then "
        "cached), printing each reply as it comes.",
        epilog="An empty line, 'quit', 'exit' or end of input ends the chat; /reset forgets "
        "the conversation. Oldest turns are left out when the conversation no longer fits in "
        "the model's context.",
    )
    p.add_argument("--message", metavar="TEXT", help="answer this one message and exit, "
                   "instead of reading messages line by line")
    p.add_argument("--max-new-tokens", type=int, default=32,
                   help="the longest reply, in tokens (default: 32)")
    turns = p.add_mutually_exclusive_group()
    turns.add_argument("--single-turn", dest="multi_turn", action="store_false",
                       help="each message starts a new conversation, as in fine-tuning "
                       "(the default)")
    turns.add_argument("--multi-turn", dest="multi_turn", action="store_true",
                       help="keep the conversation's history (the model was not trained on it)")
    p.set_defaults(multi_turn=False)  # else --single-turn's store_false would make it True
    p.add_argument("--lora-rank", type=int, metavar="R", help="the model fine-tuned with "
                   "LoRA adapters of rank R (default: the fully fine-tuned one)")
    p.add_argument("--seed", type=int, help="seed the sampling, for reproducible replies")
    add_sampling_options(
        p, temperature="0 is greedy, the likeliest token each time (default: 0)",
        penalty="> 1 makes tokens already in the conversation less likely")
    return p


def sampling(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``generate`` that ``args`` asks for: greedy unless told."""
    return {"temperature": 0.0, **sampling_options(args)}


def check_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors for options that cannot work, before the model is loaded or trained."""
    if args.max_new_tokens < 1:
        p.error(f"argument --max-new-tokens: must be at least 1, got {args.max_new_tokens}")
    if args.lora_rank is not None and args.lora_rank < 1:
        p.error(f"argument --lora-rank: must be at least 1, got {args.lora_rank}")
    if args.message is not None and not args.message.strip():
        p.error("argument --message: give a message to answer")
    options = sampling_options(args)
    check_sampling(p, options)
    if not sampling(args)["temperature"]:
        # Greedy decoding ignores the filters; silently ignoring a flag would mislead.
        for flag in FILTER_FLAGS:
            if SAMPLING_FLAGS[flag] in options:
                p.error(f"argument {flag}: greedy decoding (--temperature 0, the default) "
                        "takes the likeliest token, so it has no effect; add --temperature")


def fit_history(tokenizer: BPETokenizer, messages: Sequence[Message], budget: int) -> list[int]:
    """The ids to answer ``messages`` from, at most ``budget``; ValueError if none fit.

    ``messages`` alternate user and assistant and end with the user. The oldest (user,
    assistant) pairs are left out, one by one, until the rest fits with the generation prompt;
    if the last user message does not fit alone, ValueError.

    >>> from llm_from_scratch.chat_template import add_chat_tokens
    >>> tok = add_chat_tokens(BPETokenizer().train("some text " * 50, vocab_size=260))
    >>> chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
    ...         {"role": "user", "content": "c"}]
    >>> tok.decode(fit_history(tok, chat, 13))
    '<|user|> a<|end|><|assistant|> b<|end|><|user|> c<|end|><|assistant|>'
    >>> tok.decode(fit_history(tok, chat, 12))
    '<|user|> c<|end|><|assistant|>'
    """
    last = encode_chat(tokenizer, messages[-1:], add_generation_prompt=True)[0]
    if len(last) > budget:
        raise ValueError(f"the message is {len(last)} tokens with its chat markers, more than "
                         f"the {budget} that fit beside the reply")
    # Pairs are encoded apart: markers are ids and contents are encoded on their own, so the
    # pairs' ids joined are exactly the ids of the conversation they make.
    pairs = [encode_chat(tokenizer, messages[i : i + 2])[0] for i in range(0, len(messages) - 1, 2)]
    first, total = len(pairs), len(last)
    while first > 0 and total + len(pairs[first - 1]) <= budget:
        first -= 1
        total += len(pairs[first])
    return [token for pair in pairs[first:] for token in pair] + last


@dataclass
class Chat:
    """A conversation with a chat model: the history, and how replies are generated.

    ``history`` holds whole (user, assistant) pairs; with ``single_turn`` it stays empty.
    """

    model: LanguageModel
    tokenizer: BPETokenizer
    max_new_tokens: int = 32
    sampling: dict = field(default_factory=lambda: {"temperature": 0.0})
    single_turn: bool = True
    generator: torch.Generator | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    @property
    def budget(self) -> int:
        """The most tokens the conversation may take: the context, less the longest reply."""
        return self.model.block_size - self.max_new_tokens

    def context(self, text: str) -> list[int]:
        """The ids to answer ``text`` from; ValueError if it does not fit (see fit_history)."""
        return fit_history(self.tokenizer, [*self.history, {"role": "user", "content": text}],
                           self.budget)

    def reply(self, ids: list[int]) -> Iterator[str]:
        """The reply to the conversation ``ids``, in pieces as its tokens come, unindented."""
        markers = set(chat_token_ids(self.tokenizer).values())
        steps = generate_steps(self.model, torch.tensor([ids]), self.max_new_tokens,
                               eos_id=self.tokenizer.special_tokens[END],
                               generator=self.generator, **self.sampling)
        # <|end|>, or a marker that starts a turn: the reply is over
        reply = itertools.takewhile(lambda step: int(step[0, 0]) not in markers, steps)
        started = False  # the template's space before the text is not part of the reply
        for piece in decode_stream(self.tokenizer, reply):
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                yield piece

    def remember(self, text: str, reply: str) -> None:
        """Add the turn to the history, unless single-turn or the reply is empty."""
        # An empty reply cannot be an assistant turn (the template refuses blank content), and
        # a user turn without its answer would break the alternation: leave both out.
        if not self.single_turn and reply.strip():
            self.history += [{"role": "user", "content": text},
                             {"role": "assistant", "content": reply}]


def say(pieces: Iterator[str]) -> str:
    """Print each piece as it arrives (flushed, so a terminal shows it), then a newline."""
    text = []
    for piece in pieces:
        print(piece, end="", flush=True)
        text.append(piece)
    print(flush=True)
    if not "".join(text).strip():
        print("(the model gave an empty reply)", file=sys.stderr)
    return "".join(text)


def turn(chat: Chat, text: str) -> None:
    """Answer ``text`` and remember the turn; a message that cannot be answered is skipped."""
    try:
        ids = chat.context(text)
    except ValueError as err:  # too long, or text the tokenizer cannot encode
        print(f"error: {err}; message skipped (a shorter one, or a lower --max-new-tokens, "
              "fits)", file=sys.stderr)
        return
    chat.remember(text, say(chat.reply(ids)))


def converse(chat: Chat) -> None:
    """Answer each line read from standard input, until end of input, an empty line or quit."""
    # The "> " prompt and the notes are for a person at a terminal; piped input gets replies.
    prompt = "> " if sys.stdin.isatty() else ""
    if prompt:
        mode = "single-turn: each message starts afresh" if chat.single_turn else "multi-turn"
        print(f"Chatting with the fine-tuned model ({mode}). An empty line, quit or Ctrl-D "
              f"ends; {RESET} forgets the conversation.", file=sys.stderr)
    while True:
        try:
            line = input(prompt)
        except EOFError:
            if prompt:  # end the prompt's line, so the shell's prompt starts a fresh one
                print()
            return
        text = line.strip()  # the model saw requests without surrounding spaces
        if not text or text.lower() in QUIT:
            return
        if text.lower() == RESET:
            chat.history.clear()
            if prompt:
                print("(a new conversation)", file=sys.stderr)
            continue
        turn(chat, text)


def main(argv: list[str] | None = None) -> int:
    """Chat as the command line ``argv`` asks; the exit status (usage errors exit with 2)."""
    p = parser()
    args = p.parse_args(argv)
    check_options(p, args)

    def run() -> None:
        tuned = sft.sft_model(lora_rank=args.lora_rank, progress=True)  # trains on a cache miss
        chat = Chat(tuned.model, tuned.tokenizer, args.max_new_tokens, sampling(args),
                    single_turn=not args.multi_turn, generator=new_generator(args.seed))
        smallest = len(encode_chat(chat.tokenizer, [{"role": "user", "content": "?"}],
                                   add_generation_prompt=True)[0])
        if chat.budget < smallest:
            p.error(f"argument --max-new-tokens: the model reads {chat.model.block_size} "
                    f"tokens; a reply of {args.max_new_tokens} leaves too few for a message")
        if args.message is None:
            converse(chat)
        else:
            try:
                ids = chat.context(args.message.strip())
            except ValueError as err:
                p.error(f"argument --message: {err}")
            say(chat.reply(ids))

    return exit_status(run)


if __name__ == "__main__":
    raise SystemExit(main())
