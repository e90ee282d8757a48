"""Model backends: what runs the (possibly corrupted) prompt.

``Backend`` is the protocol a custom backend implements; ``PreparedRow``, ``Generation``,
``TextStream`` and ``StreamEnd`` are the types it takes and returns."""

from ._base import Backend, Generation, PreparedRow, StreamEnd, TextStream
from .transformers import TransformersBackend

__all__ = ["Backend", "Generation", "PreparedRow", "StreamEnd", "TextStream", "TransformersBackend"]
