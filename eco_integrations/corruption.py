"""Corruption functions applied to prompt-token embeddings, and their registry.

A registered function takes the rows to corrupt (``[selected tokens, hidden]``, a copy it may
change in place) and the :class:`CorruptionParams`, and returns the corrupted rows.
:func:`apply_corruption` picks the rows from a prompt's embeddings by a mask and puts them back
into a new tensor: the input is never modified, so the exact embedding lookup stays available for
the uncorrupted path. Noise comes from the ``torch.Generator`` the caller passes, so one seed
always gives one output (audits can replay a request).

A custom corruption::

    @register_corruption("scale", uses_dims=False, uses_strength=True, description="...")
    def scale(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
        return rows * params.strength
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch

from .exceptions import ConfigurationError


@dataclass(frozen=True)
class CorruptionParams:
    """What a corruption function reads besides the rows (``dims``/``strength`` are set exactly
    when the corruption was registered as using them)."""

    dims: int | None
    strength: float | None
    generator: torch.Generator
    replacements: torch.Tensor | None = None
    """``[tokens, hidden]`` embeddings a corruption may put in place of the selected ones (set
    exactly when the corruption was registered with ``uses_replacements``)."""
    continuations: torch.Tensor | None = None
    """``[tokens, hidden]`` embeddings of pieces that go on a word ("ath", "ren"), and
    ``continues_word``, one flag per row: the row's token goes on the word before it rather than
    starting one (both set exactly when the corruption was registered with ``uses_word_pieces``)."""
    continues_word: torch.Tensor | None = None

    def need_dims(self) -> int:
        assert self.dims is not None  # validate_corruption checked it before the call
        return self.dims

    def need_strength(self) -> float:
        assert self.strength is not None
        return self.strength

    def need_replacements(self) -> torch.Tensor:
        assert self.replacements is not None  # apply_corruption checked it before the call
        return self.replacements

    def need_word_pieces(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(continuations, continues_word)``."""
        assert self.continuations is not None and self.continues_word is not None
        return self.continuations, self.continues_word


CorruptionFn = Callable[[torch.Tensor, CorruptionParams], torch.Tensor]


@dataclass(frozen=True)
class CorruptionSpec:
    """A registered corruption: the function and which of ``dims``/``strength`` it reads."""

    name: str
    fn: CorruptionFn
    uses_dims: bool
    uses_strength: bool
    description: str
    uses_replacements: bool = False
    max_strength: float | None = None
    uses_word_pieces: bool = False


_REGISTRY: dict[str, CorruptionSpec] = {}


