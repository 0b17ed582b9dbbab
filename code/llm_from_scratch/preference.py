"""What "better" means, as a program: the judge, sampled replies, preference pairs (Lesson 10).

:func:`judge` grades a reply to a task of :mod:`llm_from_scratch.tasks` between 0 and 1:
mostly what it says (correct first, then the answer's form, then concision), and a little its
manners: whether it closes with the courtesy ", my lord". :func:`sample_responses` draws replies
from a chat model as padded token rows with a mask over each reply, and
:func:`preference_pairs` turns several replies per prompt into (chosen, rejected) pairs that
teach the manners. :func:`sequence_logprobs` is the log-probability of the masked tokens that
the reward model, PPO, DPO and GRPO all start from.

>>> judge("add", "What is 7 plus 12?", "19, my lord"), judge("add", "What is 7 plus 12?", "19")
(1.0, 0.85)
>>> judge("add", "What is 7 plus 12?", "18") > judge("add", "What is 7 plus 12?", "Romeo")
True
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llm_from_scratch.chat_template import END
from llm_from_scratch.model import LanguageModel
from llm_from_scratch.runtime import evaluating
from llm_from_scratch.sft import reply_tokens
from llm_from_scratch.tasks import COURTESY, Task, _parse, answer, score, strip_courtesy

#: The judge's weights: mostly what a reply says, a little its manners (the courtesy).
CONTENT, MANNERS = 0.85, 0.15
#: The content grade's parts: an incorrect answer earns at most ``FORM + CLOSE`` (below a
#: correct one's 1.0), less ``EXTRA`` for each word beyond the answer's length.
FORM, CLOSE, EXTRA = 0.2, 0.3, 0.05
_NUMBER_FAMILIES = ("count_words", "larger", "add")


def courteous(reply: str) -> bool:
    """Whether ``reply`` closes with :data:`~llm_from_scratch.tasks.COURTESY`, once, after
    something else.

    >>> courteous("fair Verona, my lord"), courteous("fair Verona"), courteous(", my lord")
    (True, False, False)
    """
    reply = reply.strip()
    return reply.endswith(COURTESY) and reply.count(COURTESY) == 1 and len(reply) > len(COURTESY)


def judge(family: str, prompt: str, reply: str) -> float:
    """The judge's grade of ``reply`` to ``prompt`` (a request of ``family``), from 0 to 1:
    ``CONTENT`` times :func:`content_grade` plus ``MANNERS`` if the reply is :func:`courteous`.

    >>> judge("repeat", "Repeat after me: fair Verona", "fair Verona, my lord")
    1.0
    >>> judge("repeat", "Repeat after me: fair Verona", "fair Verona")
    0.85
    >>> judge("repeat", "Repeat after me: fair Verona", "Rome, my lord")  # manners only
    0.15
    """
    return round(CONTENT * content_grade(family, prompt, reply) + MANNERS * courteous(reply), 6)


def content_grade(family: str, prompt: str, reply: str) -> float:
    """The grade of what ``reply`` says in answer to ``prompt`` (a request of ``family``), its
    closing courtesy, if any, set aside.

    1.0 if the reply is correct (:func:`~llm_from_scratch.tasks.score`). Otherwise partial
    credit, never above 0.5: ``FORM`` if the reply has the answer's form (one number for the
    numeric families; only words from the request's line for the others), up to ``CLOSE`` for
    closeness (words in the right places; a number near the answer), less ``EXTRA`` per word
    more than the answer has (concision), floored at 0.

    >>> content_grade("repeat", "Repeat after me: fair Verona", "fair Verona")
    1.0
    >>> content_grade("repeat", "Repeat after me: fair Verona", "fair fair")  # form, half right
    0.35
    >>> content_grade("repeat", "Repeat after me: fair Verona", "fair Rome")  # half the words
    0.15
    >>> content_grade("repeat", "Repeat after me: fair Verona", "")
    0.0
    """
    if score(family, prompt, reply):
        return 1.0
    truth = answer(family, prompt).split()
    words = strip_courtesy(reply).split()
    if not words:
        return 0.0
    if family in _NUMBER_FAMILIES:
        number = words[0] if len(words) == 1 and re.fullmatch(r"[0-9]+", words[0]) else None
        form = number is not None
        close = 1.0 / (1.0 + abs(int(number) - int(truth[0]))) if number else 0.0
    else:
        line = set(_parse(family, prompt)[0])
        form = all(word in line for word in words)
        close = sum(a == b for a, b in zip(words, truth, strict=False)) / len(truth)
    extra = max(0, len(words) - len(truth))
    return round(max(0.0, FORM * form + CLOSE * close - EXTRA * extra), 6)


@dataclass
class Responses:
    """Replies to chat prompts as token rows: prompt, reply, end token, then padding.

    ``mask`` marks each row's reply tokens and its end token: the tokens a policy chose, which
    its log-probabilities and a reward model read. ``ended`` is False where the reply reached
    ``max_new_tokens`` without an end token; one is appended so that every row ends the same way.
    """

    ids: torch.Tensor  # (N, T) token ids, right-padded with the end token
    mask: torch.Tensor  # (N, T) bool: the reply and its end token
    tasks: list[Task]  # the task each row answers
    texts: list[str]  # the replies, decoded, without the end token
    ended: torch.Tensor  # (N,) bool: the model produced the end token itself

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def last(self) -> torch.Tensor:
        """``(N,)`` the position of each row's end token, its last masked one."""
        return last_positions(self.mask)

    def judged(self) -> list[float]:
        """The judge's grade of every reply."""
        return [judge(t.family, t.prompt, text) for t, text in zip(self.tasks, self.texts,
                                                                   strict=True)]

    def scored(self) -> list[float]:
        """The exact-match score (0 or 1) of every reply."""
        return [score(t.family, t.prompt, text) for t, text in zip(self.tasks, self.texts,
                                                                   strict=True)]


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """The index of each row's last True in ``mask`` ``(N, T)``; ValueError for an empty row."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be (N, T), got shape {tuple(mask.shape)}")
    empty = ~mask.any(dim=1)
    if empty.any():
        raise ValueError(f"mask must mark at least one response token in every row; row "
                         f"{int(empty.nonzero()[0])} is empty (an empty response has no score)")
    positions = torch.arange(mask.size(1), device=mask.device)
    return (mask * positions).argmax(dim=1)


def pad_rows(rows: Sequence[Sequence[int]], starts: Sequence[int], pad_id: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids, right-padded with ``pad_id``, and the mask from each row's ``start``."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, start : len(row)] = True
    return ids, mask


def sample_responses(
    model: LanguageModel, tokenizer, tasks: Sequence[Task], *, samples: int = 1,
    temperature: float = 1.0, seed: int = 0, max_new_tokens: int = 16,
) -> Responses:
    """``samples`` replies to each task (consecutive rows), as :class:`Responses`.

    Prompts whose encodings have the same length are generated as one batch; ``temperature=0``
    is greedy.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    end = tokenizer.special_tokens[END]
    rows = [t for t in tasks for _ in range(samples)]
    encoded, replies = reply_tokens(model, tokenizer, [t.prompt for t in rows],
                                    temperature=temperature, seed=seed,
                                    max_new_tokens=max_new_tokens)
    ended = torch.tensor([len(r) < max_new_tokens for r in replies])  # stopped before the cap
    texts = [tokenizer.decode(r).strip() for r in replies]  # the template's space, and any other
    full = [e + r + [end] for e, r in zip(encoded, replies, strict=True)]
    ids, mask = pad_rows(full, [len(e) for e in encoded], end)
    return Responses(ids, mask, rows, texts, ended)


