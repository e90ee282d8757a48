"""The interface every backend implements."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from ..config import GenerationConfig


@dataclass
class PreparedRow:
    """One prompt as token ids, with corrupted embeddings when the guard flagged it.

    ``embeds is None`` means the exact embedding lookup: the row runs as the plain model would.
    ``seed`` seeds this row's sampling alone; ``None`` samples from fresh randomness.
    """

    input_ids: list[int]
    embeds: torch.Tensor | None = None
    seed: int | None = None


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop sequence) or "length"


@dataclass(frozen=True)
class StreamEnd:
    """What a backend reports once a stream is over: its own token count and finish reason."""

    completion_tokens: int
    finish_reason: str


class TextStream(Iterator[str]):
    """Text chunks from a backend; :attr:`end` is set when the last chunk has been read.

    Backends write their streams as generators that ``return StreamEnd(...)``; this wrapper keeps
    that return value, which a ``for`` loop would otherwise drop.
    """

    def __init__(self, chunks: Generator[str, None, StreamEnd]) -> None:
        self._chunks = chunks
        self.end: StreamEnd | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._chunks)
        except StopIteration as stop:
            self.end = stop.value
            raise

    def close(self) -> None:
        """Stop generating (the backend cancels the work it started for this stream)."""
        self._chunks.close()


@runtime_checkable
class Backend(Protocol):
    model_name: str

    @property
    def hidden_size(self) -> int: ...

    @property
    def context_window(self) -> int: ...

    @property
    def tokenizer(self) -> Any: ...

    def embed(self, input_ids: list[int]) -> torch.Tensor: ...

    # ``cancel``: when set, generation stops at the next token (the caller discards the answer).
    def generate(
        self,
        rows: Sequence[PreparedRow],
        config: GenerationConfig,
        *,
        cancel: threading.Event | None = None,
    ) -> list[Generation]: ...

    def stream(
        self, row: PreparedRow, config: GenerationConfig, *, cancel: threading.Event | None = None
    ) -> TextStream: ...

    def next_token_logits(self, rows: Sequence[PreparedRow]) -> torch.Tensor: ...
