"""A seeded, synthetic instruction dataset whose answers a program can check.

Each task is a request in one of a few *families* ("repeat these words", "which number is
larger") and a short, unique answer. The answer is never looked up: :func:`answer` parses the
request and computes it, so :func:`score` can check a model's reply to any prompt of a family,
generated here or written by hand. Each family has 25 phrasings (an opener such as "Prithee,"
before one of five instructions) and one more, :data:`NEW_PHRASINGS`, that no generated
training task uses. Families share the shapes of their requests (a line of words, two
numbers), so a model has to read the request, not just its shape, to answer well. Everything
is ASCII, made of words from the plays, and short enough that a prompt and its answer fit in a
128-token context.

>>> train, test = task_split(600, 60, seed=0)
>>> len(train), len(test), {t.prompt for t in test}.isdisjoint(t.prompt for t in train)
(600, 60, True)
>>> answer("first_word", "Tell me the first word: fair Verona sweet")
'fair'
>>> score("add", "What is 7 plus 5?", " 12\\n")
1.0
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: The task families, in the order that generation cycles through them.
FAMILIES: tuple[str, ...] = (
    "repeat",
    "last_word",
    "count_words",
    "larger",
    "first_word",
    "add",
)

# A request is an opener and an instruction (``{words}`` is a line of words, ``{a}`` and ``{b}``
# are numbers). Across families the instructions differ, so a prompt parses one way only.
#: What a request may begin with; the instruction is capitalized when it begins the request.
OPENERS: tuple[str, ...] = ("", "Prithee, ", "Good sir, ", "I pray thee, ", "Now, ")
#: Each family's instructions. Every opener goes before every one of them in training.
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "repeat": (
        "repeat after me: {words}",
        "say back to me: {words}",
        "speak these words again: {words}",
        "repeat these words: {words}",
        "say these words again: {words}",
    ),
    "last_word": (
        "what is the last word of this line: {words}",
        "tell me the final word: {words}",
        "which word doth end this line? {words}",
        "say the last word: {words}",
        "name the final word of this line: {words}",
    ),
    "count_words": (
        "how many words are in this line: {words}",
        "count the words: {words}",
        "how many words hath this line? {words}",
        "count these words: {words}",
        "tell me how many words: {words}",
    ),
    "larger": (
        "which is larger, {a} or {b}?",
        "of {a} and {b}, which is the greater?",
        "name the larger number: {a} or {b}",
        "which number is greater: {a} or {b}?",
        "tell me the larger of {a} and {b}.",
    ),
    "first_word": (
        "what is the first word of this line: {words}",
        "tell me the first word: {words}",
        "which word doth begin this line? {words}",
        "say the first word: {words}",
        "name the first word of this line: {words}",
    ),
    "add": (
        "what is {a} plus {b}?",
        "add {a} and {b}.",
        "what is the sum of {a} and {b}?",
        "tell me the sum of {a} and {b}.",
        "add {a} to {b}.",
    ),
}
#: One phrasing per family that no training request uses: a model that answers it has learned
#: to follow the instruction's words, not to fill in a template it has seen.
NEW_PHRASINGS: dict[str, str] = {
    "repeat": "Pray, repeat this line for me: {words}",
    "last_word": "Which is the last word here? {words}",
    "count_words": "Count me the words of this line: {words}",
    "larger": "Which is the greater number, {a} or {b}?",
    "first_word": "Which is the first word here? {words}",
    "add": "How much is {a} plus {b}?",
}


def _phrasing(opener: str, instruction: str) -> str:
    return opener + instruction if opener else instruction[0].upper() + instruction[1:]


#: The phrasings of each family's requests: every opener with every instruction (these train),
#: then the family's :data:`NEW_PHRASINGS` entry, last.
PHRASINGS: dict[str, tuple[str, ...]] = {
    family: tuple(_phrasing(o, i) for o in OPENERS for i in INSTRUCTIONS[family])
    + (NEW_PHRASINGS[family],)
    for family in FAMILIES
}

#: Names from the plays, which the book's BPE tokenizer splits into pieces.
NAMES: tuple[str, ...] = tuple(
    """
    Romeo Juliet Verona Padua Mantua York Richard Henry Clarence Angelo Isabella Tybalt Paris
    Capulet Montague
    """.split()
)
#: Words of Tiny Shakespeare, at most eight letters long: common ones that the book's BPE
#: tokenizer keeps whole (one token each, so copying a word is copying a token), then NAMES.
WORDS: tuple[str, ...] = tuple(
    """
    love heart blood night day king queen lord prince crown death life time world heaven
    fear honour grace war friend father mother brother son wife child man gentle noble fair
    sweet true good poor old speak hear see look come go stay die live give take leave tell
    know think pray house word name hand head arm soul Rome Warwick Edward thou thee thy art
    hath doth dead eyes friends great lords men sir mine bear long mad new lie stand
    """.split()
) + NAMES

# How many words each word family's generated line has (parsing accepts any number). A model
# of the book's size copies a line of two words reliably, of three only a third of the time.
_WORD_COUNTS = {"repeat": (1, 2), "last_word": (3, 7), "count_words": (1, 4),
                "first_word": (3, 7)}
#: A courteous reply closes with this; the answer is what comes before it.
COURTESY = ", my lord"
_LARGER_BELOW = 100  # "larger" draws two different numbers below this
_ADD_BELOW = 10  # "add" draws two one-digit numbers: a table of 100 sums to learn

_WORD = re.compile(r"[A-Za-z]+")
_SLOTS = {"{words}": r"(?P<words>\S.*)", "{a}": r"(?P<a>[0-9]+)", "{b}": r"(?P<b>[0-9]+)"}


@dataclass(frozen=True)
class Task:
    """One request and its answer.

    >>> Task("add", "Add 2 and 3.", "5").answer
    '5'
    """

    family: str
    prompt: str
    answer: str


def _compile(phrasing: str) -> re.Pattern[str]:
    """The regular expression that matches ``phrasing`` with its slots filled."""
    parts = re.split(r"(\{words\}|\{a\}|\{b\})", phrasing)
    return re.compile("".join(_SLOTS.get(part, re.escape(part)) for part in parts))


_PATTERNS = {family: tuple(map(_compile, PHRASINGS[family])) for family in FAMILIES}


def _check_family(task: str) -> None:
    if task not in FAMILIES:
        raise ValueError(f"task must be one of {FAMILIES}, got {task!r}")


def _parse(task: str, prompt: str) -> tuple[list[str], list[int]]:
    """The words and the numbers of a ``task`` prompt; ValueError if it is not one."""
    _check_family(task)
    for pattern in _PATTERNS[task]:
        match = pattern.fullmatch(prompt.strip())
        if match is None:
            continue
        slots = match.groupdict()
        words = slots.get("words", "").split()
        if not all(_WORD.fullmatch(word) for word in words):
            raise ValueError(f"{task} prompt must end in words of letters, got {prompt!r}")
        return words, [int(slots[name]) for name in ("a", "b") if name in slots]
    raise ValueError(f"not a {task} prompt (phrasings: {PHRASINGS[task]}): {prompt!r}")


_SOLVERS: dict[str, Callable[[list[str], list[int]], str]] = {
    "repeat": lambda words, _: " ".join(words),
    "last_word": lambda words, _: words[-1],
    "count_words": lambda words, _: str(len(words)),
    "larger": lambda _, numbers: str(max(numbers)),
    "first_word": lambda words, _: words[0],
    "add": lambda _, numbers: str(sum(numbers)),
}


def answer(task: str, prompt: str) -> str:
    """The correct answer to ``prompt``, a request of family ``task``, computed from the prompt.

    Words in answers are separated by single spaces; numbers are written in decimal digits.

    >>> answer("larger", "Of 57 and 23, which is the greater?")
    '57'
    >>> answer("count_words", "I pray thee, count the words: O Romeo Romeo")
    '3'
    """
    words, numbers = _parse(task, prompt)  # first, as it checks that ``task`` is a family
    return _SOLVERS[task](words, numbers)


def strip_courtesy(reply: str) -> str:
    """``reply`` without surrounding whitespace and without one closing :data:`COURTESY`.

    >>> strip_courtesy(" fair Verona, my lord")
    'fair Verona'
    """
    reply = reply.strip()
    return reply.removesuffix(COURTESY).rstrip() if reply.endswith(COURTESY) else reply


def score(task: str, prompt: str, reply: str) -> float:
    """1.0 if ``reply`` is the answer to ``prompt``, else 0.0.

    Surrounding whitespace and one closing :data:`COURTESY` (a manner of speaking, not part of
    the answer) are ignored; the comparison is otherwise exact, capitals included.

    >>> score("repeat", "Repeat after me: fair Verona", "fair Verona, my lord")
    1.0

    >>> score("last_word", "Which word doth end this line? fair sweet Juliet", "Juliet ")
    1.0
    >>> score("last_word", "Which word doth end this line? fair sweet Juliet", "juliet")
    0.0
    """
    return 1.0 if strip_courtesy(reply) == answer(task, prompt) else 0.0


def _make_task(family: str, rng: random.Random, new_phrasing: bool = False) -> Task:
    """One task of ``family``, drawn with ``rng``: in a training phrasing, or the new one."""
    phrasing = NEW_PHRASINGS[family] if new_phrasing else rng.choice(PHRASINGS[family][:-1])
    if family in _WORD_COUNTS:
        words = " ".join(rng.sample(WORDS, rng.randint(*_WORD_COUNTS[family])))
        prompt = phrasing.format(words=words)
    elif family == "larger":
        a, b = rng.sample(range(_LARGER_BELOW), 2)  # different, so "the larger" is clear
        prompt = phrasing.format(a=a, b=b)
    else:
        prompt = phrasing.format(a=rng.randrange(_ADD_BELOW), b=rng.randrange(_ADD_BELOW))
    return Task(family, prompt, answer(family, prompt))


def _check_count(name: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be an int >= 0, got {n!r}")


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int (any value), got {seed!r}")


def _check_families(families: Sequence[str] | None) -> tuple[str, ...]:
    if families is None:
        return FAMILIES
    # a lone string is a sequence of letters, never what was meant
    chosen = (families,) if isinstance(families, str) else tuple(families)
    if isinstance(families, str) or not chosen or len(set(chosen)) < len(chosen) or any(
        family not in FAMILIES for family in chosen
    ):
        raise ValueError(
            f"families must be a non-empty list of distinct names from {FAMILIES}, "
            f"got {families!r}"
        )
    return chosen


#: How many training demonstrations each family gets, relative to the others. Copying a line
#: whose first word is a name of several tokens, and the table of sums, are what a model of the
#: book's size learns slowest, so those two families get twice the share. Held-out sets stay
#: balanced, one family as many requests as another.
TRAINING_SHARES: dict[str, int] = {"repeat": 2, "last_word": 1, "count_words": 1, "larger": 1,
                                   "first_word": 1, "add": 2}
_TRAINING_CYCLE = FAMILIES + tuple(f for f in FAMILIES for _ in range(TRAINING_SHARES[f] - 1))


def _balanced(n: int, families: tuple[str, ...], rng: random.Random) -> list[str]:
    """``n`` family names, each family within one of the others' counts, in a random order."""
    order = [families[i % len(families)] for i in range(n)]
    rng.shuffle(order)
    return order


