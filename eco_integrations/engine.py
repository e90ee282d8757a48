"""The ECO engine: guard → token selection → corruption → generation.

The unit of work is an :class:`ECORequest`: :meth:`ECO.prepare` renders a prompt once, decides
once (:meth:`ECO.decide_texts` is the one place a verdict is made) and fixes its seeds;
:meth:`ECO.generate`, :meth:`ECO.stream` and their async twins run prepared requests. Passing
prompts instead of requests prepares them on the way, so the short forms stay short.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar, Unpack

import torch
from pydantic import ValidationError

from ._echo import Echo, EchoRestorer, restore_echoes
from ._normalize import normalized_sha256
from ._prompting import (
    PromptInput,
    RenderedPrompt,
    ToolSpecs,
    classified_text,
    render,
    select_positions,
    word_continuations,
)
from ._validation import validation_problems
from .backends._base import Backend, PreparedRow, TextStream
from .backends.transformers import TransformersBackend
from .config import Decision, ECOPolicy, GenerationConfig, Mode, SelectionConfig
from .corruption import (
    WORD_START_LETTERS,
    apply_corruption,
    get_corruption,
    name_like_token_ids,
    validate_corruption,
    word_piece_token_ids,
)
from .encoder import text_sha256
from .exceptions import (
    ConfigurationError,
    ContextLengthError,
    ECOError,
    GenerationCancelledError,
    GuardFailureError,
    InvalidInputError,
)
from .guard import Guard, ScoreParts, check_threshold, unusable_score

MODES: tuple[str, ...] = ("enforce", "shadow", "off")
GuardErrorAction = Literal["fail", "corrupt"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class ECORequest:
    """One request, prepared: the prompt rendered once, its decision, and its seeds.

    ``corruption_seed`` comes from the classified text, so a flagged prompt is corrupted the same
    way every time (the same question gets the same unlearned answer under greedy decoding, and
    an answer cannot be re-rolled by resending the question). ``sampling_seed`` is the caller's:
    ``None`` samples from fresh randomness, a number reproduces the answer.
    """

    prompt: RenderedPrompt
    decision: Decision
    corruption_seed: int
    sampling_seed: int | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt.input_ids)


@dataclass
class ECOResult:
    """One answer and the decision behind it."""

    text: str
    decision: Decision
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    corrupted_tokens: int = 0


class ECOStream:
    """Text chunks of one answer. :attr:`decision` is known before the first chunk;
    :attr:`completion_tokens` and :attr:`finish_reason` are the backend's own, once the last
    chunk has been read."""

    def __init__(self, request: ECORequest, chunks: TextStream, corrupted_tokens: int) -> None:
        self.request = request
        self.corrupted_tokens = corrupted_tokens
        self._chunks = chunks

    @property
    def decision(self) -> Decision:
        return self.request.decision

    @property
    def prompt_tokens(self) -> int:
        return self.request.prompt_tokens

    @property
    def completion_tokens(self) -> int | None:
        return self._chunks.end.completion_tokens if self._chunks.end is not None else None

    @property
    def finish_reason(self) -> str | None:
        return self._chunks.end.finish_reason if self._chunks.end is not None else None

    def __iter__(self) -> ECOStream:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        """Stop generating; the rest of the answer is never computed."""
        self._chunks.close()


class AsyncECOStream(ECOStream):
    """:class:`ECOStream` for ``async for``: each chunk is decoded in a worker thread, so the
    event loop keeps running while the model works.

    A consumer cancelled while it waits for a chunk (``asyncio.wait_for`` timing out, a client
    gone) ends the generation at its next token; :meth:`aclose` then waits for that chunk's
    thread rather than fail on a generator it is still running.
    """

    def __init__(
        self,
        request: ECORequest,
        chunks: TextStream,
        corrupted_tokens: int,
        cancel: threading.Event | None = None,
    ) -> None:
        super().__init__(request, chunks, corrupted_tokens)
        self._cancel = cancel
        self._advancing = threading.Lock()  # one thread in the generator at a time

    def __aiter__(self) -> AsyncECOStream:
        return self

    def _next_chunk(self) -> str | None:
        with self._advancing:
            return next(self._chunks, None)

    def _close_when_free(self) -> None:
        with self._advancing:
            self._chunks.close()

    async def __anext__(self) -> str:
        try:
            chunk = await asyncio.to_thread(self._next_chunk)
        except asyncio.CancelledError:
            if self._cancel is not None:
                self._cancel.set()
            raise
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        if self._cancel is not None:
            self._cancel.set()  # a chunk still being computed ends at its next token
        await asyncio.to_thread(self._close_when_free)


class StreamOptions(TypedDict, total=False):
    """Keywords of :meth:`ECO.stream` and :meth:`ECO.astream` (each optional)."""

    config: GenerationConfig | None
    raw: bool  # the prompt is already a full string: no chat template
    seed: int | None  # sampling seed (random unless given)
    decision: Decision | None  # a decision already made for this prompt
    mode: Mode | None
    threshold: float | None
    tools: ToolSpecs | None
    cancel: threading.Event | None  # set from another thread to end the stream


# Per backend (weakly held), then per pool (name pieces of at most so many letters, with a set of
# excluded words; or the word pieces), embeddings or token ids: engines made by ECO.replace share
# a table.
_REPLACEMENTS: weakref.WeakKeyDictionary[Backend, dict[Hashable, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)
_REPLACEMENTS_LOCK = threading.Lock()


class ECO:
    """A served model that behaves as if it never learned the guard's forget targets.

    >>> eco = ECO.from_pretrained(guard="guards/harry-potter")          # doctest: +SKIP
    >>> eco.generate(["Who is Harry Potter?"])[0].text                  # doctest: +SKIP
    >>> request = eco.prepare("Who is Harry Potter?", seed=7)          # doctest: +SKIP
    >>> request.decision.flagged, eco.generate([request])[0].text       # doctest: +SKIP
    """

    def __init__(
        self,
        backend: Backend,
        guard: Guard | None = None,
        *,
        policy: ECOPolicy | None = None,
        mode: Mode = "enforce",
        batch_size: int = 8,
        on_guard_error: GuardErrorAction = "fail",
    ) -> None:
        """``on_guard_error``: when the guard raises or gives a non-finite score, ``"fail"`` raises
        :class:`GuardFailureError` (the request is refused) and ``"corrupt"`` treats the prompt as
        flagged; neither answers it uncorrupted.
        """
        if on_guard_error not in ("fail", "corrupt"):
            msg = f"on_guard_error must be 'fail' or 'corrupt', got {on_guard_error!r}."
            raise ConfigurationError(msg)
        if not hasattr(backend, "hidden_size"):
            msg = (
                f"ECO's first argument is a model backend, got {type(backend).__name__}; pass "
                "TransformersBackend.from_pretrained(model), or use ECO.from_pretrained(model, guard=...)."
            )
            raise ConfigurationError(msg)
        if guard is not None and not hasattr(guard, "decide_many"):
            msg = f"guard must be a Guard, got {type(guard).__name__}" + (
                "; load a folder with Guard.load(folder), or use ECO.from_pretrained(guard=folder)."
                if isinstance(guard, (str, os.PathLike))
                else "."
            )
            raise ConfigurationError(msg)
        if policy is not None and not isinstance(policy, ECOPolicy):
            msg = f"policy must be an ECOPolicy, got {type(policy).__name__}; build ECOPolicy(...) or ECOPolicy.load(folder)."
            raise ConfigurationError(msg)
        self.on_guard_error: GuardErrorAction = on_guard_error
        self.backend = backend
        self.guard = guard
        self.policy = policy or ECOPolicy()
        self.mode = check_mode(mode)
        if guard is None and self.mode != "off":
            msg = "An ECO engine in enforce or shadow mode needs a guard; fit one (Guard.add_target) or pass mode='off'."
            raise ConfigurationError(msg)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            msg = f"batch_size must be an integer >= 1, got {batch_size!r}."
            raise ConfigurationError(msg)
        self.batch_size = batch_size
        corruption = self.policy.corruption
        validate_corruption(
            corruption.name, corruption.dims, corruption.strength, backend.hidden_size
        )

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        guard: Guard | str | os.PathLike[str] | None = None,
        policy: ECOPolicy | None = None,
        mode: Mode = "enforce",
        **kwargs: Any,
    ) -> ECO:
        """Load a model (default: the embedded SmolLM2) and a guard folder (and its policy.json)."""
        backend = TransformersBackend.from_pretrained(model)
        if isinstance(guard, (str, os.PathLike)):
            folder = Path(guard)
            if policy is None and (folder / "policy.json").is_file():
                policy = ECOPolicy.load(folder)
            guard = Guard.load(folder)
        return cls(backend, guard, policy=policy, mode=mode, **kwargs)

    def replace(self, *, policy: ECOPolicy | None = None, mode: Mode | None = None) -> ECO:
        """An engine over the same backend and guard with another policy and/or mode (cheap)."""
        if policy is None and (mode is None or mode == self.mode):
            return self
        return ECO(
            self.backend,
            self.guard,
            policy=policy or self.policy,
            mode=self.mode if mode is None else mode,
            batch_size=self.batch_size,
            on_guard_error=self.on_guard_error,
        )

    def with_overrides(
        self,
        *,
        classify_window: int | None = None,
        threshold: float | None = None,
        mode: Mode | None = None,
    ) -> ECO:
        """This engine with a skin's own window, threshold or mode (None keeps this engine's).

        A different window or threshold is a different policy, so ``policy_version`` (and the
        cache keys and decision records built on it) tell the skin's answers apart.
        """
        policy = self.policy
        changes: dict[str, Any] = {}
        if classify_window is not None and classify_window != policy.classify_window:
            changes["classify_window"] = classify_window
        if threshold is not None and threshold != policy.threshold:
            changes["threshold"] = threshold
        if changes:
            try:
                policy = ECOPolicy.model_validate({**policy.model_dump(), **changes})
            except ValidationError as err:
                msg = f"Bad override of the engine's policy: {validation_problems(err)}"
                raise InvalidInputError(msg) from None
        return self.replace(policy=policy if changes else None, mode=mode)

    def _term_words(self) -> frozenset[str]:
        return frozenset(
            word
            for terms in (self.guard.terms.values() if self.guard is not None else ())
            for term in terms
            for word in term.split()
        )

    def _replacement_ids(self, longest: int) -> torch.Tensor:
        words = self._term_words()

        def build() -> torch.Tensor:
            ids = name_like_token_ids(self.backend.tokenizer, exclude=words, longest=longest)
            if not ids:
                msg = (
                    "The model's tokenizer has no name-like tokens (a space and a capitalised "
                    f"word of 3-{longest} letters) to draw replacements from; choose another "
                    "corruption."
                )
                raise ConfigurationError(msg)
            return torch.tensor(ids)

        return self._table(("ids", longest, words), build)

    def replacement_embeddings(self, *, longest: int = 10) -> torch.Tensor:
        """Embeddings of the model's name-like tokens of at most ``longest`` letters
        (:func:`~eco_integrations.corruption.name_like_token_ids`), which ``substitute_tokens``
        (and, as word starts, ``invent_words``) moves corrupted tokens toward; the words of the
        guard's target terms are left out, so a corrupted name is never replaced by a piece of
        another forgotten one. Computed once per backend, length and set of terms."""
        ids = self._replacement_ids(longest)
        return self._table(
            (longest, self._term_words()), lambda: self.backend.embed(ids.tolist()).detach()
        )

    def _continuation_ids(self) -> torch.Tensor:
        def build() -> torch.Tensor:
            ids = word_piece_token_ids(self.backend.tokenizer)
            if not ids:
                msg = (
                    "The model's tokenizer has no word pieces (2-4 lower-case letters without a "
                    "leading space) to build invented words from; choose another corruption."
                )
                raise ConfigurationError(msg)
            return torch.tensor(ids)

        return self._table("word piece ids", build)

    def continuation_embeddings(self) -> torch.Tensor:
        """Embeddings of the model's word pieces (:func:`~eco_integrations.corruption.word_piece_token_ids`),
        which ``invent_words`` moves a word's later tokens toward."""
        ids = self._continuation_ids()
        return self._table("word pieces", lambda: self.backend.embed(ids.tolist()).detach())

    def _table(self, key: Hashable, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        with _REPLACEMENTS_LOCK:
            tables = _REPLACEMENTS.setdefault(self.backend, {})
            table = tables.get(key)
            if table is None:
                table = tables[key] = build()
            return table

    def replacements_for(self, corruption: str) -> torch.Tensor | None:
        """The name-like embeddings ``corruption`` reads (word starts for one that builds words
        from pieces), or None when it reads none."""
        if not get_corruption(corruption).uses_replacements:
            return None
        return self.replacement_embeddings(longest=_name_pool_letters(corruption))

    def continuations_for(self, corruption: str) -> torch.Tensor | None:
        """:meth:`continuation_embeddings` when ``corruption`` builds words from pieces, else None."""
        return (
            self.continuation_embeddings() if get_corruption(corruption).uses_word_pieces else None
        )

    # -- identity ------------------------------------------------------------------------------
    @property
    def policy_version(self) -> str:
        guard_part = self.guard.policy_id if self.guard is not None else "no-guard"
        return f"{guard_part}/{self.policy.version_hash}"

    def identifying_params(self) -> dict[str, Any]:
        """Everything that changes answers: for cache keys and traces."""
        c, s = self.policy.corruption, self.policy.selection
        params: dict[str, Any] = {
            "model_name": self.backend.model_name,
            "mode": self.mode,
            "guard_id": self.guard.guard_id if self.guard else None,
            "guard_version": self.guard.version if self.guard else None,
            "guard_sha256": self.guard.content_sha256 if self.guard else None,
            "policy_version": self.policy_version,
            "corruption": c.name,
            "corruption_dims": c.dims,
            "corruption_strength": c.strength,
            "selector": s.name,
            "classify_window": self.policy.classify_window,
            "threshold": self.policy.threshold,
        }
        # classify_roles only when set: unset, the keys of earlier releases stay as they were.
        if self.policy.classify_roles is not None:
            params["classify_roles"] = list(self.policy.classify_roles)
        return params

    # -- the decision --------------------------------------------------------------------------
    def classified_text(self, prompt: PromptInput, *, raw: bool = False) -> str:
        """What the guard reads in ``prompt`` (the latest user turns, and the policy's
        ``classify_roles``); no rendering involved."""
        return classified_text(
            prompt, raw=raw, window=self.policy.classify_window, roles=self.policy.read_roles
        )

    def decide_texts(
        self, texts: Sequence[str], *, mode: Mode | None = None, threshold: float | None = None
    ) -> list[Decision]:
        """The one decision function: a verdict for each text the guard should read.

        ``threshold`` overrides every target's threshold for this call (flagged means
        ``score > threshold``); unset, the policy's ``threshold`` applies, then the guard's own.
        """
        if isinstance(texts, str):
            msg = "decide_texts takes a list of texts and got one string (it would decide on each character); pass [text], or call decide(text)."
            raise InvalidInputError(msg)
        # None, not any falsy value, means the engine's mode: mode="" is a mistake to name.
        mode = check_mode(self.mode if mode is None else mode)
        if mode == "off" or self.guard is None:
            return [self._off_decision(t) for t in texts]
        threshold = check_threshold(threshold if threshold is not None else self.policy.threshold)
        start = time.perf_counter()
        try:
            verdicts = self.guard.decide_many(list(texts), threshold=threshold)
            problem = unusable_score(verdicts)
        except ECOError:
            raise  # the input's fault (an empty text): the caller gets the clear error
        except Exception as err:
            problem = f"{type(err).__name__}: {err}"
        if problem is not None:
            # Fail closed: a broken guard never lets a prompt through uncorrupted.
            if self.on_guard_error == "fail":
                msg = f"The guard failed ({problem}); the request is refused rather than answered unguarded."
                raise GuardFailureError(msg)
            return [self._guard_error_decision(t, mode) for t in texts]
        latency = (time.perf_counter() - start) * 1000 / max(len(verdicts), 1)
        return [
            v.model_copy(
                update={
                    "corrupted": v.flagged and mode == "enforce",
                    "mode": mode,
                    "policy_version": self.policy_version,
                    "latency_ms": latency,
                }
            )
            for v in verdicts
        ]

    def _guard_error_decision(self, text: str, mode: Mode) -> Decision:
        """on_guard_error="corrupt": treat the prompt as flagged (no target, so no target terms)."""
        return self._unscored_decision(text, flagged=True, score=None, threshold=None, mode=mode)

    def decide(
        self,
        prompt: PromptInput,
        *,
        raw: bool = False,
        mode: Mode | None = None,
        threshold: float | None = None,
    ) -> Decision:
        """Classify what the user wrote in ``prompt`` (no rendering, no generation)."""
        return self.decide_texts(
            [self.classified_text(prompt, raw=raw)], mode=mode, threshold=threshold
        )[0]

    def forced_decisions(
        self, texts: Sequence[str], *, target: str | None = None
    ) -> list[Decision]:
        """Decisions that corrupt every text whatever the guard says.

        For calibrating the corruption (the strength search, TOFU's scorer): it is the
        corruption that is measured there, not the guard. The decisions name ``target`` (by
        default the guard's only one), whose terms the ``entities`` selector corrupts: without a
        target it would find no terms and corrupt the whole content, measuring another selector.
        """
        target = self._forced_target(target)
        return [
            self._unscored_decision(
                t, flagged=True, score=1.0, threshold=0.0, mode="enforce", target=target
            )
            for t in texts
        ]

    def _forced_target(self, target: str | None) -> str | None:
        names = list(self.guard.terms) if self.guard is not None else []
        if target is not None and target not in names:
            msg = f"The guard has no target {target!r}; its targets are: {', '.join(names) or 'none'}."
            raise ConfigurationError(msg)
        if target is None and len(names) == 1:
            return names[0]
        if target is None and len(names) > 1 and self.policy.selection.name == "entities":
            msg = f"Forced decisions for the entities selector need the target whose terms to corrupt; the guard has {len(names)} ({', '.join(names)}): pass target=, or search with a selector that reads no terms (content, all, first_n)."
            raise ConfigurationError(msg)
        return target

    def _off_decision(self, text: str) -> Decision:
        return self._unscored_decision(text, flagged=False, score=None, threshold=None, mode="off")

    def _unscored_decision(
        self,
        text: str,
        *,
        flagged: bool,
        score: float | None,
        threshold: float | None,
        mode: Mode,
        target: str | None = None,
    ) -> Decision:
        """A decision the guard's scores did not make (off mode, a forced or a guard-error one)."""
        return Decision(
            flagged=flagged,
            score=score,
            threshold=threshold,
            target=target,
            corrupted=flagged and mode == "enforce",
            mode=mode,
            guard_id=self.guard.guard_id if self.guard else None,
            guard_version=self.guard.version if self.guard else None,
            policy_version=self.policy_version,
            text_sha256=normalized_sha256(text),
        )

    # -- preparation ---------------------------------------------------------------------------
    def prepare(
        self,
        prompt: PromptInput,
        *,
        raw: bool = False,
        mode: Mode | None = None,
        threshold: float | None = None,
        decision: Decision | None = None,
        seed: int | None = None,
        tools: ToolSpecs | None = None,
    ) -> ECORequest:
        """Render ``prompt`` once, decide once (or take ``decision``), and fix the seeds.

        ``seed`` seeds sampling only; the corruption noise is always seeded from the text.
        """
        return self.prepare_many(
            [prompt],
            raw=raw,
            mode=mode,
            threshold=threshold,
            decisions=None if decision is None else [decision],
            seeds=[seed],
            tools=tools,
        )[0]

    def prepare_many(
        self,
        prompts: Sequence[PromptInput],
        *,
        raw: bool = False,
        mode: Mode | None = None,
        threshold: float | None = None,
        decisions: Sequence[Decision] | None = None,
        seeds: Sequence[int | None] | None = None,
        tools: ToolSpecs | None = None,
    ) -> list[ECORequest]:
        """:meth:`prepare` for a batch: one guard pass for every prompt that needs a decision."""
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            msg = f"Expected a list of prompts, got {type(prompts).__name__}; wrap a single prompt as [prompt]."
            raise InvalidInputError(msg)
        if not prompts:
            msg = "Got an empty list of prompts; pass at least one."
            raise InvalidInputError(msg)
        seed_list = _per_prompt(seeds, len(prompts), "seeds")
        rendered = [self._render(i, p, raw, tools) for i, p in enumerate(prompts)]
        if decisions is None:
            chosen = self.decide_texts(
                [r.classified_text for r in rendered], mode=mode, threshold=threshold
            )
        else:
            if mode is not None or threshold is not None:
                msg = "Pass decisions or mode/threshold, not both: a decision already carries its mode and threshold."
                raise InvalidInputError(msg)
            given = _per_prompt(decisions, len(prompts), "decisions")
            chosen = []
            for i, d in enumerate(given):
                if not isinstance(d, Decision):
                    msg = f"Decision {i} is {type(d).__name__}; pass the Decision objects the engine returned."
                    raise InvalidInputError(msg)
                chosen.append(d)
        return [
            ECORequest(r, d, int(text_sha256(r.classified_text)[:8], 16), _check_seed(s))
            for r, d, s in zip(rendered, chosen, seed_list, strict=True)
        ]

    def _render(
        self, index: int, prompt: PromptInput, raw: bool, tools: ToolSpecs | None
    ) -> RenderedPrompt:
        if not isinstance(prompt, (str, list, tuple)):
            msg = f"Prompt {index} is {type(prompt).__name__}; pass a string or a list of chat messages."
            raise InvalidInputError(msg)
        return render(
            self.backend.tokenizer,
            prompt,
            raw=raw,
            window=self.policy.classify_window,
            roles=self.policy.read_roles,
            tools=tools,
        )

    def _requests(
        self, items: Sequence[ECORequest | PromptInput], prepare: dict[str, Any]
    ) -> list[ECORequest]:
        if (
            isinstance(items, Sequence)
            and not isinstance(items, (str, bytes))
            and items
            and all(isinstance(i, ECORequest) for i in items)
        ):
            # ``is``, not ``in``: threshold=0.0 equals False, and a seeds array has no truth value.
            given = {k: v for k, v in prepare.items() if v is not None and v is not False}
            if given:
                msg = f"Prepared requests already carry their settings; drop {', '.join(sorted(given))} or pass prompts."
                raise InvalidInputError(msg)
            return list(items)  # type: ignore[arg-type]
        if isinstance(items, Sequence) and any(isinstance(i, ECORequest) for i in items):
            msg = "Pass either prepared requests or prompts, not a mix of both."
            raise InvalidInputError(msg)
        return self.prepare_many(items, **prepare)  # type: ignore[arg-type]

    def check_length(self, request: ECORequest, max_new_tokens: int) -> None:
        """Raise :class:`ContextLengthError` when ``request``'s prompt and ``max_new_tokens``
        do not fit in the model's context window (what :meth:`generate` checks first)."""
        limit = self.backend.context_window
        if request.prompt_tokens + max_new_tokens > limit:
            msg = (
                f"The prompt has {request.prompt_tokens} tokens and {max_new_tokens} new tokens were asked for, "
                f"but the context window is {limit}. Shorten the prompt or ask for fewer new tokens (max_new_tokens; max_tokens in the chat model and the gateway)."
            )
            raise ContextLengthError(
                msg,
                prompt_tokens=request.prompt_tokens,
                max_new_tokens=max_new_tokens,
                context_window=limit,
            )

    def _target_terms(self, decision: Decision) -> list[str]:
        """The guard's terms for the decision's target (none when no target flagged it)."""
        if self.guard is None or decision.target is None:
            return []
        return list(self.guard.terms.get(decision.target, []))

    def _corruption_mask(self, request: ECORequest, selection: SelectionConfig) -> torch.Tensor:
        """Which prompt positions ``request``'s corruption touches: none unless its decision
        corrupts. :meth:`_row` and :meth:`explain` both read it, so an explanation marks exactly
        the tokens a generation corrupts."""
        if not request.decision.corrupted:
            return torch.zeros(request.prompt_tokens, dtype=torch.bool)
        return select_positions(request.prompt, selection, self._target_terms(request.decision))

    def _row(self, request: ECORequest) -> tuple[PreparedRow, int]:
        """The backend's input: exact ids for a clean request, corrupted embeddings otherwise."""
        row, corrupted, _ = self._row_and_echoes(request, echoes=False)
        return row, corrupted

    def _row_and_echoes(
        self, request: ECORequest, *, echoes: bool = True
    ) -> tuple[PreparedRow, int, list[Echo]]:
        """:meth:`_row`, with the words to write back in its answer (none unless ``echoes`` and
        the policy restores the prompt's words; scoring, which writes no answer, needs none)."""
        ids = request.prompt.input_ids
        if not request.decision.corrupted:
            return PreparedRow(ids, None, request.sampling_seed), 0, []
        mask = self._corruption_mask(request, self.policy.selection)
        c = self.policy.corruption
        generator = torch.Generator().manual_seed(request.corruption_seed)
        continuations = self.continuations_for(c.name)
        clean = self.backend.embed(ids)
        embeds = apply_corruption(
            c.name,
            clean,
            mask,
            dims=c.dims,
            strength=c.strength,
            generator=generator,
            replacements=self.replacements_for(c.name),
            continuations=continuations,
            continues_word=None if continuations is None else word_continuations(request.prompt),
        )
        found = (
            self._echoes(request, mask, clean, embeds)
            if echoes and self.policy.restore_prompt_words
            else []
        )
        return PreparedRow(ids, embeds, request.sampling_seed), int(mask.sum()), found

    def _read_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The token ids and embeddings the policy's corruption moves tokens toward, one table:
        what :meth:`_echoes` looks the model's reading up in. Joined once per backend and pool."""
        name = self.policy.corruption.name
        longest = _name_pool_letters(name)
        pieces = get_corruption(name).uses_word_pieces
        # The parts are cached tables of their own, looked up before the joined table's lock.
        part_ids = [self._replacement_ids(longest)]
        parts = [self.replacement_embeddings(longest=longest)]
        if pieces:
            part_ids.append(self._continuation_ids())
            parts.append(self.continuation_embeddings())
        key = ("read pool", longest, pieces, self._term_words())
        return (
            self._table((*key, "ids"), lambda: torch.cat(part_ids)),
            self._table(key, lambda: torch.cat(parts).float()),
        )

    def _echoes(
        self, request: ECORequest, mask: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor
    ) -> list[Echo]:
        """For each run of corrupted tokens, the words the model reads there (the token of the
        corruption's pool, or the prompt's own, nearest each corrupted embedding) beside the
        prompt's text there."""
        pool_ids, pool = self._read_pool()
        positions = mask.nonzero().flatten()
        rows = corrupted[positions].float()
        # Exact distances (not the matmul shortcut): an invented word lies at distance 0 from its token.
        nearest = torch.cdist(rows, pool, compute_mode="donot_use_mm_for_euclid_dist").min(dim=-1)
        own = (clean[positions].float() - rows).norm(dim=-1)
        read = list(request.prompt.input_ids)
        for i, replaced, token in zip(
            positions.tolist(),
            (own > nearest.values).tolist(),
            pool_ids[nearest.indices].tolist(),
            strict=True,
        ):
            if replaced:
                read[i] = token
        text, offsets = request.prompt.text, request.prompt.offsets
        echoes = []
        # Consecutive positions form one run: one name, read as one invented one.
        for _, group in groupby(enumerate(positions.tolist()), key=lambda pair: pair[1] - pair[0]):
            run = [i for _, i in group]
            echo = Echo.of(
                self.backend.tokenizer.decode([read[i] for i in run]),
                text[offsets[run[0]][0] : offsets[run[-1]][1]],
            )
            if echo is not None:
                echoes.append(echo)
        return echoes

    # -- explanation ---------------------------------------------------------------------------
    def explain(
        self,
        prompt: ECORequest | PromptInput,
        *,
        selection: SelectionConfig | None = None,
        raw: bool = False,
        mode: Mode | None = None,
        threshold: float | None = None,
    ) -> Explanation:
        """The decision on ``prompt`` and the prompt's tokens, marked where corruption would touch.

        ``selection`` replaces the policy's token selector for this explanation only (to compare
        selectors); unset, it is the policy's. Nothing is generated. The marks come from the code
        path generation uses, so they are exactly the positions :meth:`generate` corrupts.
        """
        if selection is not None and not isinstance(selection, SelectionConfig):
            msg = f"selection must be a SelectionConfig, got {type(selection).__name__}."
            raise InvalidInputError(msg)
        chosen = selection or self.policy.selection
        if isinstance(prompt, ECORequest):
            if raw or mode is not None or threshold is not None:
                msg = "A prepared request already carries its settings; drop raw/mode/threshold."
                raise InvalidInputError(msg)
            request = prompt
        else:
            request = self.prepare(prompt, raw=raw, mode=mode, threshold=threshold)
        mask = self._corruption_mask(request, chosen).tolist()
        rendered = request.prompt
        tokens = tuple(
            PromptToken(
                index=i,
                token_id=int(token_id),
                text=rendered.text[start:end],
                start=start,
                end=end,
                corrupted=bool(marked),
            )
            for i, (token_id, (start, end), marked) in enumerate(
                zip(rendered.input_ids, rendered.offsets, mask, strict=True)
            )
        )
        terms: tuple[str, ...] = ()
        if chosen.name == "entities" and request.decision.corrupted:
            terms = tuple(dict.fromkeys([*chosen.terms, *self._target_terms(request.decision)]))
        knowledge = None
        parts = None
        if self.guard is not None and self.guard.targets:
            # Unflagged, no target was chosen: a namesake of any target is why, if anything.
            flagged_target = request.decision.target
            for target in [flagged_target] if flagged_target else self.guard.target_names:
                knowledge = self.guard.knowledge_match(rendered.classified_text, target)
                if knowledge is not None:
                    break
            parts = self.guard.score_parts(rendered.classified_text, flagged_target)
        return Explanation(request, chosen, terms, tokens, knowledge, parts)

    # -- generation ----------------------------------------------------------------------------
    def generate(
        self,
        requests: Sequence[ECORequest] | Sequence[PromptInput],
        *,
        config: GenerationConfig | None = None,
        raw: bool = False,
        seeds: Sequence[int | None] | None = None,
        decisions: Sequence[Decision] | None = None,
        mode: Mode | None = None,
        threshold: float | None = None,
        tools: ToolSpecs | None = None,
        cancel: threading.Event | None = None,
    ) -> list[ECOResult]:
        """Answer each request; flagged ones from corrupted embeddings, in shared batches.

        Prompts are prepared on the way (``raw``, ``seeds``, ``decisions``, ``mode``,
        ``threshold`` and ``tools`` go to :meth:`prepare_many`); prepared requests run as they are.
        Setting ``cancel`` (from another thread) stops generation at the next token and raises
        :class:`GenerationCancelledError`.
        """
        config = _check_config(config)
        prepared = self._requests(
            requests,
            {
                "raw": raw,
                "seeds": seeds,
                "decisions": decisions,
                "mode": mode,
                "threshold": threshold,
                "tools": tools,
            },
        )
        for r in prepared:
            self.check_length(r, config.max_new_tokens)
        rows = [self._row_and_echoes(r) for r in prepared]
        outputs = []
        extra = {} if cancel is None else {"cancel": cancel}
        for start in range(0, len(rows), self.batch_size):
            _check_cancel(cancel)
            outputs.extend(
                self.backend.generate(
                    [row for row, _, _ in rows[start : start + self.batch_size]], config, **extra
                )
            )
        _check_cancel(cancel)
        return [
            ECOResult(
                restore_echoes(g.text, echoes),
                r.decision,
                r.prompt_tokens,
                g.completion_tokens,
                g.finish_reason,
                n,
            )
            for g, r, (_, n, echoes) in zip(outputs, prepared, rows, strict=True)
        ]

    def stream(
        self, request: ECORequest | PromptInput, **options: Unpack[StreamOptions]
    ) -> ECOStream:
        """Stream one answer; the decision is made (and available) before the first token.

        ``options`` are :class:`StreamOptions` (``config``, ``raw``, ``seed``, ``decision``,
        ``mode``, ``threshold``, ``tools``, ``cancel``). Setting ``cancel`` (from another thread)
        ends the stream at the next token.
        """
        return self._open_stream(ECOStream, request, options)

    def _open_stream(
        self, kind: type[_S], request: ECORequest | PromptInput, options: StreamOptions
    ) -> _S:
        unknown = sorted(set(options) - set(StreamOptions.__annotations__))
        if unknown:
            # A typed-dict keyword is not checked at run time: max_new_tokens=3 would stream 128.
            msg = (
                f"stream() got unknown option(s) {', '.join(unknown)}; it takes "
                f"{', '.join(StreamOptions.__annotations__)} (generation settings go in "
                "config=GenerationConfig(max_new_tokens=...))."
            )
            raise InvalidInputError(msg)
        config = _check_config(options.get("config"))
        seed, decision = options.get("seed"), options.get("decision")
        prepare = {
            "raw": options.get("raw", False),
            "seeds": None if seed is None else [seed],
            "decisions": None if decision is None else [decision],
            "mode": options.get("mode"),
            "threshold": options.get("threshold"),
            "tools": options.get("tools"),
        }
        (prepared,) = self._requests([request], prepare)
        self.check_length(prepared, config.max_new_tokens)
        row, corrupted, echoes = self._row_and_echoes(prepared)
        cancel = options.get("cancel")
        if kind is AsyncECOStream:
            # Its own event unless the caller brought one: set when the consumer is cancelled.
            cancel = cancel if cancel is not None else threading.Event()
            stream = _restoring(self.backend.stream(row, config, cancel=cancel), echoes)
            return AsyncECOStream(prepared, stream, corrupted, cancel)  # type: ignore[return-value]
        chunks = (
            self.backend.stream(row, config)
            if cancel is None
            else self.backend.stream(row, config, cancel=cancel)
        )
        return kind(prepared, _restoring(chunks, echoes), corrupted)

    async def agenerate(
        self, requests: Sequence[ECORequest] | Sequence[PromptInput], **kwargs: Any
    ) -> list[ECOResult]:
        """:meth:`generate` in a worker thread, so the event loop keeps running.

        When the awaiting task is cancelled (``asyncio.wait_for`` timing out, a client gone),
        the generation stops at its next token instead of running on in the thread.
        """
        if kwargs.get("cancel") is not None:
            return await asyncio.to_thread(self.generate, requests, **kwargs)
        return await cancellable_in_thread(
            lambda cancel: self.generate(requests, **kwargs, cancel=cancel)
        )

    async def astream(
        self, request: ECORequest | PromptInput, **options: Unpack[StreamOptions]
    ) -> AsyncECOStream:
        """:meth:`stream` for ``async for``; preparing and decoding run in worker threads.

        >>> stream = await eco.astream("Who is Harry Potter?")     # doctest: +SKIP
        >>> async for chunk in stream: ...                          # doctest: +SKIP
        """
        return await asyncio.to_thread(self._open_stream, AsyncECOStream, request, options)

    def next_token_logits(
        self,
        requests: Sequence[ECORequest] | Sequence[PromptInput],
        *,
        raw: bool = True,
        decisions: Sequence[Decision] | None = None,
        seeds: Sequence[int | None] | None = None,
        mode: Mode | None = None,
        threshold: float | None = None,
    ) -> tuple[torch.Tensor, list[Decision]]:
        """Next-token logits after each prompt (for multiple-choice scoring), with the decisions."""
        prepared = self._requests(
            requests,
            {
                "raw": raw if not _all_requests(requests) else False,
                "decisions": decisions,
                "seeds": seeds,
                "mode": mode,
                "threshold": threshold,
            },
        )
        for r in prepared:
            self.check_length(r, 1)
        rows = [self._row(r)[0] for r in prepared]
        logits = [
            self.backend.next_token_logits(rows[i : i + self.batch_size])
            for i in range(0, len(rows), self.batch_size)
        ]
        return torch.cat(logits, dim=0), [r.decision for r in prepared]


_S = TypeVar("_S", bound=ECOStream)


@dataclass(frozen=True)
class PromptToken:
    """One token of a rendered prompt: its id, the characters it covers, and whether the
    request's corruption touches it."""

    index: int
    token_id: int
    text: str  # the characters of the rendered prompt it covers ("" for a special token)
    start: int
    end: int
    corrupted: bool


@dataclass(frozen=True)
class Explanation:
    """What :meth:`ECO.explain` found: the decision, the selector, the terms it looked for and
    every prompt token, the corrupted ones flagged.

    ``terms`` are those the ``entities`` selector searched for (the policy's plus the flagged
    target's); empty for the other selectors and for a prompt that is not corrupted.
    ``knowledge_match`` says which forget-only phrase or dated fact of the flagged target the
    classified text holds, or for a prompt no target flagged which namesake capped its score
    (:meth:`Guard.knowledge_match`); None when nothing matched. ``score_parts`` says where the
    guard's score came from (:meth:`Guard.score_parts`: the flagged target's, or for an unflagged
    prompt the target closest to its threshold); None without a guard.
    """

    request: ECORequest
    selection: SelectionConfig
    terms: tuple[str, ...]
    tokens: tuple[PromptToken, ...]
    knowledge_match: str | None = None
    score_parts: ScoreParts | None = None

    @property
    def decision(self) -> Decision:
        return self.request.decision

    @property
    def corrupted_tokens(self) -> list[PromptToken]:
        return [t for t in self.tokens if t.corrupted]

    def marked_text(self, opening: str = "[[", closing: str = "]]") -> str:
        """The rendered prompt with each corrupted token's characters wrapped in marks.

        A token's leading whitespace stays outside its marks, so " Harry" reads " [[Harry]]".
        """
        text, pieces, cursor = self.request.prompt.text, [], 0
        for token in self.tokens:
            start = max(token.start, cursor)
            if token.end <= start:
                continue  # a special token (no characters) or one sharing a character
            pieces.append(text[cursor:start])
            covered = text[start : token.end]
            if token.corrupted:
                word = covered.lstrip() or covered  # a whitespace-only token is marked whole
                covered = covered[: len(covered) - len(word)] + opening + word + closing
            pieces.append(covered)
            cursor = token.end
        pieces.append(text[cursor:])
        return "".join(pieces)


class _RestoringStream(TextStream):
    """A backend's stream with the answer's echoes of replaced prompt words written back
    (:class:`~eco_integrations._echo.EchoRestorer`): the same text as the whole answer restored."""

    def __init__(self, inner: TextStream, echoes: Sequence[Echo]) -> None:
        self._inner = inner
        self._restorer = EchoRestorer(echoes)
        self._done = False
        self.end = None

    def __next__(self) -> str:
        while not self._done:
            try:
                text = self._restorer.feed(next(self._inner))
            except StopIteration:
                self._done = True
                self.end = self._inner.end
                text = self._restorer.finish()
            if text:
                return text
        raise StopIteration

    def close(self) -> None:
        self._inner.close()


def _name_pool_letters(corruption: str) -> int:
    """The longest name-like token ``corruption`` draws from: word starts of a few letters for
    one that builds words from pieces, whole short names otherwise."""
    return WORD_START_LETTERS if get_corruption(corruption).uses_word_pieces else 10


def _restoring(chunks: TextStream, echoes: Sequence[Echo]) -> TextStream:
    return _RestoringStream(chunks, echoes) if echoes else chunks


def _all_requests(items: object) -> bool:
    return (
        isinstance(items, Sequence)
        and bool(items)
        and all(isinstance(i, ECORequest) for i in items)
    )


async def cancellable_in_thread(work: Callable[[threading.Event], _T]) -> _T:
    """``work(cancel)`` in a worker thread (which copies the context); when the awaiting task
    is cancelled (``asyncio.wait_for`` timing out, a client gone), ``cancel`` is set, so a
    generation stops at its next token instead of running on in the thread."""
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(work, cancel)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _per_prompt(values: Sequence[_T] | None, count: int, name: str) -> list[_T | None]:
    if values is None:
        return [None] * count
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        msg = f"{name} must be a list with one entry per prompt, got {type(values).__name__}."
        raise InvalidInputError(msg)
    if len(values) != count:
        msg = f"Got {len(values)} {name} for {count} prompts; pass one per prompt or none."
        raise InvalidInputError(msg)
    return list(values)


def _check_config(config: object) -> GenerationConfig:
    """The call's generation settings: the defaults for None, a dict read as GenerationConfig."""
    if config is None:
        return GenerationConfig()
    if isinstance(config, GenerationConfig):
        return config
    if isinstance(config, dict):
        return GenerationConfig.model_validate(config)
    msg = (
        f"config must be a GenerationConfig (or a dict of its fields), got {type(config).__name__}."
    )
    raise InvalidInputError(msg)


def _check_seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        msg = f"A seed is an integer, got {type(seed).__name__}."
        raise InvalidInputError(msg)
    if not 0 <= seed < 2**63:
        # torch folds larger and negative seeds onto each other (2**64 - 1 draws as -1).
        msg = f"A seed is an integer in [0, 2**63), got {seed}."
        raise InvalidInputError(msg)
    return seed


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        msg = "Generation was cancelled (the caller set the cancel event)."
        raise GenerationCancelledError(msg)


def check_mode(mode: object) -> Mode:
    if mode not in MODES:
        msg = f"Unknown mode {mode!r}; choose enforce (corrupt flagged prompts), shadow (score only) or off."
        raise ConfigurationError(msg)
    return mode  # type: ignore[return-value]


__all__ = [
    "ECO",
    "MODES",
    "AsyncECOStream",
    "ECORequest",
    "ECOResult",
    "ECOStream",
    "Explanation",
    "PromptToken",
]
