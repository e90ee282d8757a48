"""eco-integrations: ECO unlearning (embedding-corrupted prompts) for served models.

The engine imports no framework; ``eco_integrations.langchain`` and
``eco_integrations.llama_index`` are thin skins over it. Building blocks that most users never
touch stay out of this namespace: backends (and the row types a custom backend implements) in
``eco_integrations.backends``; prompt rendering, token selection, model loading and artifact
hashing are internals (``_prompting``, ``_models``, ``_integrity``).
"""

from .backends import TransformersBackend
from .config import (
    DEFAULT_CORRUPTION,
    CorruptionConfig,
    Decision,
    ECOPolicy,
    GenerationConfig,
    SelectionConfig,
)
from .corruption import available_corruptions, register_corruption
from .encoder import SentenceEncoder
from .engine import ECO, AsyncECOStream, ECORequest, ECOResult, ECOStream, Explanation
from .exceptions import (
    ArtifactError,
    ConfigurationError,
    ContextLengthError,
    ECOError,
    GenerationCancelledError,
    GuardFailureError,
    GuardNotFittedError,
    InvalidInputError,
    MissingDependencyError,
)
from .guard import Guard, PromptGuard

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CORRUPTION",
    "ECO",
    "ArtifactError",
    "AsyncECOStream",
    "ConfigurationError",
    "ContextLengthError",
    "CorruptionConfig",
    "Decision",
    "ECOError",
    "ECOPolicy",
    "ECORequest",
    "ECOResult",
    "ECOStream",
    "Explanation",
    "GenerationCancelledError",
    "GenerationConfig",
    "Guard",
    "GuardFailureError",
    "GuardNotFittedError",
    "InvalidInputError",
    "MissingDependencyError",
    "PromptGuard",
    "SelectionConfig",
    "SentenceEncoder",
    "TransformersBackend",
    "__version__",
    "available_corruptions",
    "register_corruption",
]