def make_tasks(n: int, *, seed: int, families: Sequence[str] | None = None) -> list[Task]:
    """``n`` tasks, the families (default: all of :data:`FAMILIES`) balanced, shuffled.

    The same ``seed`` gives the same tasks; prompts may repeat (see :func:`task_split`).

    >>> tasks = make_tasks(4, seed=0, families=["add", "larger"])
    >>> sorted(t.family for t in tasks)
    ['add', 'add', 'larger', 'larger']
    >>> all(score(t.family, t.prompt, t.answer) == 1.0 for t in tasks)
    True
    """
    _check_count("n", n)
    _check_seed(seed)
    chosen = _check_families(families)
    rng = random.Random(seed)
    return [_make_task(family, rng) for family in _balanced(n, chosen, rng)]


def _draw(family: str, rng: random.Random, avoid: set[str], what: str,
          new_phrasing: bool = False) -> Task:
    """A task of ``family`` whose prompt is not in ``avoid``."""
    for _ in range(10_000):
        task = _make_task(family, rng, new_phrasing)
        if task.prompt not in avoid:
            return task
    raise ValueError(f"{what} is too large: {family} has too few distinct prompts left")


def task_split(n_train: int, n_test: int, *, seed: int = 0) -> tuple[list[Task], list[Task]]:
    """``n_train`` training tasks, families in the proportions of :data:`TRAINING_SHARES`, and
    ``n_test`` held-out ones, families balanced.

    The held-out prompts are distinct, and none of them occurs in the training tasks, which
    may repeat a prompt (the smallest family, "add", has 2,500 prompts).

    >>> train, test = task_split(30, 12, seed=1)
    >>> train == task_split(30, 12, seed=1)[0], len({t.prompt for t in test})
    (True, 12)
    """
    _check_count("n_train", n_train)
    _check_count("n_test", n_test)
    _check_seed(seed)
    rng = random.Random(seed)
    held_out: set[str] = set()
    test = []
    for family in _balanced(n_test, FAMILIES, rng):
        test.append(_draw(family, rng, held_out, "n_test"))
        held_out.add(test[-1].prompt)
    # training may repeat a prompt, so it runs short only where the held-out set took them all
    train = [_draw(family, rng, held_out, "n_test")
             for family in _balanced(n_train, _TRAINING_CYCLE, rng)]
    return train, test


