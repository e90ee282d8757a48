"""The ECO engine: guard → token selection → corruption → generation.

:meth:`ECO.decide` is the one decision function; every path (generate, stream, batch, async,
the LangChain and LlamaIndex skins) calls it, or accepts a decision it produced.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .backends.base import Backend, Generation, PreparedRow
from .backends.transformers import TransformersBackend
from .config import Decision, ECOPolicy, GenerationConfig, Mode
from .corruption import apply_corruption, validate_corruption
from .encoder import text_sha256
from .exceptions import (
    ConfigurationError,
    ContextLengthError,
    ECOError,
    GenerationCancelledError,
    GuardFailureError,
    InvalidInputError,
)
from .guard import Guard
from .prompting import PromptInput, RenderedPrompt, render, select_positions

MODES: tuple[str, ...] = ("enforce", "shadow", "off")
GuardErrorAction = Literal["fail", "corrupt"]


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
    """An iterator of text chunks whose :attr:`decision` is known before the first chunk."""

    def __init__(self, decision: Decision, chunks: Iterator[str], prompt_tokens: int) -> None:
        self.decision = decision
        self.prompt_tokens = prompt_tokens
        self._chunks = chunks

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def __next__(self) -> str:
        return next(self._chunks)


class ECO:
    """A served model that behaves as if it never learned the guard's forget targets.

    >>> eco = ECO.from_pretrained(guard="guards/harry-potter")          # doctest: +SKIP
    >>> eco.generate(["Who is Harry Potter?"])[0].text                  # doctest: +SKIP
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
        self.on_guard_error: GuardErrorAction = on_guard_error
        self.backend = backend
        self.guard = guard
        self.policy = policy or ECOPolicy()
        self.mode = _check_mode(mode)
        if guard is None and self.mode != "off":
            msg = "An ECO engine in enforce or shadow mode needs a guard; fit one (Guard.add_target) or pass mode='off'."
            raise ConfigurationError(msg)
        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}."
            raise ConfigurationError(msg)
        self.batch_size = batch_size
        corruption = self.policy.corruption
        validate_corruption(corruption.name, corruption.dims, corruption.strength, backend.hidden_size)

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

    # -- identity ------------------------------------------------------------------------------
    @property
    def policy_version(self) -> str:
        guard_part = self.guard.policy_id if self.guard is not None else "no-guard"
        return f"{guard_part}/{self.policy.version_hash}"

    def identifying_params(self) -> dict[str, Any]:
        """Everything that changes answers: for cache keys and traces."""
        c, s = self.policy.corruption, self.policy.selection
        return {
            "model_name": self.backend.model_name,
            "mode": self.mode,
            "guard_id": self.guard.guard_id if self.guard else None,
            "guard_version": self.guard.version if self.guard else None,
            "policy_version": self.policy_version,
            "corruption": c.name,
            "corruption_dims": c.dims,
            "corruption_strength": c.strength,
            "selector": s.name,
            "classify_window": self.policy.classify_window,
        }

    # -- the decision --------------------------------------------------------------------------
    def classified_text(self, prompt: PromptInput, *, raw: bool = False) -> str:
        return render(self.backend.tokenizer, prompt, raw=raw, window=self.policy.classify_window).classified_text

    def decide_texts(self, texts: Sequence[str], *, mode: Mode | None = None) -> list[Decision]:
        """Decisions for already-extracted texts (the user's words, not the rendered prompt)."""
        mode = _check_mode(mode or self.mode)
        if mode == "off" or self.guard is None:
            return [self._off_decision(t) for t in texts]
        start = time.perf_counter()
        try:
            verdicts = self.guard.decide_many(list(texts))
            problem = next((f"a score of {v.score}" for v in verdicts if v.score is None or not math.isfinite(v.score)), None)
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
            Decision(
                **{**v.model_dump(), "latency_ms": latency},
                corrupted=v.flagged and mode == "enforce",
                mode=mode,
                policy_version=self.policy_version,
            )
            for v in verdicts
        ]

    def _guard_error_decision(self, text: str, mode: Mode) -> Decision:
        """on_guard_error="corrupt": treat the prompt as flagged (no target, so no target terms)."""
        return Decision(
            flagged=True, score=None, threshold=None, target=None, corrupted=mode == "enforce", mode=mode,
            guard_id=self.guard.guard_id if self.guard else None,
            guard_version=self.guard.version if self.guard else None,
            policy_version=self.policy_version, text_sha256=text_sha256(text),
        )

    def decide(self, prompt: PromptInput, *, raw: bool = False, mode: Mode | None = None) -> Decision:
        """The one decision function: classify what the user wrote in ``prompt``."""
        return self.decide_texts([self.classified_text(prompt, raw=raw)], mode=mode)[0]

    def _off_decision(self, text: str) -> Decision:
        return Decision(
            flagged=False, score=None, threshold=None, target=None, corrupted=False, mode="off",
            guard_id=self.guard.guard_id if self.guard else None,
            guard_version=self.guard.version if self.guard else None,
            policy_version=self.policy_version, text_sha256=text_sha256(text),
        )

    # -- preparation ---------------------------------------------------------------------------
    def _render_all(self, prompts: Sequence[PromptInput], raw: bool, tools: Sequence[Mapping[str, Any]] | None) -> list[RenderedPrompt]:
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            msg = f"Expected a list of prompts, got {type(prompts).__name__}; wrap a single prompt as [prompt]."
            raise InvalidInputError(msg)
        if len(prompts) == 0:
            msg = "The list of prompts is empty; pass at least one prompt."
            raise InvalidInputError(msg)
        rendered = []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, (str, list, tuple)):
                msg = f"Prompt {i} is {type(prompt).__name__}; pass a string or a list of chat messages."
                raise InvalidInputError(msg)
            rendered.append(render(self.backend.tokenizer, prompt, raw=raw, window=self.policy.classify_window, tools=tools))
        return rendered

    def _check_length(self, rendered: RenderedPrompt, max_new_tokens: int) -> None:
        limit = self.backend.context_window
        if len(rendered.input_ids) + max_new_tokens > limit:
            msg = (
                f"The prompt has {len(rendered.input_ids)} tokens and {max_new_tokens} new tokens were asked for, "
                f"but the context window is {limit}. Shorten the prompt or lower max_new_tokens."
            )
            raise ContextLengthError(msg, prompt_tokens=len(rendered.input_ids), max_new_tokens=max_new_tokens, context_window=limit)

    def _prepare(self, rendered: RenderedPrompt, decision: Decision, seed: int | None) -> tuple[PreparedRow, int]:
        seed = seed if seed is not None else int(decision.text_sha256[:8], 16)
        if not decision.corrupted:
            return PreparedRow(rendered.input_ids, None, seed), 0
        terms = self.guard.terms.get(decision.target or "", []) if self.guard else []
        mask = select_positions(rendered, self.policy.selection, terms)
        c = self.policy.corruption
        generator = torch.Generator().manual_seed(seed)
        embeds = apply_corruption(c.name, self.backend.embed(rendered.input_ids), mask, dims=c.dims, strength=c.strength, generator=generator)
        return PreparedRow(rendered.input_ids, embeds, seed), int(mask.sum())

    def _decisions(self, rendered: list[RenderedPrompt], decisions: Sequence[Decision] | None, mode: Mode | None) -> list[Decision]:
        if decisions is None:
            return self.decide_texts([r.classified_text for r in rendered], mode=mode)
        if len(decisions) != len(rendered):
            msg = f"Got {len(decisions)} decisions for {len(rendered)} prompts; pass one per prompt or none."
            raise InvalidInputError(msg)
        return list(decisions)

    # -- generation ----------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[PromptInput],
        *,
        config: GenerationConfig | None = None,
        raw: bool = False,
        seeds: Sequence[int | None] | None = None,
        decisions: Sequence[Decision] | None = None,
        mode: Mode | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[ECOResult]:
        """Answer each prompt; flagged ones from corrupted embeddings, in shared batches.

        ``decisions`` lets a caller that already classified the turn (an agent middleware, a
        query engine) reuse its decision instead of classifying again. Setting ``cancel`` (from
        another thread) stops generation at the next token and raises
        :class:`GenerationCancelledError`.
        """
        config = config or GenerationConfig()
        rendered = self._render_all(prompts, raw, tools)
        for r in rendered:
            self._check_length(r, config.max_new_tokens)
        chosen = self._decisions(rendered, decisions, mode)
        seed_list = list(seeds) if seeds is not None else [None] * len(rendered)
        if len(seed_list) != len(rendered):
            msg = f"Got {len(seed_list)} seeds for {len(rendered)} prompts."
            raise InvalidInputError(msg)
        prepared = [self._prepare(r, d, s) for r, d, s in zip(rendered, chosen, seed_list)]
        outputs: list[Generation] = []
        extra = {} if cancel is None else {"cancel": cancel}
        for start in range(0, len(prepared), self.batch_size):
            _check_cancel(cancel)
            outputs.extend(self.backend.generate([row for row, _ in prepared[start : start + self.batch_size]], config, **extra))
        _check_cancel(cancel)
        return [
            ECOResult(g.text, d, g.prompt_tokens, g.completion_tokens, g.finish_reason, n)
            for g, d, (_, n) in zip(outputs, chosen, prepared)
        ]

    def stream(
        self,
        prompt: PromptInput,
        *,
        config: GenerationConfig | None = None,
        raw: bool = False,
        seed: int | None = None,
        decision: Decision | None = None,
        mode: Mode | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        cancel: threading.Event | None = None,
    ) -> ECOStream:
        """Stream one answer; the decision is made (and available) before the first token.

        Setting ``cancel`` (from another thread) ends the stream at the next token.
        """
        config = config or GenerationConfig()
        rendered = self._render_all([prompt], raw, tools)[0]
        self._check_length(rendered, config.max_new_tokens)
        chosen = self._decisions([rendered], None if decision is None else [decision], mode)[0]
        row, _ = self._prepare(rendered, chosen, seed)
        chunks = self.backend.stream(row, config) if cancel is None else self.backend.stream(row, config, cancel=cancel)
        return ECOStream(chosen, chunks, len(rendered.input_ids))

    async def agenerate(self, prompts: Sequence[PromptInput], **kwargs: Any) -> list[ECOResult]:
        """:meth:`generate` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.generate, prompts, **kwargs)

    async def astream(self, prompt: PromptInput, **kwargs: Any) -> AsyncIterator[str]:
        """:meth:`stream` with each chunk fetched in a worker thread."""
        stream = await asyncio.to_thread(self.stream, prompt, **kwargs)
        sentinel = object()
        while True:
            chunk = await asyncio.to_thread(next, stream, sentinel)
            if chunk is sentinel:
                return
            yield chunk  # type: ignore[misc]

    def next_token_logits(
        self,
        prompts: Sequence[PromptInput],
        *,
        raw: bool = True,
        decisions: Sequence[Decision] | None = None,
        seeds: Sequence[int | None] | None = None,
        mode: Mode | None = None,
    ) -> tuple[torch.Tensor, list[Decision]]:
        """Next-token logits after each prompt (for multiple-choice scoring), with the decisions."""
        rendered = self._render_all(prompts, raw, None)
        for r in rendered:
            self._check_length(r, 1)
        chosen = self._decisions(rendered, decisions, mode)
        seed_list = list(seeds) if seeds is not None else [None] * len(rendered)
        rows = [self._prepare(r, d, s)[0] for r, d, s in zip(rendered, chosen, seed_list)]
        logits = [self.backend.next_token_logits(rows[i : i + self.batch_size]) for i in range(0, len(rows), self.batch_size)]
        return torch.cat(logits, dim=0), chosen


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        msg = "Generation was cancelled (the caller set the cancel event)."
        raise GenerationCancelledError(msg)


def _check_mode(mode: object) -> Mode:
    if mode not in MODES:
        msg = f"Unknown mode {mode!r}; choose enforce (corrupt flagged prompts), shadow (score only) or off."
        raise ConfigurationError(msg)
    return mode  # type: ignore[return-value]
