"""llm_from_scratch.tasks: the synthetic instruction dataset and its checker.

The answers are checked against a table written by hand, not against the module's own solver,
and every generated task is checked to be answerable, unambiguous and short.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from llm_from_scratch.data import tiny_shakespeare, train_val_split
from llm_from_scratch.tasks import (
    COURTESY,
    FAMILIES,
    INSTRUCTIONS,
    NAMES,
    NEW_PHRASINGS,
    OPENERS,
    PHRASINGS,
    TRAINING_SHARES,
    WORDS,
    Task,
    accuracy,
    answer,
    make_tasks,
    new_phrasing_tasks,
    score,
    task_split,
)
from llm_from_scratch.tokenizer import GPT2_END_OF_TEXT, BPETokenizer


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return make_tasks(6000, seed=0)


def matching_phrasings(prompt: str) -> list[tuple[str, re.Match]]:
    """Each phrasing of any family that ``prompt`` fills in, with its match (this file's own
    reading of PHRASINGS, independent of the module's parser)."""
    found = []
    for phrasing in (p for ps in PHRASINGS.values() for p in ps):
        pattern = (re.escape(phrasing).replace(r"\{words\}", "(?P<words>.+)")
                   .replace(r"\{a\}", "[0-9]+").replace(r"\{b\}", "[0-9]+"))
        if match := re.fullmatch(pattern, prompt.strip()):
            found.append((phrasing, match))
    return found


# ---- the families and the words ----------------------------------------------------------


def test_families_and_phrasings():
    assert FAMILIES == ("repeat", "last_word", "count_words", "larger", "first_word", "add")
    assert tuple(PHRASINGS) == FAMILIES
    for family, phrasings in PHRASINGS.items():
        assert len(phrasings) == len(OPENERS) * len(INSTRUCTIONS[family]) + 1, family
        assert phrasings[-1] == NEW_PHRASINGS[family], family
        assert len(set(phrasings)) == len(phrasings), family
        slots = set(re.findall(r"\{\w+\}", " ".join(phrasings)))
        assert slots in ({"{words}"}, {"{a}", "{b}"}), family


def test_words_are_shakespeares_short_and_distinct():
    assert 80 <= len(WORDS) <= 250
    assert len(set(WORDS)) == len(WORDS)
    assert all(re.fullmatch(r"[A-Za-z]{1,8}", w) for w in WORDS)
    assert {"Romeo", "Juliet", "Verona"} <= set(NAMES) <= set(WORDS)
    in_the_plays = set(re.findall(r"[A-Za-z]+", tiny_shakespeare()))
    assert [w for w in WORDS if w not in in_the_plays] == []


def test_the_books_tokenizer_keeps_the_common_words_whole_and_splits_the_names():
    tokenizer = BPETokenizer().train(train_val_split(tiny_shakespeare())[0], vocab_size=1024,
                                     special_tokens=[GPT2_END_OF_TEXT])
    pieces = {w: len(tokenizer.encode(" " + w)) for w in WORDS}
    assert [w for w in WORDS if w not in NAMES and pieces[w] != 1] == []
    assert [w for w in NAMES if pieces[w] == 1] == []


# ---- answers -------------------------------------------------------------------------------

# family, prompt, answer: every instruction, every opener and every new phrasing, by hand
HAND_WORKED = [
    ("repeat", "Repeat after me: fair Verona", "fair Verona"),
    ("repeat", "Good sir, say back to me: Romeo", "Romeo"),
    ("repeat", "Prithee, speak these words again: good night sweet", "good night sweet"),
    ("repeat", "Now, repeat these words: thou art", "thou art"),
    ("repeat", "I pray thee, say these words again: love", "love"),
    ("repeat", "Pray, repeat this line for me: fair Verona", "fair Verona"),
    ("repeat", "Repeat after me: fair   Verona ", "fair Verona"),
    ("last_word", "What is the last word of this line: O Romeo Romeo wherefore art thou", "thou"),
    ("last_word", "Good sir, tell me the final word: parting is such sweet sorrow", "sorrow"),
    ("last_word", "Which word doth end this line? two households both alike", "alike"),
    ("last_word", "Prithee, say the last word: good night", "night"),
    ("last_word", "Name the final word of this line: Juliet", "Juliet"),
    ("last_word", "Which is the last word here? sweet Verona fair", "fair"),
    ("count_words", "How many words are in this line: fair Verona where we lay", "5"),
    ("count_words", "I pray thee, count the words: Juliet", "1"),
    ("count_words", "How many words hath this line? a b c d e f g h i j k l", "12"),
    ("count_words", "Now, count these words: good night", "2"),
    ("count_words", "Tell me how many words: thou art sweet", "3"),
    ("count_words", "Count me the words of this line: O Romeo Romeo", "3"),
    ("larger", "Which is larger, 57 or 23?", "57"),
    ("larger", "Of 8 and 80, which is the greater?", "80"),
    ("larger", "Good sir, name the larger number: 0 or 99", "99"),
    ("larger", "Which number is greater: 14 or 41?", "41"),
    ("larger", "Tell me the larger of 5 and 3.", "5"),
    ("larger", "Which is larger, 7 or 7?", "7"),
    ("larger", "Which is the greater number, 12 or 21?", "21"),
    ("first_word", "What is the first word of this line: fair Verona", "fair"),
    ("first_word", "Tell me the first word: to be or not", "to"),
    ("first_word", "Which word doth begin this line? sweet sorrow", "sweet"),
    ("first_word", "Prithee, say the first word: good night sweet", "good"),
    ("first_word", "Name the first word of this line: thou", "thou"),
    ("first_word", "Which is the first word here? O Romeo", "O"),
    ("add", "What is 7 plus 12?", "19"),  # any numbers parse
    ("add", "Add 0 and 0.", "0"),
    ("add", "What is the sum of 19 and 19?", "38"),
    ("add", "Tell me the sum of 4 and 5.", "9"),
    ("add", "Add 3 to 11.", "14"),
    ("add", "How much is 6 plus 7?", "13"),
    ("add", "  What is 250 plus 5?\n", "255"),
]


def test_every_instruction_opener_and_new_phrasing_is_worked_by_hand():
    worked = {p for _, prompt, _ in HAND_WORKED for p, _ in matching_phrasings(prompt)}
    instructions = {i for family in FAMILIES for i in INSTRUCTIONS[family]}
    assert {i for i in instructions if any(w.lower().endswith(i) for w in worked)} == instructions
    assert {o for o in OPENERS if o and any(w.startswith(o) for w in worked)} == set(OPENERS) - {""}
    assert set(NEW_PHRASINGS.values()) <= worked


@pytest.mark.parametrize("family, prompt, expected", HAND_WORKED)
def test_answers_match_the_hand_worked_ones(family, prompt, expected):
    assert answer(family, prompt) == expected
    assert score(family, prompt, expected) == 1.0


def test_generated_tasks_score_one_with_their_answer_and_zero_perturbed(tasks):
    for t in tasks:
        assert score(t.family, t.prompt, t.answer) == 1.0, t
        wrong = [t.answer + " fair", t.answer[:-1], "fair " + t.answer]
        if t.answer.isdigit():
            wrong += [str(int(t.answer) + 1), "0" + t.answer]
        else:
            wrong += [t.answer.swapcase(), t.answer.replace(" ", "  "), t.answer.replace(" ", "")]
        for reply in wrong:
            if reply != t.answer:  # "Nurse".replace(" ", "") is unchanged
                assert score(t.family, t.prompt, reply) == 0.0, (t, reply)


def test_word_families_need_the_request_not_just_its_shape():
    line = "fair sweet Juliet"
    replies = {
        family: answer(family, PHRASINGS[family][0].format(words=line))
        for family in ("repeat", "last_word", "count_words", "first_word")
    }
    assert replies == {"repeat": "fair sweet Juliet", "last_word": "Juliet",
                       "count_words": "3", "first_word": "fair"}
    assert answer("larger", "Which is larger, 3 or 4?") != answer("add", "What is 3 plus 4?")


def test_each_prompt_parses_for_its_own_family_only(tasks):
    for t in tasks[:600]:
        for family in FAMILIES:
            if family != t.family:
                with pytest.raises(ValueError, match=f"not a {family} prompt"):
                    answer(family, t.prompt)


def test_whitespace_around_the_reply_is_ignored_and_nothing_else(tasks):
    for t in tasks[:300]:
        assert score(t.family, t.prompt, f"  \n{t.answer} \t\n") == 1.0
        assert score(t.family, f" {t.prompt}\n", t.answer) == 1.0
    assert score("repeat", "Repeat after me: fair Verona", "fair Verona.") == 0.0
    assert score("repeat", "Repeat after me: fair Verona", "Fair Verona") == 0.0
    assert score("add", "Add 2 and 3.", "5.0") == 0.0


# ---- the generated tasks -------------------------------------------------------------------


def test_generated_tasks_follow_their_family(tasks):
    used: Counter[str] = Counter()
    word_counts = {"repeat": (1, 2), "last_word": (3, 7), "count_words": (1, 4),
                   "first_word": (3, 7)}
    lengths: dict[str, set[int]] = {family: set() for family in word_counts}
    for t in tasks:
        [(phrasing, match)] = matching_phrasings(t.prompt)  # one phrasing, and of its family
        assert phrasing in PHRASINGS[t.family], t
        used[phrasing] += 1
        numbers = [int(n) for n in re.findall(r"[0-9]+", t.prompt)]
        if t.family in word_counts:
            line = match["words"].split()
            lengths[t.family].add(len(line))
            assert set(line) <= set(WORDS) and len(set(line)) == len(line), t
        elif t.family == "larger":
            assert len(numbers) == 2 and numbers[0] != numbers[1] and max(numbers) < 100, t
        else:
            assert len(numbers) == 2 and max(numbers) < 20, t
    assert {family: (min(n), max(n)) for family, n in lengths.items()} == word_counts
    assert min(used[p] for ps in PHRASINGS.values() for p in ps[:-1]) > 10, used
    assert not any(used[p] for p in NEW_PHRASINGS.values())


def test_same_seed_same_tasks_other_seed_other_tasks():
    assert make_tasks(300, seed=3) == make_tasks(300, seed=3)
    assert make_tasks(300, seed=3) != make_tasks(300, seed=4)
    assert make_tasks(50, seed=-7, families=["add"]) == make_tasks(50, seed=-7, families=["add"])
    assert task_split(100, 30, seed=5) == task_split(100, 30, seed=5)
    assert task_split(100, 30, seed=5) != task_split(100, 30, seed=6)
    assert task_split(100, 30) == task_split(100, 30, seed=0)


def test_a_seed_gives_these_tasks():
    # pinned, so that a change to the generator (which changes every fine-tuning run) shows
    assert make_tasks(3, seed=0) == [
        Task("repeat", "Say back to me: hath thee", "hath thee"),
        Task("count_words", "Good sir, how many words hath this line? thou take mine", "3"),
        Task("last_word", "Prithee, tell me the final word: grace hear time lie good eyes Angelo",
             "Angelo"),
    ]


@pytest.mark.parametrize("n", [0, 1, 5, 6, 100, 601])
def test_families_are_balanced_and_shuffled(n):
    counts = Counter(t.family for t in make_tasks(n, seed=1))
    assert sum(counts.values()) == n
    assert max(counts.values(), default=0) - min(counts.get(f, 0) for f in FAMILIES) <= 1
    some = make_tasks(n, seed=1, families=["larger", "add"])
    assert {t.family for t in some} <= {"larger", "add"}
    assert abs(sum(t.family == "add" for t in some) * 2 - n) <= 1
    if n >= 100:
        cycled = [FAMILIES[i % len(FAMILIES)] for i in range(n)]
        assert [t.family for t in make_tasks(n, seed=1)] != cycled


def test_the_split_holds_out_distinct_unseen_prompts():
    train, test = task_split(3000, 600, seed=2)
    assert len(train) == 3000 and len(test) == 600
    assert len({t.prompt for t in test}) == 600
    assert {t.prompt for t in test}.isdisjoint(t.prompt for t in train)
    held_out = Counter(t.family for t in test)
    assert set(held_out) == set(FAMILIES) and max(held_out.values()) - min(held_out.values()) <= 1
    # training follows TRAINING_SHARES: 3000 tasks in 8 shares, 375 each
    trained = Counter(t.family for t in train)
    assert trained == {f: 375 * TRAINING_SHARES[f] for f in FAMILIES}
    # "add" has only 2,500 prompts: a large held-out set leaves training fewer of them
    train, test = task_split(3000, 6 * 2450, seed=2)
    add_train = {t.prompt for t in train if t.family == "add"}
    assert add_train.isdisjoint(t.prompt for t in test) and 0 < len(add_train) <= 50


def test_prompt_and_answer_fit_in_a_small_context(tasks):
    longest = max(tasks, key=lambda t: len(t.prompt) + len(t.answer))
    assert len(longest.prompt) + len(longest.answer) < 120, longest
    assert max(len(t.answer) for t in tasks) <= 30


def test_the_text_is_ascii_and_round_trips_through_the_books_bpe(tasks):
    train_text = train_val_split(tiny_shakespeare())[0]
    tok = BPETokenizer().train(train_text, vocab_size=1024, special_tokens=[GPT2_END_OF_TEXT])
    texts = [f"{t.prompt}\n{t.answer}" for t in tasks[:2000]]
    texts += [p for ps in PHRASINGS.values() for p in ps] + list(WORDS)
    texts += [str(n) for n in range(200)]
    assert all(text.isascii() for text in texts)
    for text in texts:
        ids = tok.encode(text)
        assert tok.decode(ids) == text, text
        assert max(ids) < 1024 and not set(ids) & set(tok.special_tokens.values()), text
        assert len(ids) <= 64, text  # leaves room in 128 tokens for a chat template


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [answer, lambda family, prompt: score(family, prompt, "")])
def test_an_unknown_family_names_the_valid_ones(function):
    with pytest.raises(ValueError, match=r"task must be one of \('repeat', 'last_word'.*'add'\)"):
        function("sonnet", "Repeat after me: fair Verona")