def new_phrasing_tasks(n: int, *, seed: int = 0, families: Sequence[str] | None = None
                       ) -> list[Task]:
    """``n`` tasks with distinct prompts, each in its family's :data:`NEW_PHRASINGS` entry, the
    families (default: all of :data:`FAMILIES`) balanced.

    No training task uses these phrasings, so they measure whether a model follows the words
    of an instruction it has never seen in that form. A family has as many of these prompts as
    its slots allow ("add": 100), and ValueError says so when ``n`` asks for more.

    >>> tasks = new_phrasing_tasks(6, seed=0)
    >>> all(t.prompt.startswith(NEW_PHRASINGS[t.family].split("{")[0]) for t in tasks)
    True
    >>> {t.family for t in new_phrasing_tasks(3, seed=0, families=["count_words"])}
    {'count_words'}
    """
    _check_count("n", n)
    _check_seed(seed)
    chosen = _check_families(families)
    rng = random.Random(seed)
    seen: set[str] = set()
    tasks = []
    for family in _balanced(n, chosen, rng):
        tasks.append(_draw(family, rng, seen, "n", new_phrasing=True))
        seen.add(tasks[-1].prompt)
    return tasks


def accuracy(tasks: Sequence[Task], replies: Sequence[str]) -> dict[str, float]:
    """The mean :func:`score` of ``replies`` per family present in ``tasks``, and over "all".

    >>> tasks = make_tasks(4, seed=0, families=["add", "repeat"])
    >>> accuracy(tasks, [t.answer if t.family == "add" else "nay" for t in tasks])
    {'repeat': 0.0, 'add': 1.0, 'all': 0.5}
    """
    if len(tasks) != len(replies):
        raise ValueError(
            f"replies must have one reply per task: {len(replies)} replies, {len(tasks)} tasks"
        )
    if not tasks:
        raise ValueError("tasks must not be empty: the accuracy of no tasks is undefined")
    scores: dict[str, list[float]] = {family: [] for family in FAMILIES}
    for task, reply in zip(tasks, replies, strict=True):
        scores[task.family].append(score(task.family, task.prompt, reply))
    result = {family: sum(s) / len(s) for family, s in scores.items() if s}
    result["all"] = sum(map(sum, scores.values())) / len(tasks)
    return result
