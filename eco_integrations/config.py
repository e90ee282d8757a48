"""Pydantic models for settings, decisions and saved policies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ._validation import validation_problems
from .corruption import get_corruption, validate_corruption
from .exceptions import ArtifactError, ConfigurationError

Mode = Literal["enforce", "shadow", "off"]
SelectorName = Literal["content", "all", "entities", "first_n"]
ChatRole = Literal["system", "user", "assistant", "tool"]
CHAT_ROLES: tuple[ChatRole, ...] = ("system", "user", "assistant", "tool")
Threshold = Annotated[float, Field(ge=0.0, lt=1.0)]
"""A threshold on a guard score (flagged means score > threshold): a probability in [0, 1)."""
POLICY_SCHEMA_VERSION = 1
SELECTORS: tuple[str, ...] = ("content", "all", "entities", "first_n")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorruptionConfig(_Strict):
    """Which corruption to apply to the selected prompt tokens, and how hard."""

    name: str = Field(
        default="rand_noise_first_n", description="A name from `available_corruptions()`."
    )
    dims: int | None = Field(
        default=None, description="Dimensions touched (n or k); unset for functions without it."
    )
    strength: float | None = Field(
        default=None, description="Noise standard deviation; unset for zero/flip functions."
    )

    @model_validator(mode="after")
    def _check(self) -> CorruptionConfig:
        try:
            validate_corruption(self.name, self.dims, self.strength)
        except ConfigurationError as err:
            raise ValueError(str(err)) from None
        return self


class SelectionConfig(_Strict):
    """Which prompt positions get corrupted when a prompt is flagged."""

    # entities by default: corrupting only the target's names leaves the question readable, so the
    # answer stays a fluent answer to it (benchmarks/default_corruption.py measured the choice).
    name: SelectorName = Field(default="entities", description="entities | content | all | first_n")
    n: int | None = Field(
        default=None, description="For first_n: how many content tokens from the start."
    )
    terms: tuple[str, ...] = Field(
        (), description="For entities: extra terms to corrupt (mined terms are added)."
    )

    @field_validator("name", mode="before")
    @classmethod
    def _known(cls, value: object) -> object:
        if value not in SELECTORS:
            msg = f"Unknown token selector {value!r}. Choose one of: {', '.join(SELECTORS)}."
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check(self) -> SelectionConfig:
        if self.name == "first_n" and (self.n is None or self.n < 1):
            msg = "The first_n selector needs n >= 1 (how many tokens to corrupt)."
            raise ValueError(msg)
        if self.name != "first_n" and self.n is not None:
            msg = f"n is only read by the first_n selector, not by {self.name!r}; leave it unset."
            raise ValueError(msg)
        return self


GREEDY_BELOW = 1e-5
"""A temperature below this decodes greedily (vLLM's threshold)."""


class GenerationConfig(_Strict):
    """Decoding parameters shared by every path."""

    max_new_tokens: int = Field(default=128, ge=1, le=32768)
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        description=f"0 means greedy decoding (so does anything below {GREEDY_BELOW}, as in vLLM).",
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    # Bounded: a penalty near 0 or infinity divides or multiplies the logits into inf or NaN.
    repetition_penalty: float | None = Field(default=None, ge=0.01, le=100.0)
    stop: tuple[str, ...] = ()

    @field_validator("temperature", mode="after")
    @classmethod
    def _greedy_when_tiny(cls, value: float) -> float:
        # Sampling at 1e-45 divides the logits into inf and fails inside torch.
        return 0.0 if value < GREEDY_BELOW else value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("stop", mode="after")
    @classmethod
    def _nonempty_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in value):
            msg = "Stop sequences must be non-empty strings."
            raise ValueError(msg)
        return value


