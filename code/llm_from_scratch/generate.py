"""The command line that writes text: ``python -m llm_from_scratch.generate`` (Lesson 9).

It continues a prompt with the book's model (trained on first use, with a progress bar, then
loaded from the cache) or with the model of a training run (``--checkpoint DIR``, a directory
written by ``python -m llm_from_scratch train --out-dir DIR``), printing the text as it comes.
The sampling options are those of :func:`llm_from_scratch.generation.generate`; ``--beams N``
runs beam search instead; ``--interactive`` reads one prompt per line. Mistakes in the options
are usage errors, reported before any model is trained or loaded.

    python -m llm_from_scratch.generate --prompt "ROMEO:" --temperature 0.8 --top-p 0.95 --seed 1
    python -m llm_from_scratch.generate --checkpoint runs/tiny --beams 4 --max-new-tokens 50

>>> args = parser().parse_args(["--prompt", "ROMEO:", "--top-k", "5"])
>>> args.prompt, sampling_options(args)
('ROMEO:', {'top_k': 5})
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from llm_from_scratch import trained
from llm_from_scratch.checkpoint import RunDir, load_checkpoint
from llm_from_scratch.data import DataUnavailableError, shakespeare_tokens
from llm_from_scratch.generation import beam_search, generate, stream
from llm_from_scratch.model import GPT, BigramLanguageModel, GPTConfig, LanguageModel
from llm_from_scratch.tokenizer import Tokenizer

#: The sampling options: flag -> keyword argument of :func:`~llm_from_scratch.generation.generate`.
SAMPLING_FLAGS = {"--temperature": "temperature", "--top-k": "top_k", "--top-p": "top_p",
                  "--min-p": "min_p", "--repetition-penalty": "repetition_penalty"}

#: What ``--interactive`` stops at, besides the end of input and an empty line.
QUIT = ("quit", "exit")


def _count(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    """The options of ``python -m llm_from_scratch.generate``; ``--help`` lists them."""
    p = argparse.ArgumentParser(
        prog="python -m llm_from_scratch.generate",
        description="Continue a prompt with the book's model (trained on first use, then "
        "cached) or with a training run's model (--checkpoint), printing the text as it comes.",
        epilog="Sampling options left out keep generate()'s defaults (temperature 1, no "
        "filters). A prompt with a newline: --prompt $'ROMEO:\\n' in bash.",
    )
    p.add_argument("--prompt", default="\n",
                   help="the text to continue (default: a newline, the start of a line)")
    p.add_argument("--max-new-tokens", type=_count(0), default=200,
                   help="tokens to add (default: 200)")
    p.add_argument("--checkpoint", metavar="DIR", help="a run directory of `python -m "
                   "llm_from_scratch train` (default: the book's model)")
    p.add_argument("--seed", type=int, help="seed the sampling, for a reproducible text")
    p.add_argument("--interactive", action="store_true", help="read prompts line by line; "
                   "an empty line, 'quit' or end of input stops")
    add_sampling_options(p, temperature="0 is greedy (default: 1)",
                         penalty="> 1 makes tokens already in the text less likely (default: 1)")
    p.add_argument("--beams", type=_count(1), metavar="N", help="beam search with N beams "
                   "instead of sampling (the text comes all at once)")
    return p


def add_sampling_options(p: argparse.ArgumentParser, *, temperature: str, penalty: str) -> None:
    """The options of :data:`SAMPLING_FLAGS`, with the two help texts that differ by command."""
    group = p.add_argument_group("sampling (llm_from_scratch.generation.generate)")
    group.add_argument("--temperature", type=float, help=temperature)
    group.add_argument("--top-k", type=int, help="sample among the k likeliest tokens")
    group.add_argument("--top-p", type=float, help="nucleus sampling: the likeliest tokens "
                       "that together hold this probability, in (0, 1]")
    group.add_argument("--min-p", type=float, help="drop tokens less likely than this "
                       "fraction of the likeliest one's probability, in [0, 1]")
    group.add_argument("--repetition-penalty", type=float, help=penalty)


def check_sampling(p: argparse.ArgumentParser, options: dict) -> None:
    """A usage error naming the flag for any sampling option that ``generate`` refuses."""
    # generate() checks the settings itself; asking it for no tokens of a one-token model
    # checks them now, with its own rules, one flag at a time so the error names the flag.
    probe, start = BigramLanguageModel(1), torch.zeros((1, 1), dtype=torch.long)
    for flag, name in SAMPLING_FLAGS.items():
        if name in options:
            try:
                generate(probe, start, 0, **{name: options[name]})
            except ValueError as err:
                p.error(f"argument {flag}: {err}")


def new_generator(seed: int | None) -> torch.Generator:
    """A generator seeded with ``seed``, or randomly: torch's default seed is the same each run."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def exit_status(run: Callable[[], object]) -> int:
    """Run a command's work; its exit status: 1 if the data is missing, 130 on Ctrl-C, else 0."""
    try:
        run()
    except DataUnavailableError as err:  # the tokenizer or the book's model needs the data
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(flush=True)
        return 130
    return 0


def sampling_options(args: argparse.Namespace) -> dict:
    """The sampling options given on the command line, as keyword arguments of ``generate``."""
    given = {name: getattr(args, name) for name in SAMPLING_FLAGS.values()}
    return {name: value for name, value in given.items() if value is not None}


