"""Integrity of a saved guard folder: value ranges, one digest over every file, optional signing.

``integrity.json`` lists the SHA-256 of ``manifest.json``, ``policy.json`` (when present) and
every target file, and a digest over that list. The digest is a plain SHA-256 (it catches
accidents: truncation, a hand edit) or, when the ``ECO_GUARD_KEY`` environment variable holds a
key, an HMAC-SHA-256 (it also stops someone who can write the folder but has no key: a folder
rewritten without the key refuses to load wherever the key is set). ``Guard.save`` and
``ECOPolicy.save`` (into a guard folder) re-seal the folder; ``Guard.load`` verifies it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._files import staged_folder
from .exceptions import ArtifactError

INTEGRITY_FILE = "integrity.json"
INTEGRITY_SCHEMA_VERSION = 1
GUARD_KEY_ENV = "ECO_GUARD_KEY"
TARGET_FILES = ("weights.safetensors", "vocabulary.json")
TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def signing_key() -> bytes | None:
    """The HMAC key from ``ECO_GUARD_KEY`` (its UTF-8 bytes), or None when unset or empty."""
    value = os.environ.get(GUARD_KEY_ENV, "")
    return value.encode() if value else None


def usable_threshold(value: float) -> bool:
    """A target threshold a saved guard may hold: a probability strictly between 0 and 1."""
    return math.isfinite(value) and 0.0 < value < 1.0


def check_manifest_values(root: Path, manifest: Any) -> None:
    """Every value a loaded manifest could use to defang the guard, range-checked."""
    problems = []
    names = [t.name for t in manifest.targets]
    if manifest.version < 0:
        problems.append(f"version {manifest.version} is negative")
    if manifest.passage_chars is not None and manifest.passage_chars < 1:
        problems.append(
            f"passage_chars {manifest.passage_chars} is not a positive number of characters"
        )
    if len(set(names)) != len(names):
        problems.append("two targets share a name")
    folders = [t.folder for t in manifest.targets]
    if len(set(folders)) != len(folders):
        problems.append("two targets share a folder")
    for t in manifest.targets:
        if not isinstance(t.name, str) or not TARGET_NAME.match(t.name):
            problems.append(
                f"target name {t.name[:80]!r} is not 1-64 letters, digits, spaces, '.', '_' or '-'"
            )
        if not usable_threshold(t.threshold):
            problems.append(
                f"target {t.name[:64]!r} has threshold {t.threshold}, not a probability strictly between 0 and 1"
            )
        if not (math.isfinite(t.target_fpr) and 0.0 < t.target_fpr < 1.0):
            problems.append(f"target {t.name[:64]!r} has target_fpr {t.target_fpr}, not in (0, 1)")
        for field in ("cv_fpr", "cv_tpr"):
            value = getattr(t, field)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                problems.append(f"target {t.name[:64]!r} has {field} {value}, not in [0, 1]")
        if t.n_forget < 1 or t.n_retain < 1:
            problems.append(
                f"target {t.name[:64]!r} was fit on {t.n_forget} forget / {t.n_retain} retain texts"
            )
        if not _inside(root, t.folder):
            problems.append(
                f"target {t.name[:64]!r} points at folder {t.folder[:200]!r}, outside the guard folder"
            )
    if problems:
        msg = f"{root}/manifest.json has values a guard cannot have: {'; '.join(problems)}. Re-fit the guard or restore the folder."
        raise ArtifactError(msg)


def _inside(root: Path, relative: str) -> bool:
    """A relative path without '..' that resolves inside ``root`` (no absolute paths, no symlink escapes)."""
    if (
        not relative
        or Path(relative).is_absolute()
        or ".." in Path(relative).parts
        or "\\" in relative
    ):
        return False
    base = root.resolve()
    return (base / relative).resolve().is_relative_to(base)


def _covered(root: Path, target_folders: Iterable[str]) -> list[str]:
    files = ["manifest.json"]
    if (root / "policy.json").exists():
        files.append("policy.json")
    files.extend(f"{folder}/{name}" for folder in target_folders for name in TARGET_FILES)
    return files


def _file_digests(root: Path, files: list[str]) -> dict[str, str]:
    out = {}
    for rel in files:
        try:
            out[rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        except FileNotFoundError:
            msg = f"{root} is incomplete ({rel} is missing). Re-fit or restore the folder."
            raise ArtifactError(msg) from None
        except OSError as err:
            msg = f"{root}/{rel} cannot be read ({err.strerror or err}); it must be a regular file. Re-fit or restore the folder."
            raise ArtifactError(msg) from None
    return out


def _digest(files: dict[str, str], key: bytes | None) -> str:
    payload = json.dumps(files, sort_keys=True).encode()
    return (
        hmac.new(key, payload, hashlib.sha256).hexdigest()
        if key
        else hashlib.sha256(payload).hexdigest()
    )


def seal(root: Path, target_folders: Iterable[str], *, key: bytes | None = None) -> None:
    """Write ``integrity.json`` over the folder's current files (HMAC when a key is given or set)."""
    key = key if key is not None else signing_key()
    files = _file_digests(root, _covered(root, target_folders))
    record = {
        "schema_version": INTEGRITY_SCHEMA_VERSION,
        "algorithm": "hmac-sha256" if key else "sha256",
        "files": files,
        "digest": _digest(files, key),
    }
    tmp = root / f".{INTEGRITY_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, root / INTEGRITY_FILE)


