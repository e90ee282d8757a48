"""Turning a request into token ids, with the character spans of the text the guard classifies.

The rendered chat template is tokenized with offsets, so the positions of the user's own words
are known exactly: the ``content`` selector corrupts those and never the template scaffolding
or the system prompt.
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Any

import torch

from ._spelling import deletion_index, deletions, typo_distance
from .config import CHAT_ROLES, ChatRole, SelectionConfig
from .exceptions import InvalidInputError

# Fast tokenizers mutate their padding/truncation state on every call, so concurrent calls
# from worker threads can fail with "Already borrowed"; tokenization is cheap, so serialize it.
TOKENIZE_LOCK = threading.Lock()

ChatMessage = Mapping[str, Any]
PromptInput = str | Sequence[ChatMessage]
ToolSpecs = Sequence[Mapping[str, Any]]
ROLES = CHAT_ROLES
USER_TURNS: tuple[ChatRole, ...] = ("user",)
# A user-role message that carries a tool's output, not the user's words (LlamaIndex's ReAct
# agent sends its observations so): classified with the user turn it follows, never in its place.
TOOL_OUTPUT_KEY = "tool_output"
# Where the text a skin appended to a message (tool instructions in a system message) starts:
# the guard reads only the message's own text before it, and it is never corrupted.
SCAFFOLD_FROM_KEY = "eco_scaffold_from"
_SKIN_KEYS = (TOOL_OUTPUT_KEY, SCAFFOLD_FROM_KEY)
_FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass
class RenderedPrompt:
    """A prompt ready for the model, plus where the classified words sit in it."""

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    content_spans: list[tuple[int, int]]
    classified_text: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    # Whether the tokenizer keeps a word whole: the entities selector reads only the others as
    # misspelt terms. None: terms are matched exactly.
    known_word: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)


def check_encodable(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate from a JSON escape or a bad decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        msg = (
            f"{what} holds a lone surrogate (U+{ord(text[err.start]):04X} at character {err.start}), "
            "which is not valid Unicode; send valid UTF-8 text."
        )
        raise InvalidInputError(msg) from None


def normalize_messages(messages: object) -> list[dict[str, Any]]:
    """Validate a chat (list of ``{"role", "content"}``) and return plain dicts."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        msg = f"Expected a prompt string or a list of chat messages, got {type(messages).__name__}."
        raise InvalidInputError(msg)
    if len(messages) == 0:
        msg = "The conversation is empty; pass at least one user message."
        raise InvalidInputError(msg)
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            msg = f"Message {i} is {type(message).__name__}; each message must be a dict with 'role' and 'content'."
            raise InvalidInputError(msg)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            msg = (
                f"Message {i} has role {role!r}; the chat template renders only {', '.join(ROLES)}."
            )
            raise InvalidInputError(msg)
        if content is None and message.get("tool_calls"):
            content = ""
        if not isinstance(content, str):
            msg = f"Message {i} ({role}) has content of type {type(content).__name__}; pass text."
            raise InvalidInputError(msg)
        for key, value in message.items():
            if isinstance(value, str):
                check_encodable(value, f"Message {i}'s {key}")
        if not isinstance(message.get(TOOL_OUTPUT_KEY, False), bool):
            msg = f"Message {i}'s {TOOL_OUTPUT_KEY!r} is {message[TOOL_OUTPUT_KEY]!r}; pass True or False."
            raise InvalidInputError(msg)
        start = message.get(SCAFFOLD_FROM_KEY, len(content))
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(content):
            msg = f"Message {i}'s {SCAFFOLD_FROM_KEY!r} is {start!r}; pass a character index into its content."
            raise InvalidInputError(msg)
        out.append({**dict(message), "role": role, "content": content})
    if not any(m["role"] == "user" and own_text(m).strip() for m in out):
        msg = "The conversation has no non-empty user message to answer."
        raise InvalidInputError(msg)
    return out


def own_text(message: Mapping[str, Any]) -> str:
    """A message's content without what a skin appended to it (the text the guard may read)."""
    content: str = message["content"]
    return content[: message.get(SCAFFOLD_FROM_KEY, len(content))]