def check_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors for options that cannot work, before any model is loaded or trained."""
    if not args.prompt and not args.interactive:
        p.error("argument --prompt: give at least one character to continue")
    options = sampling_options(args)
    if args.beams is not None and options:
        flags = ", ".join(f for f, name in SAMPLING_FLAGS.items() if name in options)
        p.error(f"argument --beams: beam search keeps the likeliest tokens; it takes no {flags}")
    check_sampling(p, options)
    if args.checkpoint is not None:
        run = RunDir(Path(args.checkpoint))
        if not run.checkpoint.is_file():
            where = "does not exist" if not run.path.is_dir() else "holds no checkpoint.pt"
            p.error(f"argument --checkpoint: {run.path} {where}; write one with `python -m "
                    f"llm_from_scratch train --out-dir {run.path}`")


def load_run(path: str | Path) -> tuple[LanguageModel, Tokenizer]:
    """The model of a training run's directory, and the tokenizer it was trained with.

    The checkpoint holds the weights and the model's configuration. The tokenizer is rebuilt
    as the training command line built it: it follows from the data, the tokenizer kind (in
    ``result.json`` once the run has finished) and the vocabulary size (the model's).
    """
    run = RunDir(Path(path))
    state = load_checkpoint(run.checkpoint)  # ValueError for a file torch cannot read
    if not isinstance(state.get("model_config"), dict) or "model" not in state:
        raise ValueError(f"{run.checkpoint} holds no GPT (no model configuration or weights)")
    try:
        model = GPT(GPTConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
    except (TypeError, RuntimeError) as err:  # fields or weights of another model version
        raise ValueError(f"{run.checkpoint} does not fit this package's GPT: {err}") from err
    model.eval()
    tokenizer = run_tokenizer(run, model.vocab_size)
    return model, tokenizer


def run_tokenizer(run: RunDir, vocab_size: int) -> Tokenizer:
    """The tokenizer of the run in ``run``, whose model has ``vocab_size`` tokens."""
    kind = None
    if run.result_json.is_file():
        kind = json.loads(run.result_json.read_text()).get("tokenizer")
    if kind is None:  # an unfinished run: a BPE vocabulary holds at least the 256 bytes
        kind = "char" if vocab_size < 257 else "bpe"
    tokenizer = shakespeare_tokens(kind, vocab_size).tokenizer
    if tokenizer.vocab_size != vocab_size:
        raise ValueError(f"the model in {run.path} has {vocab_size} tokens, but the {kind} "
                         f"tokenizer of Tiny Shakespeare has {tokenizer.vocab_size}")
    return tokenizer


def load_model(args: argparse.Namespace) -> tuple[LanguageModel, Tokenizer]:
    """The model and tokenizer that ``args`` asks for: a run's, or the book's."""
    if args.checkpoint is not None:
        return load_run(args.checkpoint)
    book = trained.book_model(progress=True)  # trains (minutes) only when it is not cached
    return book.model, book.tokenizer


def encodable(tokenizer: Tokenizer, prompt: str) -> str | None:
    """Why ``tokenizer`` cannot encode ``prompt`` (unseen characters, say), or None."""
    try:
        tokenizer.encode(prompt)
    except ValueError as err:
        return str(err)
    return None


def continuation(model: LanguageModel, tokenizer: Tokenizer, prompt: str,
                 args: argparse.Namespace, generator: torch.Generator) -> Iterator[str]:
    """The text that continues ``prompt``, in pieces: token by token, or at once for beams."""
    if args.beams is None:
        return stream(model, tokenizer, prompt, max_new_tokens=args.max_new_tokens,
                      generator=generator, **sampling_options(args))
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    out = beam_search(model, idx, args.max_new_tokens, num_beams=args.beams)
    return iter([tokenizer.decode(out[0, idx.size(1):].tolist())])


def write(pieces: Iterator[str]) -> None:
    """Print each piece as it arrives (flushed, so a terminal shows it), then a newline."""
    for piece in pieces:
        print(piece, end="", flush=True)
    print(flush=True)


def interact(model: LanguageModel, tokenizer: Tokenizer, args: argparse.Namespace,
             generator: torch.Generator) -> None:
    """Continue each line read from standard input, until end of input, an empty line or quit."""
    # The "> " prompt is for a person at a terminal; piped input gets the continuations only.
    prompt = "> " if sys.stdin.isatty() else ""
    while True:
        try:
            line = input(prompt)
        except EOFError:
            if prompt:  # end the prompt's line, so the shell's prompt starts a fresh one
                print()
            return
        if not line.strip() or line.strip().lower() in QUIT:
            return
        if problem := encodable(tokenizer, line):  # this line only: the next may encode
            print(f"error: the model's tokenizer cannot encode this line: {problem}",
                  file=sys.stderr)
            continue
        write(continuation(model, tokenizer, line, args, generator))


def main(argv: list[str] | None = None) -> int:
    """Generate as the command line ``argv`` asks; the exit status (usage errors exit with 2)."""
    p = parser()
    args = p.parse_args(argv)
    check_options(p, args)

    def run() -> None:
        try:
            model, tokenizer = load_model(args)
        except ValueError as err:  # a checkpoint torch cannot read, or one of another model
            if args.checkpoint is None:
                raise
            p.error(f"argument --checkpoint: {err}")
        if not args.interactive and (problem := encodable(tokenizer, args.prompt)):
            p.error(f"argument --prompt: the model's tokenizer cannot encode it: {problem}")
        generator = new_generator(args.seed)
        if args.interactive:
            interact(model, tokenizer, args, generator)
        else:
            print(args.prompt, end="", flush=True)
            write(continuation(model, tokenizer, args.prompt, args, generator))

    return exit_status(run)


if __name__ == "__main__":
    raise SystemExit(main())
