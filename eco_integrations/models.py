"""Loading causal LMs: the embedded default (GGUF inside a wheel), local folders and hub ids."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ._paths import DEFAULT_MODEL_NAME, cache_dir, default_gguf_file
from .exceptions import ConfigurationError

logger = logging.getLogger(__name__)


def _gguf_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}-{key}"


def default_model_folder() -> Path:
    """A safetensors folder of the default model, converted from the wheel's GGUF on first use.

    Dequantizing the GGUF takes ~20 s; the converted copy in the user cache loads in about one.
    The GGUF-loaded model keeps its quantization config and cannot be saved directly, so a fresh
    model is built from its config and given the dequantized state dict.
    """
    gguf = default_gguf_file()
    folder = _gguf_cache_folder(gguf)
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s to safetensors in %s (once)", gguf.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.quantization_config = None
    if hasattr(config, "_name_or_path"):
        config._name_or_path = DEFAULT_MODEL_NAME
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # Rename last so a crash mid-save never leaves a half-written cache that looks complete.
    _replace_folder(tmp, folder)
    return folder


def _replace_folder(src: Path, dst: Path) -> None:
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    src.replace(dst)


def resolve_model_path(name_or_path: str | os.PathLike[str] | None) -> str:
    """The default model folder for ``None``; a local folder as is; otherwise a hub id."""
    if name_or_path is None:
        return str(default_model_folder())
    text = os.fspath(name_or_path)
    if not text.strip():
        msg = "Model name is empty; pass a local folder, a hub id such as 'org/name', or None for the default."
        raise ConfigurationError(msg)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            msg = f"{path} exists but has no config.json; point to a Hugging Face model folder."
            raise ConfigurationError(msg)
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        msg = f"Model folder {text!r} does not exist."
        raise ConfigurationError(msg)
    return text


def load_causal_lm(
    name_or_path: str | os.PathLike[str] | None = None, *, dtype: torch.dtype = torch.float32, **kwargs: Any
) -> tuple[Any, Any, str]:
    """Load ``(model, tokenizer, model_name)``; hub ids go through ``from_pretrained`` (cache-aware)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(resolved)
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, **kwargs)
    model.eval()
    name = DEFAULT_MODEL_NAME if name_or_path is None else os.fspath(name_or_path)
    return model, tokenizer, name