def classified_indices(
    messages: list[dict[str, Any]], window: int, roles: Sequence[str] = USER_TURNS
) -> list[int]:
    """Indices, in order, of the messages the guard reads: the latest ``window`` user turns.

    A turn is a user message and what follows it up to the next one. Tool outputs sent as user
    messages after it are always read with it: in a ReAct loop the question stays what is
    classified while observations pile up behind it, and an observation is read with it (what a
    tool returned can hold the forget knowledge too). ``roles`` adds the turns' ``assistant`` and
    ``tool`` messages and every ``system`` message (a system prompt frames every turn, however old).
    """
    turns: list[list[int]] = []
    framing: list[int] = []
    before_first_turn: list[int] = []
    for i, m in enumerate(messages):
        if not own_text(m).strip():
            continue
        role = m["role"]
        if role == "user" and not (m.get(TOOL_OUTPUT_KEY) and turns):
            turns.append([*before_first_turn, i])
            before_first_turn = []
        elif role == "user":
            turns[-1].append(i)
        elif role not in roles:
            continue
        elif role == "system":
            framing.append(i)
        elif turns:
            turns[-1].append(i)
        else:
            before_first_turn.append(i)
    return sorted([*framing, *(i for turn in turns[-window:] for i in turn)])


def classified_text(
    prompt: PromptInput, *, raw: bool = False, window: int = 1, roles: Sequence[str] = USER_TURNS
) -> str:
    """What the guard reads in ``prompt``: the string itself, or the messages
    :func:`classified_indices` picks, joined by newlines.

    Computed from the messages alone (no chat template, no tokenizer), so a caller can check
    which turn a stored decision was made for without rendering the prompt.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            msg = "The prompt is empty; pass a non-empty string."
            raise InvalidInputError(msg)
        return prompt
    if raw:
        msg = "raw=True takes a prompt string, not a list of messages."
        raise InvalidInputError(msg)
    messages = normalize_messages(prompt)
    return "\n".join(own_text(messages[i]) for i in classified_indices(messages, window, roles))


def render(
    tokenizer: Any,
    prompt: PromptInput,
    *,
    raw: bool = False,
    window: int = 1,
    roles: Sequence[str] = USER_TURNS,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> RenderedPrompt:
    """Render ``prompt`` (a string or messages) and tokenize it with character offsets.

    ``raw=True`` takes a string as the literal model input (no chat template), as the paper's
    multiple-choice prompts are; the whole string is then the classified content.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            msg = "The prompt is empty; pass a non-empty string."
            raise InvalidInputError(msg)
        check_encodable(prompt, "The prompt")
        if raw:
            with TOKENIZE_LOCK:
                enc = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
            return RenderedPrompt(
                prompt,
                list(enc["input_ids"]),
                [tuple(o) for o in enc["offset_mapping"]],
                [(0, len(prompt))],
                prompt,
                known_word=tokenizer_knows(tokenizer),
            )
        prompt = [{"role": "user", "content": prompt}]
    elif raw:
        msg = "raw=True takes a prompt string, not a list of messages."
        raise InvalidInputError(msg)
    messages = normalize_messages(prompt)
    template_kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if tools:
        template_kwargs["tools"] = list(tools)
    if getattr(tokenizer, "chat_template", None) is None:
        template_kwargs["chat_template"] = _FALLBACK_TEMPLATE
    # The template sees exactly what a plain model's caller would send it.
    template_messages = [{k: v for k, v in m.items() if k not in _SKIN_KEYS} for m in messages]
    with TOKENIZE_LOCK:
        text = tokenizer.apply_chat_template(template_messages, **template_kwargs)
        marked = tokenizer.apply_chat_template(_marked(template_messages), **template_kwargs)
    spans = _message_spans(text, messages, _template_gaps(marked, len(messages)))
    chosen = classified_indices(messages, window, roles)
    if any(spans[i] is None for i in chosen if messages[i]["role"] == "user"):
        msg = (
            "The chat template changed the user's text, so the tokens to corrupt cannot be "
            "located; ECO needs a chat template that renders user messages verbatim."
        )
        raise InvalidInputError(msg)
    # A system, assistant or tool message the template re-encodes (a tool result as JSON) is
    # still read by the guard; only its tokens cannot be picked out for the corruption.
    content_spans = [span for span in (spans[i] for i in chosen) if span is not None]
    with TOKENIZE_LOCK:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    classified = "\n".join(own_text(messages[i]) for i in chosen)
    offsets = [(int(start), int(end)) for start, end in enc["offset_mapping"]]
    return RenderedPrompt(
        text,
        list(enc["input_ids"]),
        offsets,
        content_spans,
        classified,
        messages,
        known_word=tokenizer_knows(tokenizer),
    )


