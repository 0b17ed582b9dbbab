"""From a completion model to a chat model: the chat template and supervised fine-tuning data.

A conversation is a list of messages ``{"role": "user" | "assistant", "content": str}``,
alternating and starting with the user. The template writes each turn as its role marker, the
text, then ``<|end|>``; the three markers are special tokens, so no text a user types can
produce them. Training teaches the model the assistant's turns only: the targets are masked
(``-100``) everywhere else, so the model learns to answer, and to stop, but not to imitate the
user.

>>> format_chat([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
'<|user|> Hi<|end|><|assistant|> Hello<|end|>'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from llm_from_scratch.model import GPT
from llm_from_scratch.tokenizer import BPETokenizer
from llm_from_scratch.train import IGNORE_INDEX, RowDataset

USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
CHAT_TOKENS = (USER, ASSISTANT, END)
ROLES = {"user": USER, "assistant": ASSISTANT}

Message = Mapping[str, str]
Example = tuple[list[int], list[bool]]  # token ids, and which of them the model must learn


# ---- the vocabulary: three new tokens, three new embedding rows ----------------------------


def add_chat_tokens(tokenizer: BPETokenizer) -> BPETokenizer:
    """A new tokenizer with the chat markers as special tokens; ``tokenizer`` is unchanged.

    They take the ids ``vocab_size``, ``vocab_size + 1`` and ``vocab_size + 2``; existing special
    tokens keep theirs. A tokenizer that already has all three is copied as it is (adding them
    twice is harmless); one that has only some of them raises ValueError.

    >>> tok = BPETokenizer().train("some text " * 50, vocab_size=260)
    >>> chat = add_chat_tokens(tok)
    >>> chat.special_tokens, tok.vocab_size, chat.vocab_size
    ({'<|user|>': 260, '<|assistant|>': 261, '<|end|>': 262}, 260, 263)
    """
    if not isinstance(tokenizer, BPETokenizer):
        raise TypeError(f"expected a BPETokenizer, got {type(tokenizer).__name__}")
    present = [token for token in CHAT_TOKENS if token in tokenizer.special_tokens]
    specials = dict(tokenizer.special_tokens)
    if present and len(present) < len(CHAT_TOKENS):
        raise ValueError(f"the tokenizer has only some of the chat tokens: {present}")
    if not present:
        # The model's embedding has one row per id below vocab_size: the ids must leave no gap,
        # or the new ones would not be the rows that resize_vocab adds.
        used = set(tokenizer.vocab) | set(specials.values())
        if used != set(range(tokenizer.vocab_size)):
            raise ValueError("the tokenizer's ids are not 0..vocab_size-1 without gaps")
        specials.update({token: tokenizer.vocab_size + i for i, token in enumerate(CHAT_TOKENS)})
    new = type(tokenizer)(tokenizer.pattern)
    byte_ids = [tokenizer.ranks[bytes([b])] for b in range(256)]  # as save() writes them
    new._build(byte_ids, list(tokenizer.merges), specials)
    return new


def chat_token_ids(tokenizer: BPETokenizer) -> dict[str, int]:
    """The ids of the three markers: ``chat_token_ids(tok)[END]``; ValueError if missing."""
    missing = [token for token in CHAT_TOKENS if token not in tokenizer.special_tokens]
    if missing:
        raise ValueError(f"the tokenizer lacks {missing}: make it with add_chat_tokens(tokenizer)")
    return {token: tokenizer.special_tokens[token] for token in CHAT_TOKENS}


def _grown(weight: torch.Tensor, rows: int) -> nn.Parameter:
    """``weight`` with rows appended, each the mean of the existing rows."""
    # A new row equal to the mean row gives the new token a logit equal to the average of the
    # old tokens' logits: it neither dominates the softmax (a large random row could) nor starts
    # impossible, and the old tokens' distribution barely moves (Hewitt, 2021, "Initializing
    # new word embeddings for pretrained language models").
    with torch.no_grad():
        mean = weight.mean(dim=0, keepdim=True).expand(rows, -1)
        grown = torch.cat([weight, mean])
    return nn.Parameter(grown, requires_grad=weight.requires_grad)


def resize_vocab(model: GPT, vocab_size: int) -> GPT:
    """Grow ``model``'s token embedding and output layer to ``vocab_size`` rows, in place.

    Old rows are kept exactly, so the old tokens' logits do not change; new rows start as the
    mean of the old ones. A tied output layer stays tied. Returns ``model``. Resize before
    making an optimizer: one made earlier still holds the old parameters.

    >>> from llm_from_scratch.model import GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=300, block_size=8, n_layer=1, n_head=2, n_embd=16))
    >>> resize_vocab(model, 303).wte.weight.shape, model.lm_head.weight is model.wte.weight
    (torch.Size([303, 16]), True)
    """
    old = model.wte.num_embeddings
    if not isinstance(vocab_size, int) or vocab_size < old:
        raise ValueError(f"vocab_size must be an int of at least {old} (rows are never dropped), "
                         f"got {vocab_size!r}")
    if vocab_size == old:
        return model  # new Parameters would needlessly detach them from an existing optimizer
    tied = model.lm_head.weight is model.wte.weight
    model.wte.weight = _grown(model.wte.weight, vocab_size - old)
    model.wte.num_embeddings = vocab_size
    model.lm_head.weight = model.wte.weight if tied else _grown(model.lm_head.weight,
                                                                vocab_size - old)
    model.lm_head.out_features = vocab_size
    # A new config, not an edit of the old one: a config object may be shared by other models.
    model.config = dataclasses.replace(model.config, vocab_size=vocab_size)
    model.vocab_size = vocab_size
    return model


# ---- conversations as text and as tokens ---------------------------------------------------


def check_messages(messages: Sequence[Message], *, for_generation: bool = False) -> None:
    """ValueError unless ``messages`` is a well-formed conversation.

    Turns alternate user, assistant, user, ...; each content is a non-blank str. A training
    conversation ends with the assistant's answer; one to generate from ends with the user.

    >>> check_messages([{"role": "user", "content": "Hi"}])
    Traceback (most recent call last):
    ...
    ValueError: a training conversation must end with an assistant turn (none to learn from)
    """
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("the conversation is empty")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not {"role", "content"} <= message.keys():
            raise ValueError(f"message {i} must be a dict with 'role' and 'content': {message!r}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}; roles are {tuple(ROLES)}")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"message {i} has role {role!r}, expected {expected!r}: turns "
                             "alternate user, assistant, starting with the user")
        if not isinstance(content, str):
            raise ValueError(f"message {i} content must be a str, got {type(content).__name__}")
        if not content.strip():
            raise ValueError(f"message {i} content is empty or whitespace only")
    last = messages[-1]["role"]
    if for_generation and last != "user":
        raise ValueError("a conversation to generate from must end with a user turn")
    if not for_generation and last != "assistant":
        raise ValueError("a training conversation must end with an assistant turn "
                         "(none to learn from)")


def format_chat(messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    """The conversation as template text; with ``add_generation_prompt``, ready for an answer.

    A space separates each marker from its text: byte-level BPE tokens carry their leading
    space, so a word then gets the same token in a reply as in the request, and as in the text
    the model was trained on. Without it, "thy" after a marker is two rare tokens, not " thy".

    >>> format_chat([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|user|> Hi<|end|><|assistant|>'
    """
    check_messages(messages, for_generation=add_generation_prompt)
    text = "".join(f"{ROLES[m['role']]} {m['content']}{END}" for m in messages)
    return text + ASSISTANT if add_generation_prompt else text


def encode_chat(
    tokenizer: BPETokenizer, messages: Sequence[Message], *, add_generation_prompt: bool = False
) -> Example:
    """Token ids of :func:`format_chat`'s text, and a mask of the tokens the model must learn.

    The mask is True on the assistant's content and on the ``<|end|>`` that closes it: the
    model must learn when to stop. Markers are added as ids and content is encoded as ordinary
    text, so a user who types ``<|end|>`` gets the seven characters, never the marker.

    >>> tok = add_chat_tokens(BPETokenizer().train("some text " * 50, vocab_size=260))
    >>> chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    >>> ids, mask = encode_chat(tok, chat)
    >>> ids
    [260, 32, 104, 105, 262, 261, 32, 121, 111, 262]
    >>> mask
    [False, False, False, False, False, False, True, True, True, True]
    """
    check_messages(messages, for_generation=add_generation_prompt)
    marker = chat_token_ids(tokenizer)
    ids: list[int] = []
    mask: list[bool] = []
    for message in messages:
        content = tokenizer.encode(" " + message["content"], disallowed_special=())
        learn = message["role"] == "assistant"
        ids += [marker[ROLES[message["role"]]], *content, marker[END]]
        mask += [False, *[learn] * len(content), learn]
    if add_generation_prompt:
        ids.append(marker[ASSISTANT])
        mask.append(False)
    return ids, mask


def chat_example(tokenizer: BPETokenizer, messages: Sequence[Message], block_size: int) -> Example:
    """:func:`encode_chat` of a training conversation, cut to at most ``block_size + 1`` tokens.

    ``block_size + 1`` tokens make ``block_size`` inputs and targets. A longer conversation
    loses whole (user, assistant) pairs from its start, the oldest first, until it fits: the
    model still sees a well-formed conversation, only with less history. If the last pair alone
    does not fit, ValueError: cutting into the answer would teach a truncated answer.

    >>> tok = add_chat_tokens(BPETokenizer().train("some text " * 50, vocab_size=260))
    >>> turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2
    >>> len(chat_example(tok, turns, block_size=16)[0]), len(chat_example(tok, turns, 7)[0])
    (16, 8)
    """
    check_messages(messages)
    pairs = [encode_chat(tokenizer, messages[i : i + 2]) for i in range(0, len(messages), 2)]
    lengths = [len(ids) for ids, _ in pairs]
    first = 0
    while sum(lengths[first:]) > block_size + 1:
        first += 1
        if first == len(pairs):
            raise ValueError(
                f"the final user and assistant turns alone are {lengths[-1]} tokens, more than "
                f"block_size + 1 = {block_size + 1}; the conversation ({sum(lengths)} tokens) "
                "cannot be cut without cutting the answer"
            )
    ids = [token for pair_ids, _ in pairs[first:] for token in pair_ids]
    mask = [learn for _, pair_mask in pairs[first:] for learn in pair_mask]
    return ids, mask


def chat_batch(examples: Sequence[Example], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``x`` and targets ``y`` of examples, right-padded to the longest.

    ``x`` is ``ids[:-1]`` and ``y`` is ``ids[1:]``; the target at position ``t`` is token
    ``t + 1``, so it is learned iff ``mask[t + 1]``, else ``-100``. Padding is ``pad_id`` in
    ``x`` and ``-100`` in ``y``: masking goes by the mask, never by ``y == pad_id``, since the
    pad id may well be ``<|end|>``'s, which must be learned. The model is causal, so the real
    positions never see the padding after them.

    >>> x, y = chat_batch([([5, 6, 7], [False, True, True]), ([5, 6], [False, True])], pad_id=0)
    >>> x.tolist(), y.tolist()
    ([[5, 6], [5, 0]], [[6, 7], [6, -100]])
    """
    if not examples:
        raise ValueError("no examples to batch")
    if type(pad_id) is not int or pad_id < 0:
        raise ValueError(f"pad_id must be a token id (an int >= 0), got {pad_id!r}")
    for i, (ids, mask) in enumerate(examples):
        if len(ids) != len(mask) or len(ids) < 2:
            raise ValueError(f"example {i}: {len(ids)} ids and {len(mask)} mask entries; "
                             "need equal lengths of at least 2")
        if not any(mask[1:]):
            raise ValueError(f"example {i} has no target to learn (its mask[1:] is all False)")
    width = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        ids_t = torch.tensor(ids, dtype=torch.long)
        learn = torch.tensor(mask[1:], dtype=torch.bool)
        x[row, : len(ids) - 1] = ids_t[:-1]
        y[row, : len(ids) - 1] = ids_t[1:].masked_fill(~learn, IGNORE_INDEX)
    return x, y


class ChatDataset(RowDataset):
    """Supervised fine-tuning data for :func:`llm_from_scratch.train.train`: batches ``(x, y)``.

    ``data`` holds conversations when ``tokenizer`` is given (each cut by :func:`chat_example`),
    else ``(ids, mask)`` examples of at most ``block_size + 1`` tokens. The default
    ``next_token_loss`` trains on it as is: the model's loss ignores ``-100`` targets.

    >>> tok = add_chat_tokens(BPETokenizer().train("some text " * 50, vocab_size=260))
    >>> chats = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]
    >>> x, y = ChatDataset(chats, tokenizer=tok, block_size=16, pad_id=262).sample(2)
    >>> x.shape, y[0].tolist()
    (torch.Size([2, 9]), [-100, -100, -100, -100, -100, 32, 121, 111, 262])
    """

    def __init__(self, data: Sequence, *, block_size: int, pad_id: int,
                 tokenizer: BPETokenizer | None = None) -> None:
        if tokenizer is not None:
            data = [chat_example(tokenizer, messages, block_size) for messages in data]
        for i, (ids, _) in enumerate(data):
            if len(ids) > block_size + 1:
                raise ValueError(f"example {i} has {len(ids)} tokens, more than block_size + 1 = "
                                 f"{block_size + 1}; cut it with chat_example")
        # One padded tensor for all examples; a batch takes its rows and trims the columns that
        # are padding in every one of them, which is exactly chat_batch of those examples.
        self.x, self.y = chat_batch(data, pad_id=pad_id)
        self.lengths = torch.tensor([len(ids) - 1 for ids, _ in data])
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.x)

    def _rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = int(self.lengths[rows].max())
        return self.x[rows, :width], self.y[rows, :width]

    def check_vocab(self, vocab_size: int | None, name: str = "data") -> None:
        """A clear error, before training, for ids the model has no embedding for."""
        high = max(int(self.x.max()), int(self.y.max()))
        if vocab_size is not None and high >= vocab_size:
            raise ValueError(f"{name} holds token id {high}, but the model's vocabulary has "
                             f"{vocab_size} tokens: resize it with resize_vocab")