def verify(
    root: Path,
    target_folders: Iterable[str],
    *,
    key: bytes | None = None,
    require_signature: bool = False,
) -> str:
    """Check ``integrity.json`` against the folder; returns the algorithm ("sha256" or "hmac-sha256").

    With a key (given, or ``ECO_GUARD_KEY``), only a valid HMAC passes: a folder rewritten and
    re-hashed by someone without the key is refused.
    """
    key = key if key is not None else signing_key()
    if require_signature and key is None:
        msg = f"Signed guards are required but {GUARD_KEY_ENV} is not set; set it to the key the guard was saved with."
        raise ArtifactError(msg)
    path = root / INTEGRITY_FILE
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        msg = f"{root} has no {INTEGRITY_FILE}; save the guard again with this release (Guard.save, `eco guard fit`)."
        raise ArtifactError(msg) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{path} cannot be read ({err}); the folder was edited or truncated. Save the guard again."
        raise ArtifactError(msg) from None
    if (
        not isinstance(record, dict)
        or record.get("schema_version") != INTEGRITY_SCHEMA_VERSION
        or not isinstance(record.get("digest"), str)
    ):
        msg = f"{path} is not an integrity record this release reads; save the guard again."
        raise ArtifactError(msg)
    algorithm = record.get("algorithm")
    if key is not None and algorithm != "hmac-sha256":
        msg = f"{root} is not signed, but {GUARD_KEY_ENV} is set: only a folder saved with that key loads. Save it again with the key."
        raise ArtifactError(msg)
    if key is None and algorithm != "sha256":
        msg = f"{root} is signed (HMAC-SHA-256); set {GUARD_KEY_ENV} to its key to load it."
        raise ArtifactError(msg)
    files = _file_digests(root, _covered(root, target_folders))
    if not hmac.compare_digest(_digest(files, key), record["digest"]) or files != record.get(
        "files"
    ):
        what = (
            "its signature does not match (rewritten without the key, or another key)"
            if key
            else "a file changed after it was saved"
        )
        msg = f"{root} failed its integrity check: {what}. Restore the folder or save the guard again."
        raise ArtifactError(msg)
    return str(algorithm)


def saved_target_folders(root: Path) -> list[str]:
    """The target folders the manifest in ``root`` names."""
    try:
        raw = json.loads((root / "manifest.json").read_bytes().decode("utf-8"))
        return [str(t["folder"]) for t in raw["targets"]]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        msg = f"{root}/manifest.json cannot be read ({err}); restore the guard folder before saving a policy into it."
        raise ArtifactError(msg) from None


@contextlib.contextmanager
def sealed_rewrite(root: Path) -> Iterator[Path]:
    """Around a write into a guard folder: yields the folder to write into.

    A sealed folder is verified first (a policy save never blesses a guard someone tampered
    with), copied beside itself, written and sealed there, and swapped in whole
    (:func:`~eco_integrations._files.staged_folder`): an interruption leaves the old folder as it
    was. A folder that is not a sealed guard is written in place.
    """
    sealed = (root / INTEGRITY_FILE).is_file() and (root / "manifest.json").is_file()
    if not sealed:
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    verify(root, saved_target_folders(root))
    with staged_folder(root) as staging:
        shutil.copytree(root, staging, dirs_exist_ok=True)
        yield staging
        seal(staging, saved_target_folders(staging))
