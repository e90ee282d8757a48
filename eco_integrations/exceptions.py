"""Errors raised by eco-integrations.

Every error names the problem and the fix. The tree::

    ECOError (ValueError)
    ├── InvalidInputError        a prompt or message list the engine cannot take
    │   └── ContextLengthError   a prompt plus max_new_tokens longer than the model's context window
    ├── ConfigurationError       an unknown corruption/selector, dims or strength out of range
    ├── GuardNotFittedError      scoring with a guard (or target) that was never fit
    ├── GuardFailureError        the guard raised or gave a non-finite score (the request fails closed)
    ├── GenerationCancelledError generation stopped because the caller's cancel event was set
    ├── ArtifactError            a saved folder that was edited, is incomplete, or has another schema
    └── MissingDependencyError   an optional extra is not installed (the message gives the pip line)

``ECOError`` subclasses ``ValueError`` so that callers who already catch bad-argument
errors keep working.
"""

from __future__ import annotations


class ECOError(ValueError):
    """Base class of every error raised by this package."""


class InvalidInputError(ECOError):
    """A prompt, message list or text the engine cannot take."""


class ContextLengthError(InvalidInputError):
    """The prompt and the new tokens asked for do not fit in the model's context window."""

    def __init__(
        self, message: str, *, prompt_tokens: int, max_new_tokens: int, context_window: int
    ) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.context_window = context_window


class ConfigurationError(ECOError):
    """A setting that is unknown or out of range."""


class GuardNotFittedError(ECOError):
    """The guard (or one of its targets) has not been fit yet."""


class GuardFailureError(ECOError):
    """The guard raised or returned a non-finite score: the request is refused, never answered uncorrupted."""


class GenerationCancelledError(ECOError):
    """The caller set the ``cancel`` event (client gone, deadline passed) before generation finished."""


class ArtifactError(ECOError):
    """A saved guard or policy folder that cannot be trusted or read."""


class MissingDependencyError(ECOError, ImportError):
    """An optional dependency is missing."""


def require(module: str, extra: str) -> None:
    """Raise :class:`MissingDependencyError` with the install line when ``module`` is absent."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        msg = (
            f"This feature needs the '{module}' package. "
            f"Install it with: pip install 'eco-integrations[{extra}]'"
        )
        raise MissingDependencyError(msg)