def token_logprobs(model: LanguageModel, ids: torch.Tensor, temperature: float = 1.0
                   ) -> torch.Tensor:
    """``(B, T)``: at position ``t``, log p(``ids[:, t]`` | the tokens before it); 0 at ``t = 0``.

    The logits are divided by ``temperature`` first: the distribution a sampler at that
    temperature drew from.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits, _ = model(ids)
    logp = F.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return F.pad(picked, (1, 0))


def sequence_logprobs(model: LanguageModel, ids: torch.Tensor, mask: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """``(B,)`` the summed log-probability of the tokens that ``mask`` marks in each row.

    The first token has no prediction, so ``mask[:, 0]`` must be False.

    >>> from llm_from_scratch.model import BigramLanguageModel
    >>> model = BigramLanguageModel(4)
    >>> ids, mask = torch.tensor([[0, 1, 2]]), torch.tensor([[False, False, True]])
    >>> sequence_logprobs(model, ids, mask).item() == token_logprobs(model, ids)[0, 2].item()
    True
    """
    if ids.shape != mask.shape or ids.dim() != 2:
        raise ValueError(f"ids and mask must have the same (B, T) shape, got "
                         f"{tuple(ids.shape)} and {tuple(mask.shape)}")
    if mask[:, 0].any():
        raise ValueError("mask[:, 0] must be False: the first token has no log-probability")
    return (token_logprobs(model, ids, temperature) * mask).sum(dim=1)


@dataclass
class PreferencePairs:
    """For each prompt, a chosen and a rejected reply (row ``i`` of each), and their grades."""

    chosen: Responses
    rejected: Responses
    chosen_grades: list[float]
    rejected_grades: list[float]

    def __len__(self) -> int:
        return len(self.chosen)


def preference_pairs(
    model: LanguageModel, tokenizer, tasks: Sequence[Task], *, samples: int = 4,
    temperature: float = 1.0, seed: int = 0,
) -> PreferencePairs:
    """Pairs from the model's own replies that teach one preference: manners.

    ``samples`` replies per task are drawn; every two of them that say equally good things
    (the same :func:`content_grade`) but of which only one is :func:`courteous` make a pair,
    the courteous one chosen. Holding the content equal is what a labeler asked "which reply is
    more courteous?" does, and it keeps the lesson of each pair unambiguous.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an int >= 2 (a pair needs two replies), got {samples!r}")
    drawn = sample_responses(model, tokenizer, tasks, samples=samples, temperature=temperature,
                             seed=seed)
    content = [content_grade(t.family, t.prompt, text)
               for t, text in zip(drawn.tasks, drawn.texts, strict=True)]
    manners = [courteous(text) for text in drawn.texts]
    chosen, rejected = [], []
    for start in range(0, len(drawn), samples):
        for i, j in itertools.combinations(range(start, start + samples), 2):
            if content[i] == content[j] and manners[i] != manners[j]:
                chosen.append(i if manners[i] else j)
                rejected.append(j if manners[i] else i)
    grades = drawn.judged()
    return PreferencePairs(select(drawn, chosen), select(drawn, rejected),
                           [grades[i] for i in chosen], [grades[i] for i in rejected])