_KNOWN_WORDS: weakref.WeakKeyDictionary[Any, Callable[[str], bool]] = weakref.WeakKeyDictionary()


def tokenizer_knows(tokenizer: Any) -> Callable[[str], bool]:
    """A check, cached per tokenizer, whether it keeps a word whole as one token: in lower case
    or capitalised, with or without the space before it (byte-level BPE vocabularies hold
    " manuel" but not "manuel"; SentencePiece ones add their own space)."""
    try:
        return _KNOWN_WORDS[tokenizer]
    except (KeyError, TypeError):
        pass

    @lru_cache(maxsize=8192)
    def knows(word: str) -> bool:
        forms = {f for w in (word.lower(), word.capitalize()) for f in (w, " " + w)}
        with TOKENIZE_LOCK:
            return any(len(tokenizer.encode(f, add_special_tokens=False)) == 1 for f in forms)

    with contextlib.suppress(TypeError):  # not weakly referable: a cache per rendered prompt
        _KNOWN_WORDS[tokenizer] = knows
    return knows


def _placeholder(index: int) -> str:
    # Private-use characters: no template writes them, no tokenizer merges them with neighbours.
    return f"\ue000{index}\ue001"


def _marked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each non-blank content replaced by a placeholder naming its index."""
    return [
        {**m, "content": _placeholder(i)} if str(m.get("content") or "").strip() else m
        for i, m in enumerate(messages)
    ]


def _template_gaps(marked: str, count: int) -> dict[int, int] | None:
    """For each placeholder message, how many characters of template text come between the
    previous placeholder and its own: the least its content can start after the previous
    message's. None when the template did not render each placeholder once, in order."""
    gaps: dict[int, int] = {}
    previous_end = 0
    for i in range(count):
        placeholder = _placeholder(i)
        occurrences = marked.count(placeholder)
        if occurrences == 0:
            continue  # a blank message: no placeholder was put in
        at = marked.find(placeholder)
        if occurrences > 1 or at < previous_end:
            return None
        gaps[i] = at - previous_end
        previous_end = at + len(placeholder)
    return gaps


def _message_spans(
    text: str, messages: list[dict[str, Any]], gaps: dict[int, int] | None = None
) -> list[tuple[int, int] | None]:
    """Character span of each message's own text in the rendered text, searched in order.

    ``gaps`` (from :func:`_template_gaps`) keeps each search past the template's own text: a
    message "user" must not be found in the role header, nor one naming the model's maker in
    the default system prompt, where the corruption would then land instead of on the message.
    """
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    previous_end = 0
    for i, message in enumerate(messages):
        content = own_text(message).strip()
        if not content:
            spans.append(None)
            continue
        at = -1
        if gaps is not None and i in gaps:
            at = text.find(content, max(cursor, previous_end + gaps[i]))
        if at < 0:
            # A template that changes text or order: the first match after the last message.
            gaps = None
            at = text.find(content, cursor)
        if at < 0:
            spans.append(None)
            continue
        spans.append((at, at + len(content)))
        cursor = previous_end = at + len(content)
    return spans