def register_corruption(
    name: str,
    *,
    uses_dims: bool,
    uses_strength: bool,
    description: str,
    uses_replacements: bool = False,
    max_strength: float | None = None,
    uses_word_pieces: bool = False,
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator that adds a corruption function to the registry under ``name``.

    ``uses_replacements``: the function reads ``params.replacements``, embeddings of the model's
    name-like tokens that the engine passes in (see :func:`name_like_token_ids`).
    ``uses_word_pieces``: it also reads ``params.continuations`` and ``params.continues_word``
    (see :func:`word_piece_token_ids`); the name-like tokens it gets are then word starts of at
    most :data:`WORD_START_LETTERS` letters. Needs ``uses_replacements``.
    ``max_strength``: the largest valid strength, when the strength is a share rather than a scale.
    """

    def decorator(fn: CorruptionFn) -> CorruptionFn:
        if name in _REGISTRY:
            msg = f"A corruption named {name!r} is already registered; pick another name."
            raise ConfigurationError(msg)
        if uses_word_pieces and not uses_replacements:
            msg = (
                f"Corruption {name!r} reads word pieces, which come with the word starts: "
                "register it with uses_replacements=True too."
            )
            raise ConfigurationError(msg)
        _REGISTRY[name] = CorruptionSpec(
            name,
            fn,
            uses_dims,
            uses_strength,
            description,
            uses_replacements,
            max_strength,
            uses_word_pieces,
        )
        return fn

    return decorator


def available_corruptions() -> list[str]:
    return sorted(_REGISTRY)


def get_corruption(name: str) -> CorruptionSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        msg = f"Unknown corruption {name!r}. Choose one of: {', '.join(available_corruptions())}."
        raise ConfigurationError(msg) from None


def validate_corruption(
    name: str, dims: int | None, strength: float | None, hidden_size: int | None = None
) -> None:
    """Check a corruption setting; ``hidden_size`` bounds ``dims`` once the model is known."""
    spec = get_corruption(name)
    if spec.uses_dims:
        if dims is None:
            msg = f"Corruption {name!r} needs dims (how many embedding dimensions to touch)."
            raise ConfigurationError(msg)
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            msg = f"dims must be a positive integer, got {dims!r}."
            raise ConfigurationError(msg)
        if hidden_size is not None and dims > hidden_size:
            msg = (
                f"dims={dims} exceeds the model's hidden size {hidden_size}; use 1..{hidden_size}."
            )
            raise ConfigurationError(msg)
    elif dims is not None:
        msg = f"Corruption {name!r} does not use dims; leave dims unset (got {dims!r})."
        raise ConfigurationError(msg)
    if spec.uses_strength:
        if strength is None:
            msg = f"Corruption {name!r} needs a strength (the noise standard deviation)."
            raise ConfigurationError(msg)
        if (
            isinstance(strength, bool)
            or not isinstance(strength, (int, float))
            or not math.isfinite(strength)
            or strength < 0
        ):
            msg = f"strength must be a finite number >= 0, got {strength!r}."
            raise ConfigurationError(msg)
        if spec.max_strength is not None and strength > spec.max_strength:
            msg = (
                f"Corruption {name!r} takes a strength between 0 and {spec.max_strength:g} "
                f"(a share, not a scale), got {strength!r}."
            )
            raise ConfigurationError(msg)
    elif strength is not None:
        msg = f"Corruption {name!r} does not use strength; leave strength unset (got {strength!r})."
        raise ConfigurationError(msg)


def apply_corruption(
    name: str,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    *,
    dims: int | None,
    strength: float | None,
    generator: torch.Generator,
    replacements: torch.Tensor | None = None,
    continuations: torch.Tensor | None = None,
    continues_word: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return a corrupted copy of ``embeds`` (``[tokens, hidden]``) at the ``mask`` positions.

    ``replacements`` (``[tokens, hidden]``) is needed by corruptions registered with
    ``uses_replacements`` and ignored by the others; ``continuations`` (``[tokens, hidden]``)
    and ``continues_word`` (one flag per prompt token, as ``mask``: see
    :func:`~eco_integrations._prompting.word_continuations`) likewise by those registered with
    ``uses_word_pieces``.
    """
    if embeds.dim() != 2:
        msg = f"embeds must be [tokens, hidden], got shape {tuple(embeds.shape)}."
        raise ConfigurationError(msg)
    if mask.shape != embeds.shape[:1]:
        msg = f"mask has shape {tuple(mask.shape)} but the prompt has {embeds.shape[0]} tokens."
        raise ConfigurationError(msg)
    validate_corruption(name, dims, strength, embeds.shape[1])
    spec = _REGISTRY[name]
    if spec.uses_replacements:
        _check_table(
            replacements,
            embeds,
            "replacements",
            f"Corruption {name!r} puts other tokens' embeddings in place of the selected ones "
            f"and needs them: pass replacements=ECO.replacements_for({name!r}) (a [tokens, "
            "hidden] tensor of the model's name-like tokens; ECO.replacement_embeddings() for "
            "substitute_tokens).",
        )
    if spec.uses_word_pieces:
        _check_word_pieces(name, continuations, continues_word, embeds, mask)
    out = embeds.clone()
    mask = mask.to(torch.bool)
    if not bool(mask.any()):
        return out
    rows = out[mask]
    params = CorruptionParams(
        dims,
        strength,
        generator,
        replacements if spec.uses_replacements else None,
        continuations if spec.uses_word_pieces else None,
        continues_word.to(torch.bool)[mask]
        if spec.uses_word_pieces and continues_word is not None
        else None,
    )
    corrupted = spec.fn(rows, params)
    if not isinstance(corrupted, torch.Tensor) or corrupted.shape != rows.shape:
        got = tuple(corrupted.shape) if isinstance(corrupted, torch.Tensor) else type(corrupted)
        msg = (
            f"Corruption {name!r} returned {got} for rows of shape {tuple(rows.shape)}; "
            "a corruption must return the rows it was given, corrupted, in the same shape."
        )
        raise ConfigurationError(msg)
    out[mask] = corrupted.to(out.dtype)
    return out


def _check_table(table: torch.Tensor | None, embeds: torch.Tensor, what: str, missing: str) -> None:
    if table is None or table.dim() != 2 or table.shape[0] == 0:
        raise ConfigurationError(missing)
    if table.shape[1] != embeds.shape[1]:
        msg = (
            f"{what} have {table.shape[1]} dimensions but the prompt's embeddings have "
            f"{embeds.shape[1]}; take them from the same model."
        )
        raise ConfigurationError(msg)


def _check_word_pieces(
    name: str,
    continuations: torch.Tensor | None,
    continues_word: torch.Tensor | None,
    embeds: torch.Tensor,
    mask: torch.Tensor,
) -> None:
    _check_table(
        continuations,
        embeds,
        "continuations",
        f"Corruption {name!r} builds words from pieces and needs the pieces that go on a word: "
        f"pass continuations=ECO.continuations_for({name!r}) (a [tokens, hidden] tensor).",
    )
    if continues_word is None or continues_word.shape != mask.shape:
        got = None if continues_word is None else tuple(continues_word.shape)
        msg = (
            f"Corruption {name!r} needs continues_word, one flag per prompt token like the mask "
            f"({tuple(mask.shape)}), got {got}: pass word_continuations(rendered_prompt)."
        )
        raise ConfigurationError(msg)


_NAME_PIECE = re.compile(r" [A-Z][a-z]{2,9}")
WORD_START_LETTERS = 4
"""The longest word start ``invent_words`` puts in place of a word's first token: longer
name-like tokens are mostly whole names the model knows (" Senegal", " Williamson"), and an
answer about them is about a real place or person, not a stranger's guess."""
_WORD_PIECE = re.compile(r"[a-z]{2,4}")
COMMON_CAPITALISED_WORDS = frozenset(
    {
        "A",
        "An",
        "And",
        "Are",
        "As",
        "At",
        "But",
        "By",
        "For",
        "From",
        "He",
        "Her",
        "Here",
        "His",
        "How",
        "I",
        "If",
        "In",
        "Is",
        "It",
        "Its",
        "My",
        "No",
        "Not",
        "Of",
        "On",
        "Or",
        "Our",
        "She",
        "So",
        "That",
        "The",
        "Their",
        "There",
        "These",
        "They",
        "This",
        "Those",
        "To",
        "Was",
        "We",
        "What",
        "When",
        "Where",
        "Which",
        "While",
        "Who",
        "Why",
        "With",
        "Yes",
        "You",
        "Your",
    }
)
"""Words written capitalised because they begin a sentence, not because they name something."""


def name_like_token_ids(
    tokenizer: Any, exclude: Collection[str] = (), *, longest: int = 10
) -> list[int]:
    """Vocabulary ids of tokens that read as the start of a name (" Brem", " Tolk"): a space and
    a capitalised word of 3 to ``longest`` letters whose lower-case form is not a token too
    (" Lightning" is left out when " lightning" exists: a word, not a name), nor a common
    sentence word, nor one of ``exclude`` (any case: the words of the names being corrupted,
    which must not come back). The pool ``substitute_tokens`` draws from, so that a corrupted
    name reads as an unknown one (``invent_words`` takes ``longest`` :data:`WORD_START_LETTERS`)."""
    if longest < 3:
        msg = f"longest must be at least 3 letters, got {longest}."
        raise ConfigurationError(msg)
    vocabulary = {tokenizer.decode([token_id]): token_id for token_id in range(len(tokenizer))}
    banned = {word.lower() for word in exclude}
    return sorted(
        token_id
        for text, token_id in vocabulary.items()
        if _NAME_PIECE.fullmatch(text)
        and len(text) - 1 <= longest
        and text.lower() not in vocabulary
        and text[1:] not in COMMON_CAPITALISED_WORDS
        and text[1:].lower() not in banned
    )


def word_piece_token_ids(tokenizer: Any) -> list[int]:
    """Vocabulary ids of tokens that go on a word: 2-4 lower-case letters and no leading space
    ("ath", "ren"). ``invent_words`` puts them where a word's later tokens were, so that a
    corrupted word is still one word, and one the model has never read."""
    return sorted(
        token_id
        for token_id in range(len(tokenizer))
        if _WORD_PIECE.fullmatch(tokenizer.decode([token_id]))
    )


def _noise(shape: tuple[int, ...], params: CorruptionParams, like: torch.Tensor) -> torch.Tensor:
    # Drawn in float32 on the CPU generator, then cast: bf16 sampling is too coarse for small sigma.
    noise = torch.randn(shape, generator=params.generator, dtype=torch.float32)
    return (noise * params.need_strength()).to(like.dtype).to(like.device)


def _top_k_index(rows: torch.Tensor, k: int) -> torch.Tensor:
    return rows.abs().topk(k, dim=-1).indices


@register_corruption(
    "rand_noise_first_n",
    uses_dims=True,
    uses_strength=True,
    description="Add N(0, strength^2) noise to the first `dims` dimensions (the paper's main method).",
)
def rand_noise_first_n(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
    dims = params.need_dims()
    rows[:, :dims] += _noise((rows.shape[0], dims), params, rows)
    return rows


@register_corruption(
    "rand_noise_top_k",
    uses_dims=True,
    uses_strength=True,
    description="Add N(0, strength^2) noise to the `dims` largest-magnitude dimensions of each token.",
)
def rand_noise_top_k(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
    index = _top_k_index(rows, params.need_dims())
    return rows.scatter_add_(1, index, _noise(tuple(index.shape), params, rows))


@register_corruption(
    "zero_out_top_k",
    uses_dims=True,
    uses_strength=False,
    description="Set the `dims` largest-magnitude dimensions of each token to zero.",
)
def zero_out_top_k(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
    return rows.scatter_(1, _top_k_index(rows, params.need_dims()), 0.0)


@register_corruption(
    "flip_sign_top_k",
    uses_dims=True,
    uses_strength=False,
    description="Negate the `dims` largest-magnitude dimensions of each token.",
)
def flip_sign_top_k(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
    index = _top_k_index(rows, params.need_dims())
    return rows.scatter_(1, index, -rows.gather(1, index))


@register_corruption(
    "rand_noise_full",
    uses_dims=False,
    uses_strength=True,
    description="Add N(0, strength^2) noise to every dimension of each selected token.",
)
def rand_noise_full(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
    return rows + _noise(tuple(rows.shape), params, rows)


@register_corruption(
    "substitute_tokens",
    uses_dims=False,
    uses_strength=True,
    uses_replacements=True,
    max_strength=1.0,
    description=(
        "Move each selected token's embedding toward a random name-like token's (strength 1 = "
        "replaced, 0 = untouched): the model reads a name it does not know."
    ),
)
def substitute_tokens(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
    table = params.need_replacements()
    pick = torch.randint(table.shape[0], (rows.shape[0],), generator=params.generator)
    target = table[pick].to(device=rows.device, dtype=rows.dtype)
    return torch.lerp(rows, target, params.need_strength())


@register_corruption(
    "invent_words",
    uses_dims=False,
    uses_strength=True,
    uses_replacements=True,
    uses_word_pieces=True,
    max_strength=1.0,
    description=(
        "Move each selected word toward an invented one (strength 1 = replaced, 0 = untouched): "
        "a word's first token toward a short capitalised piece, its later tokens toward "
        "lower-case pieces, so the model reads one word it has never seen."
    ),
)
def invent_words(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
    starts = params.need_replacements()
    pieces, continues_word = params.need_word_pieces()
    count = rows.shape[0]
    start_pick = torch.randint(starts.shape[0], (count,), generator=params.generator)
    piece_pick = torch.randint(pieces.shape[0], (count,), generator=params.generator)
    target = torch.where(
        continues_word.to(rows.device)[:, None], pieces[piece_pick], starts[start_pick]
    ).to(device=rows.device, dtype=rows.dtype)
    return torch.lerp(rows, target, params.need_strength())