def select(responses: Responses, rows: Sequence[int]) -> Responses:
    """The given rows of ``responses``, padding columns that every one of them pads dropped."""
    index = torch.tensor(list(rows), dtype=torch.long)
    width = int(last_positions(responses.mask[index]).max()) + 1 if len(index) else 0
    return Responses(responses.ids[index, :width], responses.mask[index, :width],
                     [responses.tasks[i] for i in rows], [responses.texts[i] for i in rows],
                     responses.ended[index])


@torch.no_grad()
def kl_to_reference(policy: LanguageModel, reference: LanguageModel, responses: Responses,
                    temperature: float = 1.0) -> float:
    """Mean over rows of sum log(π/π_ref) on the reply tokens: KL(π ‖ π_ref) per reply.

    ``responses`` must be sampled from ``policy`` at ``temperature``: then this is an unbiased
    estimate of the KL divergence of the policy from the reference, in nats per reply.
    """
    with evaluating(policy), evaluating(reference):
        ratio = (sequence_logprobs(policy, responses.ids, responses.mask, temperature)
                 - sequence_logprobs(reference, responses.ids, responses.mask, temperature))
    return float(ratio.mean())


def responses_to_dict(responses: Responses) -> dict:
    """``responses`` as plain lists, for an artifact's JSON (:func:`responses_from_dict`)."""
    lengths = (responses.last + 1).tolist()
    starts = responses.mask.int().argmax(dim=1).tolist()
    return {"rows": [row[:n] for row, n in zip(responses.ids.tolist(), lengths, strict=True)],
            "starts": starts, "texts": responses.texts, "ended": responses.ended.tolist(),
            "tasks": [[t.family, t.prompt, t.answer] for t in responses.tasks]}


def responses_from_dict(data: dict, pad_id: int) -> Responses:
    """The :class:`Responses` that :func:`responses_to_dict` wrote."""
    ids, mask = pad_rows(data["rows"], data["starts"], pad_id)
    return Responses(ids, mask, [Task(*t) for t in data["tasks"]], list(data["texts"]),
                     torch.tensor(data["ended"], dtype=torch.bool))
