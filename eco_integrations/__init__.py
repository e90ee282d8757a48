"""eco-integrations: ECO unlearning (embedding-corrupted prompts) for served models.

The engine imports no framework; ``eco_integrations.langchain`` and
``eco_integrations.llama_index`` are thin skins over it.
"""

from .backends import Generation, PreparedRow, TransformersBackend
from .config import (
    DEFAULT_CORRUPTION,
    CorruptionConfig,
    Decision,
    ECOPolicy,
    GenerationConfig,
    SelectionConfig,
)
from .corruption import apply_corruption, available_corruptions, get_corruption, register_corruption
from .encoder import SentenceEncoder
from .engine import ECO, ECOResult, ECOStream
from .exceptions import (
    ArtifactError,
    ConfigurationError,
    ContextLengthError,
    ECOError,
    GuardNotFittedError,
    InvalidInputError,
    MissingDependencyError,
)
from .guard import Guard, GuardDecision, PromptGuard, mine_terms, threshold_for_fpr
from .models import default_model_folder, load_causal_lm
from .prompting import render, select_positions

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CORRUPTION",
    "ECO",
    "ArtifactError",
    "ConfigurationError",
    "ContextLengthError",
    "CorruptionConfig",
    "Decision",
    "ECOError",
    "ECOPolicy",
    "ECOResult",
    "ECOStream",
    "Generation",
    "GenerationConfig",
    "Guard",
    "GuardDecision",
    "GuardNotFittedError",
    "InvalidInputError",
    "MissingDependencyError",
    "PreparedRow",
    "PromptGuard",
    "SelectionConfig",
    "SentenceEncoder",
    "TransformersBackend",
    "__version__",
    "apply_corruption",
    "available_corruptions",
    "default_model_folder",
    "get_corruption",
    "load_causal_lm",
    "mine_terms",
    "register_corruption",
    "render",
    "select_positions",
    "threshold_for_fpr",
]
