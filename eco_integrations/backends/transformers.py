"""Generation with a local transformers causal LM.

Flagged rows run through ``inputs_embeds`` (with ``input_ids`` alongside, so outputs keep the
usual shape and logits processors still see the ids); benign rows get the exact embedding
lookup; a batch without a flagged row takes the plain ``generate(input_ids=...)`` call. No
forward hooks: every request carries its own embeddings, so concurrent requests cannot leak
corruption into each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..config import GenerationConfig
from ..models import load_causal_lm
from .base import Generation, PreparedRow

# torch.manual_seed is process-global: seeded sampling holds this lock for its generate call.
_SAMPLING_LOCK = threading.Lock()


class TransformersBackend:
    """A causal LM and its tokenizer, ready for batched ECO generation.

    >>> backend = TransformersBackend.from_pretrained()   # the embedded SmolLM2  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str | None = None) -> None:
        self.model = model
        self._tokenizer = tokenizer
        self.model_name = model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self._eos_ids = _eos_ids(model, tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> TransformersBackend:
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
        return int(getattr(config, "max_position_embeddings", None) or getattr(self._tokenizer, "model_max_length", 2048))

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def embed(self, input_ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            ids = torch.tensor([input_ids], device=self.device)
            return self.model.get_input_embeddings()(ids)[0].clone()

    # -- batching -----------------------------------------------------------------------------
    def _pad(self, rows: Sequence[PreparedRow]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
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
                embeds[b, length - len(row.input_ids) :] = row.embeds.to(embeds.dtype).to(embeds.device)
        return ids, mask, embeds

    def _generate_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        from transformers import GenerationConfig as HFGenerationConfig

        sampling = config.temperature > 0
        hf = HFGenerationConfig(
            max_new_tokens=config.max_new_tokens,
            do_sample=sampling,
            temperature=config.temperature if sampling else None,
            top_p=config.top_p if sampling else None,
            top_k=config.top_k if sampling else None,
            repetition_penalty=config.repetition_penalty,
            pad_token_id=self._tokenizer.pad_token_id,
            eos_token_id=self._eos_ids,
            stop_strings=list(config.stop) or None,
        )
        kwargs: dict[str, Any] = {"generation_config": hf}
        if config.stop:
            kwargs["tokenizer"] = self._tokenizer
        return kwargs

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, embeds: torch.Tensor | None, kwargs: dict[str, Any], seed: int | None, sampling: bool) -> torch.Tensor:
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if embeds is not None:
            inputs["inputs_embeds"] = embeds
        with torch.no_grad():
            if sampling and seed is not None:
                with _SAMPLING_LOCK:
                    torch.manual_seed(seed)
                    return self.model.generate(**inputs, **kwargs)
            return self.model.generate(**inputs, **kwargs)

    def generate(self, rows: Sequence[PreparedRow], config: GenerationConfig, *, cancel: threading.Event | None = None) -> list[Generation]:
        if not rows:
            return []
        sampling = config.temperature > 0
        seeds = {r.seed for r in rows}
        if sampling and len(seeds) > 1:
            # One seed per request must mean one output per request: sample rows one by one.
            return [self.generate([r], config, cancel=cancel)[0] for r in rows]
        ids, mask, embeds = self._pad(rows)
        kwargs = self._generate_kwargs(config)
        if cancel is not None:
            kwargs["stopping_criteria"] = _stop_when(cancel)
        out = self._run(ids, mask, embeds, kwargs, rows[0].seed, sampling)
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

    def stream(self, row: PreparedRow, config: GenerationConfig, *, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield text chunks as they are generated; stop sequences are never emitted."""
        from transformers import TextIteratorStreamer

        cancelled = threading.Event()
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        ids, mask, embeds = self._pad([row])
        kwargs = self._generate_kwargs(config)
        kwargs.update(streamer=streamer, stopping_criteria=_stop_when(cancelled, *([cancel] if cancel is not None else [])))
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._run(ids, mask, embeds, kwargs, row.seed, config.temperature > 0)
            except BaseException as err:  # surfaced in the consumer's thread below
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        held = max((len(s) for s in config.stop), default=1) - 1
        buffer = ""
        try:
            for piece in streamer:
                buffer += piece
                cut = _cut_at_stop(buffer, config.stop)
                if cut is not None:
                    if buffer[:cut]:
                        yield buffer[:cut]
                    buffer = ""
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

    def next_token_logits(self, rows: Sequence[PreparedRow]) -> torch.Tensor:
        """Logits of the token after each prompt, ``[len(rows), vocab]`` (float32)."""
        ids, mask, embeds = self._pad(rows)
        with torch.no_grad():
            # Left padding: positions must start at 0 on each row's first real token, as in generate().
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            if embeds is None:
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            else:
                out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=1)
        return out.logits[:, -1, :].float()


def _stop_when(*events: threading.Event) -> Any:
    """A stopping criterion ending generation at the next token once any of ``events`` is set."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            stop = any(event.is_set() for event in events)
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancel()])


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    found = getattr(model.generation_config, "eos_token_id", None)
    ids = list(found) if isinstance(found, (list, tuple)) else ([found] if found is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _cut_at_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
