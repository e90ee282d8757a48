"""Corruption functions applied to prompt-token embeddings, and their registry.

Each function takes the embeddings of one prompt (``[tokens, hidden]``), a boolean mask of the
positions to corrupt, and returns a new tensor; the input is never modified, so the exact
embedding lookup stays available for the uncorrupted path. Noise comes from the
``torch.Generator`` the caller passes, so one seed always gives one output (audits can replay a
request).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .exceptions import ConfigurationError

CorruptionFn = Callable[
    [torch.Tensor, torch.Tensor, "int | None", "float | None", torch.Generator], torch.Tensor
]


@dataclass(frozen=True)
class CorruptionSpec:
    """A registered corruption: the function and which of ``dims``/``strength`` it reads."""

    name: str
    fn: CorruptionFn
    uses_dims: bool
    uses_strength: bool
    description: str


_REGISTRY: dict[str, CorruptionSpec] = {}


def register_corruption(
    name: str, *, uses_dims: bool, uses_strength: bool, description: str
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator that adds a corruption function to the registry under ``name``."""

    def decorator(fn: CorruptionFn) -> CorruptionFn:
        if name in _REGISTRY:
            msg = f"A corruption named {name!r} is already registered; pick another name."
            raise ConfigurationError(msg)
        _REGISTRY[name] = CorruptionSpec(name, fn, uses_dims, uses_strength, description)
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
) -> torch.Tensor:
    """Return a corrupted copy of ``embeds`` (``[tokens, hidden]``) at the ``mask`` positions."""
    if embeds.dim() != 2:
        msg = f"embeds must be [tokens, hidden], got shape {tuple(embeds.shape)}."
        raise ConfigurationError(msg)
    if mask.shape != embeds.shape[:1]:
        msg = f"mask has shape {tuple(mask.shape)} but the prompt has {embeds.shape[0]} tokens."
        raise ConfigurationError(msg)
    validate_corruption(name, dims, strength, embeds.shape[1])
    if not bool(mask.any()):
        return embeds.clone()
    return _REGISTRY[name].fn(embeds, mask.to(torch.bool), dims, strength, generator)


def _noise(
    shape: tuple[int, ...], strength: float, generator: torch.Generator, like: torch.Tensor
) -> torch.Tensor:
    # Drawn in float32 on the CPU generator, then cast: bf16 sampling is too coarse for small sigma.
    return (
        (torch.randn(shape, generator=generator, dtype=torch.float32) * strength)
        .to(like.dtype)
        .to(like.device)
    )


def _top_k_index(rows: torch.Tensor, k: int) -> torch.Tensor:
    return rows.abs().topk(k, dim=-1).indices


@register_corruption(
    "rand_noise_first_n",
    uses_dims=True,
    uses_strength=True,
    description="Add N(0, strength^2) noise to the first `dims` dimensions (the paper's main method).",
)
def rand_noise_first_n(
    embeds: torch.Tensor,
    mask: torch.Tensor,
    dims: int | None,
    strength: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    assert dims is not None and strength is not None
    out = embeds.clone()
    selected = out[mask]
    selected[:, :dims] += _noise((selected.shape[0], dims), strength, generator, out)
    out[mask] = selected
    return out


@register_corruption(
    "rand_noise_top_k",
    uses_dims=True,
    uses_strength=True,
    description="Add N(0, strength^2) noise to the `dims` largest-magnitude dimensions of each token.",
)
def rand_noise_top_k(
    embeds: torch.Tensor,
    mask: torch.Tensor,
    dims: int | None,
    strength: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    assert dims is not None and strength is not None
    out = embeds.clone()
    selected = out[mask]
    index = _top_k_index(selected, dims)
    selected.scatter_add_(1, index, _noise(tuple(index.shape), strength, generator, out))
    out[mask] = selected
    return out


@register_corruption(
    "zero_out_top_k",
    uses_dims=True,
    uses_strength=False,
    description="Set the `dims` largest-magnitude dimensions of each token to zero.",
)
def zero_out_top_k(
    embeds: torch.Tensor,
    mask: torch.Tensor,
    dims: int | None,
    strength: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    assert dims is not None
    out = embeds.clone()
    selected = out[mask]
    selected.scatter_(1, _top_k_index(selected, dims), 0.0)
    out[mask] = selected
    return out


@register_corruption(
    "flip_sign_top_k",
    uses_dims=True,
    uses_strength=False,
    description="Negate the `dims` largest-magnitude dimensions of each token.",
)
def flip_sign_top_k(
    embeds: torch.Tensor,
    mask: torch.Tensor,
    dims: int | None,
    strength: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    assert dims is not None
    out = embeds.clone()
    selected = out[mask]
    index = _top_k_index(selected, dims)
    selected.scatter_(1, index, -selected.gather(1, index))
    out[mask] = selected
    return out


@register_corruption(
    "rand_noise_full",
    uses_dims=False,
    uses_strength=True,
    description="Add N(0, strength^2) noise to every dimension of each selected token.",
)
def rand_noise_full(
    embeds: torch.Tensor,
    mask: torch.Tensor,
    dims: int | None,
    strength: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    assert strength is not None
    out = embeds.clone()
    selected = out[mask]
    out[mask] = selected + _noise(tuple(selected.shape), strength, generator, out)
    return out
