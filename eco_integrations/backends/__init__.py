"""Model backends: what runs the (possibly corrupted) prompt."""

from .base import Backend, Generation, PreparedRow, StreamEnd, TextStream
from .transformers import TransformersBackend

__all__ = ["Backend", "Generation", "PreparedRow", "StreamEnd", "TextStream", "TransformersBackend"]
