"""The package's shape: public names pinned, the import rules of scripts/check_imports.py hold."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import eco_integrations

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import check_imports  # noqa: E402


def test_top_level_names_are_what_users_need() -> None:
    assert eco_integrations.__all__ == [
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
    assert all(hasattr(eco_integrations, name) for name in eco_integrations.__all__)


def test_public_modules_are_pinned() -> None:
    # Internals (rendering, model loading, artifact hashing) live in modules starting with "_";
    # a new public module is a decision, made here.
    import pkgutil

    library = sorted(
        m.name
        for m in pkgutil.walk_packages(eco_integrations.__path__, "eco_integrations.")
        if not any(part.startswith("_") for part in m.name.split(".")[1:])
        and not m.name.startswith("eco_integrations.research")
    )
    assert library == [
        "eco_integrations.backends",
        "eco_integrations.backends.transformers",
        "eco_integrations.backends.vllm",
        "eco_integrations.cli",
        "eco_integrations.config",
        "eco_integrations.corruption",
        "eco_integrations.demo",
        "eco_integrations.encoder",
        "eco_integrations.engine",
        "eco_integrations.exceptions",
        "eco_integrations.guard",
        "eco_integrations.langchain",
        "eco_integrations.langchain.chat_models",
        "eco_integrations.langchain.decisions",
        "eco_integrations.langchain.document_compressors",
        "eco_integrations.langchain.embeddings",
        "eco_integrations.langchain.middleware",
        "eco_integrations.langchain.runnables",
        "eco_integrations.llama_index",
        "eco_integrations.llama_index.embeddings",
        "eco_integrations.llama_index.events",
        "eco_integrations.llama_index.llms",
        "eco_integrations.llama_index.postprocessors",
        "eco_integrations.llama_index.query_engine",
        "eco_integrations.serving",
        "eco_integrations.serving.app",
        "eco_integrations.serving.auth",
        "eco_integrations.serving.cli",
        "eco_integrations.serving.metrics",
        "eco_integrations.serving.reload",
    ]


def test_import_rules_hold() -> None:
    assert check_imports.violations(ROOT / "eco_integrations") == []


def test_import_rules_catch_violations(tmp_path: Path) -> None:
    package = tmp_path / "eco_integrations"
    shutil.copytree(
        ROOT / "eco_integrations", package, ignore=shutil.ignore_patterns("__pycache__")
    )
    (package / "demo.py").write_text(
        (package / "demo.py").read_text() + "\nfrom .research import strength\n"
    )
    (package / "engine.py").write_text(
        (package / "engine.py").read_text() + "\nimport langchain_core\nfrom . import cli\n"
    )
    (package / "config.py").write_text(
        (package / "config.py").read_text() + "\nfrom . import engine\n"
    )
    problems = "\n".join(check_imports.violations(package))
    assert "eco_integrations.demo imports eco_integrations.research" in problems
    assert "eco_integrations.engine imports langchain_core" in problems
    assert (
        "eco_integrations.engine imports eco_integrations.cli: the command line is a leaf"
        in problems
    )
    assert "import cycle:" in problems and "eco_integrations.config" in problems


def test_unit_tests_cannot_open_network_sockets() -> None:
    import socket

    import pytest
    from pytest_socket import SocketBlockedError

    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def test_langchain_names_are_pinned() -> None:
    import pytest

    eco_langchain = pytest.importorskip(
        "eco_integrations.langchain", reason="pip install 'eco-integrations[langchain]'"
    )
    assert eco_langchain.__all__ == [
        "DECISION_KWARG",
        "DOCUMENTS_EVENT_NAME",
        "EVENT_NAME",
        "ChatECOHuggingFace",
        "ECODocumentCompressor",
        "ECOEmbeddings",
        "ECOForgetClassifier",
        "ECOMiddleware",
        "ECORouter",
    ]
    assert all(hasattr(eco_langchain, name) for name in eco_langchain.__all__)