class ECOPolicy(_Strict):
    """Everything besides the guard that decides what a flagged prompt becomes.

    Saved as ``policy.json`` next to a guard; ``version_hash`` changes whenever a setting does, so
    caches and audit logs can tell answers computed under different policies apart.
    """

    schema_version: int = POLICY_SCHEMA_VERSION
    corruption: CorruptionConfig = Field(default_factory=lambda: default_corruption())
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    classify_window: int = Field(
        default=1, ge=1, description="How many latest user turns are classified together."
    )
    classify_roles: tuple[ChatRole, ...] | None = Field(
        default=None,
        description=(
            "Which messages the guard reads besides the user's: 'system' (every system message), "
            "'assistant' and 'tool' (those in the classified turns). None: the user's turns only "
            "in the library, whose application writes the rest; every role behind the gateway, "
            "whose clients write them all."
        ),
    )
    threshold: Threshold | None = Field(
        default=None,
        description="Override every target's threshold (flagged means score > threshold); None keeps the guard's.",
    )
    restore_prompt_words: bool = Field(
        default=False,
        description=(
            "Write back, in a flagged prompt's answer, the prompt's words where the answer repeats "
            "what the corruption put in their place (a corruption that puts words in place: "
            "invent_words, substitute_tokens). The model still never reads them."
        ),
    )
    notes: str = ""

    @model_validator(mode="after")
    def _restorable(self) -> ECOPolicy:
        if self.restore_prompt_words and not get_corruption(self.corruption.name).uses_replacements:
            msg = (
                f"restore_prompt_words writes back the words a corruption put in place, and "
                f"{self.corruption.name!r} puts none (it moves embeddings off any word); use "
                "invent_words or substitute_tokens, or leave restore_prompt_words off."
            )
            raise ValueError(msg)
        return self

    @field_validator("classify_roles", mode="after")
    @classmethod
    def _roles(cls, value: tuple[ChatRole, ...] | None) -> tuple[ChatRole, ...] | None:
        if value is None:
            return None
        if "user" not in value:
            msg = (
                f"classify_roles {list(value)} leaves out 'user': the guard always reads what the "
                "user asked; list the other roles to read beside it."
            )
            raise ValueError(msg)
        # One spelling per set, so equal policies hash alike.
        return tuple(role for role in CHAT_ROLES if role in value)

    @property
    def read_roles(self) -> tuple[ChatRole, ...]:
        """The roles the guard reads, ``classify_roles`` resolved (None: the user's turns)."""
        return self.classify_roles or ("user",)

    @property
    def version_hash(self) -> str:
        payload = self.model_dump(mode="json", exclude={"notes"})
        # Policies saved before these fields existed keep their version.
        for optional in ("threshold", "classify_roles", "restore_prompt_words"):
            if payload[optional] in (None, False):
                del payload[optional]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def save(self, folder: str | Path) -> Path:
        """Write ``policy.json``; in a sealed guard folder, check the seal first, and write and
        re-seal a copy swapped in whole (an interruption leaves the folder as it was)."""
        from ._files import write_text_atomic
        from ._integrity import sealed_rewrite

        root = Path(folder)
        with sealed_rewrite(root) as target:
            # Unset newer fields are left out: releases before them read the file too.
            unset = {
                name
                for name, value in (
                    ("classify_roles", self.classify_roles),
                    ("restore_prompt_words", self.restore_prompt_words),
                )
                if value in (None, False)
            } or None
            write_text_atomic(
                target / "policy.json", self.model_dump_json(indent=2, exclude=unset) + "\n"
            )
        return root / "policy.json"

    @classmethod
    def load(cls, folder: str | Path) -> ECOPolicy:
        path = Path(folder)
        path = path / "policy.json" if path.is_dir() else path
        try:
            raw = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            msg = f"No policy at {path}; save one with ECOPolicy(...).save(folder)."
            raise ArtifactError(msg) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            msg = f"{path} is not valid UTF-8 JSON ({err}); restore it or save the policy again."
            raise ArtifactError(msg) from None
        except OSError as err:
            msg = f"{path} cannot be read ({err.strerror or err}); pass a guard folder or its policy.json."
            raise ArtifactError(msg) from None
        if not isinstance(raw, dict):
            msg = f"{path} holds a JSON {type(raw).__name__}, not a policy object; restore it or save the policy again."
            raise ArtifactError(msg)
        other = (
            "a guard manifest"
            if raw.get("kind") == "eco-guard"
            else "a guard's integrity record"
            if {"digest", "files"} <= set(raw)
            else None
        )
        if other is not None:
            msg = f"{path} is {other}, not a policy; pass the guard folder or its policy.json."
            raise ArtifactError(msg)
        if raw.get("schema_version") != POLICY_SCHEMA_VERSION:
            msg = (
                f"{path} has policy schema version {raw.get('schema_version')!r}; this release reads "
                f"version {POLICY_SCHEMA_VERSION}. Re-create it with this release."
            )
            raise ArtifactError(msg)
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            msg = f"{path} is not a valid policy ({validation_problems(err)}); fix that field or save the policy again."
            raise ArtifactError(msg) from None


class Decision(_Strict):
    """The guard's verdict on one request. Never holds the prompt text, only its hash."""

    flagged: bool
    score: float | None = Field(
        description="Highest forget probability over the targets (None in off mode)."
    )
    threshold: float | None
    target: str | None = Field(description="The target with the largest margin over its threshold.")
    corrupted: bool = Field(
        description="Whether corruption was applied (flagged and mode == enforce)."
    )
    mode: Mode
    guard_id: str | None
    guard_version: int | None
    policy_version: str
    text_sha256: str = Field(
        description=(
            "SHA-256 of the classified text after the guard's normalization (NFKC, invisible "
            "characters removed, control characters made spaces, look-alike letters folded, "
            "lowercased, spaced letters joined, whitespace collapsed): texts the guard cannot "
            "tell apart share it."
        )
    )
    latency_ms: float = 0.0

    def event_payload(self) -> dict[str, object]:
        """The dict emitted as a framework event (no prompt text)."""
        return self.model_dump(mode="json")


# The default for SmolLM2-135M-Instruct, with the entities selector; `benchmarks/default_corruption.py`
# reproduces the search (no dims, so it is valid on any model).
DEFAULT_CORRUPTION = CorruptionConfig(name="invent_words", strength=1.0)


def default_corruption() -> CorruptionConfig:
    return DEFAULT_CORRUPTION