@pytest.mark.parametrize(
    "family, prompt",
    [
        ("repeat", "Reverse these words: fair Verona"),
        ("repeat", "Repeat after me:"),
        ("repeat", "Repeat after me:   "),
        ("repeat", "Repeat after me: 42"),
        ("repeat", "Repeat after me: fair, Verona"),
        ("repeat", "Repeat after me: caf\u00e9"),
        ("repeat", "repeat after me: fair Verona"),
        ("last_word", "What is the last word of this line fair Verona"),
        ("count_words", ""),
        ("larger", "Which is larger, 57 or?"),
        ("larger", "Which is larger, 57 or 23"),
        ("larger", "Which is larger, 5.7 or 23?"),
        ("add", "What is -3 plus 4?"),
        ("add", "What is \u0663 plus 4?"),  # an Arabic-Indic three: a digit, but not ASCII
        ("add", "What is seven plus 4?"),
        ("first_word", "Tell me the first word: fair Verona?"),
    ],
)
def test_a_prompt_that_does_not_parse_is_an_error(family, prompt):
    with pytest.raises(ValueError, match=family):
        answer(family, prompt)
    with pytest.raises(ValueError, match=family):
        score(family, prompt, "fair Verona")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_tasks(-1, seed=0), r"n must be an int >= 0, got -1"),
        (lambda: make_tasks(2.0, seed=0), r"n must be an int >= 0, got 2\.0"),
        (lambda: make_tasks(True, seed=0), r"n must be an int >= 0, got True"),
        (lambda: make_tasks(3, seed="0"), r"seed must be an int"),
        (lambda: make_tasks(3, seed=1.5), r"seed must be an int"),
        (lambda: make_tasks(3, seed=None), r"seed must be an int"),
        (lambda: make_tasks(3, seed=True), r"seed must be an int"),
        (lambda: make_tasks(3, seed=0, families=["sonnet"]), r"families must .*'repeat'"),
        (lambda: make_tasks(3, seed=0, families=[]), r"families must be a non-empty"),
        (lambda: make_tasks(3, seed=0, families="add"), r"families must .*'add'"),
        (lambda: make_tasks(3, seed=0, families=["add", "add"]), r"families must .* distinct"),
        (lambda: task_split(-1, 3), r"n_train must be an int >= 0, got -1"),
        (lambda: task_split(3, "3"), r"n_test must be an int >= 0, got '3'"),
        (lambda: task_split(3, 3, seed=0.5), r"seed must be an int"),
        (lambda: task_split(0, 6 * 10_001), r"n_test is too large: add"),
    ],
)
def test_bad_arguments_name_the_argument_and_its_range(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- accuracy ------------------------------------------------------------------------------


def test_accuracy_per_family_and_overall():
    some = make_tasks(12, seed=9)
    assert accuracy(some, [t.answer for t in some]) == {**dict.fromkeys(FAMILIES, 1.0), "all": 1.0}
    # right on the first of each family's two tasks only, and on every "add"
    firsts = {t.family: t for t in reversed(some)}
    replies = [t.answer if firsts[t.family] is t or t.family == "add" else "nay" for t in some]
    result = accuracy(some, replies)
    assert result == {**dict.fromkeys(FAMILIES, 0.5), "add": 1.0, "all": 7 / 12}
    assert list(result) == [*FAMILIES, "all"]
    only_add = [t for t in some if t.family == "add"]
    assert accuracy(only_add, [" " + t.answer for t in only_add]) == {"add": 1.0, "all": 1.0}
    # "all" is over tasks, not the mean of the families' accuracies
    lopsided = make_tasks(3, seed=0, families=["add"]) + make_tasks(1, seed=0, families=["repeat"])
    replies = [t.answer if t.family == "add" else "nay" for t in lopsided]
    assert accuracy(lopsided, replies) == {"repeat": 0.0, "add": 1.0, "all": 0.75}


def test_accuracy_rejects_mismatched_or_empty_input():
    some = make_tasks(3, seed=0)
    with pytest.raises(ValueError, match="replies must have one reply per task: 2 replies"):
        accuracy(some, ["a", "b"])
    with pytest.raises(ValueError, match="tasks must not be empty"):
        accuracy([], [])


# ---- the courtesy and the new phrasings ------------------------------------------------------


def test_one_closing_courtesy_is_ignored_and_nothing_else():
    prompt = "Repeat after me: fair Verona"
    assert score("repeat", prompt, "fair Verona" + COURTESY) == 1.0
    assert score("repeat", prompt, " fair Verona, my lord \n") == 1.0
    for reply in ("fair Verona, my lord, my lord", "fair Verona my lord", "my lord, fair Verona",
                  ", my lord", "fair Verona, my lady"):
        assert score("repeat", prompt, reply) == 0.0, reply
    assert score("add", "What is 7 plus 12?", "19, my lord") == 1.0


def test_new_phrasings_are_never_generated_for_training():
    train, test = task_split(3000, 300, seed=0)
    new = new_phrasing_tasks(300, seed=1)
    assert len({t.prompt for t in new}) == 300
    assert Counter(t.family for t in new) == Counter({f: 50 for f in FAMILIES})
    for t in new:
        assert [p for p, _ in matching_phrasings(t.prompt)] == [NEW_PHRASINGS[t.family]], t
        assert score(t.family, t.prompt, t.answer) == 1.0
    used = {p for t in train + test for p, _ in matching_phrasings(t.prompt)}
    assert used.isdisjoint(NEW_PHRASINGS.values())
    assert len(used) == sum(len(p) - 1 for p in PHRASINGS.values())  # every other one is used


def test_new_phrasings_of_chosen_families_and_no_more_prompts_than_a_family_has():
    counts = new_phrasing_tasks(400, seed=2, families=["count_words"])
    assert {t.family for t in counts} == {"count_words"} and len({t.prompt for t in counts}) == 400
    sums = new_phrasing_tasks(100, seed=0, families=["add"])  # every one-digit sum, once
    assert len({t.prompt for t in sums}) == 100
    with pytest.raises(ValueError, match="n is too large: add"):
        new_phrasing_tasks(101, seed=0, families=["add"])
    with pytest.raises(ValueError, match="families must"):
        new_phrasing_tasks(3, seed=0, families=["sonnet"])
