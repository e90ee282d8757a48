"""Generation with a local transformers causal LM.

Flagged rows run through ``inputs_embeds`` (with ``input_ids`` alongside, so outputs keep the
usual shape and logits processors still see the ids); benign rows get the exact embedding
lookup; a batch without a flagged row takes the plain ``generate(input_ids=...)`` call. No
forward hooks: every request carries its own embeddings, so concurrent requests cannot leak
corruption into each other.

Sampling draws each row's tokens from that row's own ``torch.Generator`` (seeded by the caller,
or from fresh randomness), never from torch's process-wide generator: a sampled batch stays one
batch, concurrent requests need no lock, and a caller's seed reproduces its answer whatever else
shares the batch.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
from collections.abc import Generator, Sequence
from typing import Any

import torch

from .._models import load_causal_lm
from ..config import GenerationConfig
from ..exceptions import ConfigurationError
from ._base import Generation, PreparedRow, StreamEnd, TextStream


class TransformersBackend:
    """A causal LM and its tokenizer, ready for batched ECO generation.

    >>> backend = TransformersBackend.from_pretrained()   # the embedded SmolLM2  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str | None = None) -> None:
        # Checked here: a swapped or missing argument would fail later, deep in generation.
        if not (hasattr(model, "config") and hasattr(model, "get_input_embeddings")):
            msg = f"model is a {type(model).__name__}, not a transformers causal LM; pass AutoModelForCausalLM.from_pretrained(...) (or a name to TransformersBackend.from_pretrained)."
            raise ConfigurationError(msg)
        if not (callable(tokenizer) and hasattr(tokenizer, "pad_token_id")):
            msg = f"tokenizer is a {type(tokenizer).__name__}, not a transformers tokenizer; pass AutoTokenizer.from_pretrained(...) for the same model."
            raise ConfigurationError(msg)
        self.model = model
        self._tokenizer = tokenizer
        self.model_name = (
            model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self._eos_ids = _eos_ids(model, tokenizer)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> TransformersBackend:
        model, tokenizer, name = load_causal_lm(name_or_path, **kwargs)
        return cls(model, tokenizer, model_name=name)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def context_window(self) -> int:
        config = self.model.config
        window: Any = getattr(config, "max_position_embeddings", None) or getattr(
            self._tokenizer, "model_max_length", 2048
        )
        return int(window)

    @property
    def device(self) -> torch.device:
        device: torch.device = self.model.get_input_embeddings().weight.device
        return device

    def embed(self, input_ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            ids = torch.tensor([input_ids], device=self.device)
            embeds: torch.Tensor = self.model.get_input_embeddings()(ids)[0].clone()
        return embeds

    # -- batching -----------------------------------------------------------------------------
    def _pad(
        self, rows: Sequence[PreparedRow]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        length = max(len(r.input_ids) for r in rows)
        pad_id = self._tokenizer.pad_token_id
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, length - len(row.input_ids) :] = torch.tensor(row.input_ids)
            mask[b, length - len(row.input_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        if all(r.embeds is None for r in rows):
            return ids, mask, None
        with torch.no_grad():
            embeds = self.model.get_input_embeddings()(ids).clone()
        for b, row in enumerate(rows):
            if row.embeds is not None:
                embeds[b, length - len(row.input_ids) :] = row.embeds.to(embeds.dtype).to(
                    embeds.device
                )
        return ids, mask, embeds

    def _generate_kwargs(
        self, config: GenerationConfig, rows: Sequence[PreparedRow]
    ) -> dict[str, Any]:
        from transformers import GenerationConfig as HFGenerationConfig
        from transformers import LogitsProcessorList

        hf = HFGenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=config.max_new_tokens,
            do_sample=False,  # sampled rows are drawn by _RowSampler, which generate() then follows
            repetition_penalty=config.repetition_penalty,
            pad_token_id=self._tokenizer.pad_token_id,
            eos_token_id=self._eos_ids,
            stop_strings=list(config.stop) or None,
        )
        kwargs: dict[str, Any] = {"generation_config": hf}
        if config.temperature > 0:
            kwargs["logits_processor"] = LogitsProcessorList(
                [_RowSampler(config, [r.seed for r in rows])]
            )
        if config.stop:
            kwargs["tokenizer"] = self._tokenizer
        return kwargs

    def _run(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        embeds: torch.Tensor | None,
        kwargs: dict[str, Any],
    ) -> torch.Tensor:
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if embeds is not None:
            inputs["inputs_embeds"] = embeds
        with torch.no_grad():
            out: torch.Tensor = self.model.generate(**inputs, **kwargs)
        return out

    def generate(
        self,
        rows: Sequence[PreparedRow],
        config: GenerationConfig,
        *,
        cancel: threading.Event | None = None,
    ) -> list[Generation]:
        if not rows:
            return []
        ids, mask, embeds = self._pad(rows)
        kwargs = self._generate_kwargs(config, rows)
        if cancel is not None:
            kwargs["stopping_criteria"] = _stop_when(cancel)
        out = self._run(ids, mask, embeds, kwargs)
        new = out[:, ids.shape[1] :]
        results = []
        for b, row in enumerate(rows):
            tokens = new[b].tolist()
            finish = "length"
            for j, tok in enumerate(tokens):
                if tok in self._eos_ids:
                    tokens, finish = tokens[:j], "stop"
                    break
            text = self._tokenizer.decode(tokens, skip_special_tokens=True)
            cut = _cut_at_stop(text, config.stop)
            if cut is not None:
                text, finish = text[:cut], "stop"
            results.append(Generation(text, len(row.input_ids), len(tokens), finish))
        return results

    def stream(
        self, row: PreparedRow, config: GenerationConfig, *, cancel: threading.Event | None = None
    ) -> TextStream:
        """Text chunks as they are generated (stop sequences are never emitted), then the
        number of tokens generated and why generation ended. Setting ``cancel`` stops at the next token."""
        return TextStream(self._stream(row, config, cancel))

    def _stream(
        self, row: PreparedRow, config: GenerationConfig, cancel: threading.Event | None = None
    ) -> Generator[str, None, StreamEnd]:
        cancelled = threading.Event()
        streamer = _counting_streamer_class()(self._tokenizer, self._eos_ids)
        ids, mask, embeds = self._pad([row])
        kwargs = self._generate_kwargs(config, [row])
        kwargs.update(
            streamer=streamer,
            stopping_criteria=_stop_when(cancelled, *([cancel] if cancel is not None else [])),
        )
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._run(ids, mask, embeds, kwargs)
            except BaseException as err:  # surfaced in the consumer's thread below
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        held = max((len(s) for s in config.stop), default=1) - 1
        buffer = ""
        stopped_at_sequence = False
        try:
            for piece in streamer:
                buffer += piece
                cut = _cut_at_stop(buffer, config.stop)
                if cut is not None:
                    if buffer[:cut]:
                        yield buffer[:cut]
                    buffer = ""
                    stopped_at_sequence = True
                    cancelled.set()
                    break
                # Hold back a tail that could be the start of a stop sequence.
                ready = len(buffer) - held
                if ready > 0:
                    yield buffer[:ready]
                    buffer = buffer[ready:]
            else:
                if buffer:
                    yield buffer
        finally:
            cancelled.set()
            thread.join()
        if errors:
            raise errors[0]
        reached_length = streamer.completion_tokens >= config.max_new_tokens
        finish = (
            "stop" if stopped_at_sequence or streamer.saw_eos or not reached_length else "length"
        )
        return StreamEnd(streamer.completion_tokens, finish)

    def next_token_logits(self, rows: Sequence[PreparedRow]) -> torch.Tensor:
        """Logits of the token after each prompt, ``[len(rows), vocab]`` (float32)."""
        ids, mask, embeds = self._pad(rows)
        with torch.no_grad():
            # Left padding: positions must start at 0 on each row's first real token, as in generate().
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            if embeds is None:
                out = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
                )
            else:
                out = self.model(
                    inputs_embeds=embeds,
                    attention_mask=mask,
                    position_ids=positions,
                    logits_to_keep=1,
                )
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits


class _RowSampler:
    """Samples every row's next token with that row's own generator.

    It returns scores that are ``-inf`` everywhere but the drawn token, so ``generate()`` runs
    greedy and takes the draw. Rows without a seed get a generator seeded from fresh randomness.
    """

    def __init__(self, config: GenerationConfig, seeds: Sequence[int | None]) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self._warpers: list[Any] = [TemperatureLogitsWarper(config.temperature)]
        if config.top_k is not None:
            self._warpers.append(TopKLogitsWarper(config.top_k))
        if config.top_p < 1.0:
            self._warpers.append(TopPLogitsWarper(config.top_p))
        self._generators = [
            torch.Generator().manual_seed(seed if seed is not None else secrets.randbits(63))
            for seed in seeds
        ]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for warper in self._warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1).cpu()
        drawn = torch.stack(
            [torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(self._generators)]
        )
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, drawn.to(scores.device), 0.0)


@functools.cache
def _counting_streamer_class() -> type[Any]:
    # Built on first use: importing transformers' streamer at module load would slow every import.
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        """A text streamer that also counts the generated tokens (EOS excluded)."""

        def __init__(self, tokenizer: Any, eos_ids: Sequence[int]) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
            self._eos = set(eos_ids)
            self.completion_tokens = 0
            self.saw_eos = False

        def put(self, value: torch.Tensor) -> None:
            if not self.next_tokens_are_prompt:
                for token in value.flatten().tolist():
                    if token in self._eos:
                        self.saw_eos = True
                    elif not self.saw_eos:
                        self.completion_tokens += 1
            super().put(value)  # type: ignore[no-untyped-call]

    return CountingStreamer


def _stop_when(*events: threading.Event) -> Any:
    """A stopping criterion ending generation at the next token once any of ``events`` is set."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancel(StoppingCriteria):
        def __call__(
            self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
        ) -> torch.Tensor:
            stop = any(event.is_set() for event in events)
            return torch.full(
                (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([_Cancel()])


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    found = getattr(model.generation_config, "eos_token_id", None)
    ids = (
        list(found) if isinstance(found, (list, tuple)) else ([found] if found is not None else [])
    )
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _cut_at_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