def _overlapping(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> torch.Tensor:
    mask = torch.zeros(len(offsets), dtype=torch.bool)
    for j, (start, end) in enumerate(offsets):
        if end > start and any(start < s_end and end > s_start for s_start, s_end in spans):
            mask[j] = True
    return mask


def word_continuations(rendered: RenderedPrompt) -> torch.Tensor:
    """One flag per token of ``rendered``: True where the token goes on the word before it
    (its first character and the one before it in the text are both letters or digits: "dem" and
    "ort" of " Voldemort"), False where it starts a word, is punctuation or is a special token."""
    text = rendered.text
    flags = torch.zeros(len(rendered.input_ids), dtype=torch.bool)
    for j, (start, end) in enumerate(rendered.offsets):
        if end > start > 0 and text[start].isalnum() and text[start - 1].isalnum():
            flags[j] = True
    return flags


def select_positions(
    rendered: RenderedPrompt, selection: SelectionConfig, terms: Sequence[str] = ()
) -> torch.Tensor:
    """Boolean mask over the prompt's tokens: which positions the corruption touches.

    The last prompt token is never selected: its next-token distribution is what the model
    answers from (the paper keeps it clean too).
    """
    n = len(rendered.input_ids)
    if selection.name == "all":
        mask = torch.ones(n, dtype=torch.bool)
    else:
        mask = _overlapping(rendered.offsets, rendered.content_spans)
        if selection.name == "entities":
            found = _term_spans(
                rendered.text,
                rendered.content_spans,
                [*selection.terms, *terms],
                rendered.known_word,
            )
            entity_mask = _overlapping(rendered.offsets, found) if found else None
            if entity_mask is not None and n:
                entity_mask[-1] = False  # cleared below anyway; a term only there corrupts nothing
            # No known term in the text: fall back to the whole content, as the paper's NER path does.
            if entity_mask is not None and bool(entity_mask.any()):
                mask = entity_mask
        elif selection.name == "first_n":
            assert selection.n is not None
            keep = torch.nonzero(mask).flatten()[: selection.n]
            mask = torch.zeros(n, dtype=torch.bool)
            mask[keep] = True
    if n:
        mask[-1] = False
    return mask


def matched_terms(text: str, terms: Sequence[str]) -> list[str]:
    """The ``terms`` that ``text`` names, as the ``entities`` selector finds them (any case, whole
    words; typos not counted), in the order given."""
    return [t for t in terms if _term_spans(text, [(0, len(text))], [t])]


@lru_cache(maxsize=16384)
def _whole_term(term: str) -> re.Pattern[str]:
    # A target holds hundreds of terms (512 mined on TOFU forget10): more than the re module's
    # own cache keeps, so without this every flagged request compiled each of them again.
    return re.compile(r"(?<!\w)" + re.escape(term) + r"(?!\w)", re.IGNORECASE)


def _term_spans(
    text: str,
    within: list[tuple[int, int]],
    terms: Sequence[str],
    known_word: Callable[[str], bool] | None = None,
) -> list[tuple[int, int]]:
    """Character spans of the terms in the text's content: exactly (any case, whole words) and,
    given the tokenizer's ``known_word``, through one typo in a word it does not know
    (:func:`_misspelt_term_spans`)."""
    spans: list[tuple[int, int]] = []
    for term in {t for t in terms if t and t.strip()}:
        pattern = _whole_term(term.strip())
        for start, end in within:
            spans.extend(
                (start + m.start(), start + m.end()) for m in pattern.finditer(text[start:end])
            )
    if known_word is None:
        return spans
    return spans + _misspelt_term_spans(text, within, terms, known_word)


# A term word this long also stands for a prompt word one typo away from it ("Hermoine",
# "quiditch"): the misspelt name is corrupted, where finding no term at all would corrupt the
# whole question and garble the answer. Shorter words have too many neighbours ("Harry":
# "hurry", "Barry"). Both words must begin and end alike: a change at an end mostly makes
# another form or another word ("Whispers" of "Whisper", "Bahraini" of "Bahrain"), where a typo
# falls inside ("Hermoine", "Hogwrats"). Only a prompt word the model's tokenizer splits is read
# as a typo: one it keeps whole is a word of its own ("Manuel" is no misspelt "Manual").
TYPO_TERM_CHARS = 6
# Format characters (zero-width spaces and joiners, soft hyphens, bidi marks) hidden inside a word
# ("Volde\u200bmort") leave it one word to a reader, and to the guard, which drops them; the
# word is then read without them, as a disguised spelling.
# Letters written one space apart ("V o l d e m o r t"), which the guard joins, are one word too.
_HIDDEN = "\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
_WORD = re.compile(rf"(?<!\S)(?:[^\W_] ){{3,}}[^\W_](?!\w)|\w+(?:[{_HIDDEN}]+\w+)*")
_HIDDEN_CHARS = re.compile(rf"[{_HIDDEN} ]+")


@dataclass(frozen=True)
class _Term:
    """A term as lower-case words, the characters between them and around them."""

    words: tuple[str, ...]
    gaps: tuple[str, ...]
    before: str
    after: str


@dataclass(frozen=True)
class _TermIndex:
    """Terms by their first word, and their long words by one-letter deletions (a word one typo
    from another shares a deletion with it, or is one)."""

    by_first: dict[str, list[_Term]]
    words: frozenset[str]
    by_deletion: dict[str, set[str]]

    def stands_for(self, word: str, *, typos: bool) -> set[str]:
        """The term words this prompt word (lower case) matches: exactly, or through one typo."""
        found = {word} if word in self.words else set()
        if typos and len(word) >= TYPO_TERM_CHARS - 1:
            for key in deletions(word, 1):
                for term_word in self.by_deletion.get(key, ()):
                    same_ends = term_word[0] == word[0] and term_word[-1] == word[-1]
                    if same_ends and typo_distance(word, term_word, 1) <= 1:
                        found.add(term_word)
        return found


@lru_cache(maxsize=16)
def _term_index(terms: tuple[str, ...]) -> _TermIndex:
    by_first: dict[str, list[_Term]] = {}
    for term in dict.fromkeys(t.strip().lower() for t in terms):
        found = list(_WORD.finditer(term))
        if not found:
            continue
        gaps = tuple(term[a.end() : b.start()] for a, b in pairwise(found))
        parsed = _Term(
            tuple(m.group() for m in found), gaps, term[: found[0].start()], term[found[-1].end() :]
        )
        by_first.setdefault(parsed.words[0], []).append(parsed)
    vocabulary = {w for group in by_first.values() for term in group for w in term.words}
    long_words = [w for w in vocabulary if len(w) >= TYPO_TERM_CHARS]
    return _TermIndex(by_first, frozenset(vocabulary), deletion_index(long_words, lambda _: 1))


def _misspelt_term_spans(
    text: str,
    within: list[tuple[int, int]],
    terms: Sequence[str],
    known_word: Callable[[str], bool],
) -> list[tuple[int, int]]:
    """Spans of the terms written with a typo in one or more of their long words (each word one
    typo at most, the characters between and around the words as the term has them)."""
    index = _term_index(tuple(t for t in terms if t and t.strip()))
    spans: list[tuple[int, int]] = []
    for start, end in within:
        found = list(_WORD.finditer(text, start, end))
        lowered = [_HIDDEN_CHARS.sub("", m.group()).lower() for m in found]
        # A disguised word matches as a typo does: the exact search cannot see through it.
        exact = [
            set() if _HIDDEN_CHARS.search(m.group()) else index.stands_for(word, typos=False)
            for word, m in zip(lowered, found, strict=True)
        ]
        near = [
            index.stands_for(word, typos=len(word) >= TYPO_TERM_CHARS - 1 and not known_word(word))
            - exact[i]
            for i, word in enumerate(lowered)
        ]
        for i, m in enumerate(found):
            for first in exact[i] | near[i]:
                for term in index.by_first.get(first, ()):
                    last = i + len(term.words) - 1
                    if last >= len(found) or not any(
                        term.words[k] in near[i + k] for k in range(len(term.words))
                    ):
                        continue  # past the end, or no typo: the exact search has it
                    if all(
                        term.words[k] in exact[i + k] | near[i + k] for k in range(len(term.words))
                    ) and _framed_as(text, found[i : last + 1], term, start, end):
                        spans.append(
                            (m.start() - len(term.before), found[last].end() + len(term.after))
                        )
    return spans


def _framed_as(text: str, words: list[re.Match[str]], term: _Term, start: int, end: int) -> bool:
    """Whether the matched words have the term's characters between and around them (any case)."""
    if any(
        text[a.end() : b.start()].lower() != gap
        for (a, b), gap in zip(pairwise(words), term.gaps, strict=True)
    ):
        return False
    head, tail = words[0].start() - len(term.before), words[-1].end() + len(term.after)
    return (
        head >= start
        and tail <= end
        and text[head : words[0].start()].lower() == term.before
        and text[words[-1].end() : tail].lower() == term.after
    )
