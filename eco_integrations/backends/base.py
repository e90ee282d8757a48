"""The interface every backend implements."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from ..config import GenerationConfig


@dataclass
class PreparedRow:
    """One prompt as token ids, with corrupted embeddings when the guard flagged it.

    ``embeds is None`` means the exact embedding lookup: the row runs as the plain model would.
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
    def generate(self, rows: Sequence[PreparedRow], config: GenerationConfig, *, cancel: threading.Event | None = None) -> list[Generation]: ...

    def stream(self, row: PreparedRow, config: GenerationConfig, *, cancel: threading.Event | None = None) -> Iterator[str]: ...

    def next_token_logits(self, rows: Sequence[PreparedRow]) -> torch.Tensor: ...
