"""Reading the text and JSON files users hand to the CLI, with errors that name the file and the
fix; writing artifacts so that an interrupted write never leaves a damaged one in place."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .exceptions import ECOError, InvalidInputError

logger = logging.getLogger(__name__)


def read_utf8(
    path: str | os.PathLike[str], *, expected: str, error: type[ECOError] = InvalidInputError
) -> str:
    """The file's text; a missing file, a folder or bytes that are not UTF-8 raise ``error``.

    ``expected`` says what the file should be ("a JSON Lines file of question/answer rows"),
    for the message. A leading byte-order mark, which some editors write, is dropped.
    """
    file = Path(path)
    if file.is_dir():
        msg = f"{file} is a folder; pass {expected}."
        raise error(msg)
    if not file.is_file():
        msg = f"{file} does not exist; pass {expected}."
        raise error(msg)
    data = file.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        # UTF-16 (a Windows editor's "Unicode"): without its byte-order mark it even decodes as
        # UTF-8, one NUL byte between letters, and would be read as garbage.
        msg = f"{file} is UTF-16 text (or holds NUL bytes); save it as UTF-8, e.g. iconv -f utf-16 -t utf-8."
        raise error(msg)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        msg = (
            f"{file} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "save it as UTF-8, e.g. iconv -f latin1 -t utf-8 (for Latin-1 text)."
        )
        raise error(msg) from None


def read_json_rows(
    path: str | os.PathLike[str], *, expected: str, error: type[ECOError] = InvalidInputError
) -> list[Any]:
    """The rows of a JSON Lines file, or of a file holding one JSON array.

    A line that is not JSON raises ``error`` naming ``file:line``; blank lines are skipped.
    """
    text = read_utf8(path, expected=expected, error=error)
    return [row for _, row in numbered_json_rows(text, path, expected=expected, error=error)]


def numbered_json_rows(
    text: str,
    path: str | os.PathLike[str],
    *,
    expected: str,
    error: type[ECOError] = InvalidInputError,
) -> list[tuple[int, Any]]:
    """``(number, row)`` for each row of ``text`` read from ``path``: the items of one JSON array
    (numbered from 1), or the non-blank lines of JSON Lines (numbered by line)."""
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            msg = f"{path}:{err.lineno} is not valid JSON ({err.msg}); pass {expected}."
            raise error(msg) from None
        return list(enumerate(rows, 1))
    return list(json_lines(text, path, expected=expected, error=error))


def check_text_rows(
    rows: list[Any],
    fields: tuple[str, ...],
    *,
    where: str | os.PathLike[str],
    fix: str,
    error: type[ECOError] = InvalidInputError,
) -> list[dict[str, Any]]:
    """``rows``, each checked to be an object whose ``fields`` hold non-blank text.

    The first row that is not raises ``error`` naming its number (from 1) and ``where`` it came
    from, then ``fix``; no rows at all is an error too.
    """
    wanted = " and ".join(repr(f) for f in fields)
    if not rows:
        msg = f"{where} holds no rows; {fix}."
        raise error(msg)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            msg = f"Row {n} of {where} is not a JSON object; {fix}."
            raise error(msg)
        if not all(isinstance(row.get(f), str) and row[f].strip() for f in fields):
            msg = f"Row {n} of {where} needs {wanted} holding text; {fix}."
            raise error(msg)
    return rows


def json_lines(
    text: str,
    path: str | os.PathLike[str],
    *,
    expected: str,
    error: type[ECOError] = InvalidInputError,
) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of JSON Lines ``text`` read from ``path``.

    A line that is not JSON raises ``error`` naming ``path:line``.
    """
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as err:
            msg = f"{path}:{n} is not valid JSON ({err.msg}); pass {expected}, one JSON object per line."
            raise error(msg) from None


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``path`` through a temporary sibling and one rename: a reader, or a crash, sees the
    old file or the new one, never half of one."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_folder(root: Path) -> Iterator[Path]:
    """A fresh sibling folder to build ``root``'s new contents in, swapped in when the block ends.

    On success the old folder is renamed aside, the new one renamed into place and the old one
    deleted; on an error the new one is removed and ``root`` is as it was. An interruption
    between the two renames leaves the old contents in ``.NAME.replaced-*`` beside it
    (:func:`interrupted_save` finds them).
    """
    # The real folder: renaming a symlink to a shared folder would move the new contents off
    # the share (replicas watching it would never see them), and "." has no name to stage by.
    root = Path(os.path.realpath(root))
    root.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = root.parent / f".{root.name}.saving-{tag}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        remove_folder(staging)
        raise
    swap_in(staging, root, tag)


def swap_in(built: Path, root: Path, tag: str | None = None) -> None:
    """Put the folder ``built`` (on ``root``'s file system) in ``root``'s place with two renames,
    the old contents set aside until the new ones are in (:func:`interrupted_save` finds them
    when the process dies in between), then deleted."""
    root = Path(os.path.realpath(root))
    if not root.exists():
        os.rename(built, root)
        return
    shutil.copymode(root, built)  # a group-shared folder stays shared
    retired = root.parent / f".{root.name}.replaced-{tag or uuid.uuid4().hex[:8]}"
    os.rename(root, retired)
    os.rename(built, root)
    remove_folder(retired)


def remove_folder(folder: Path) -> None:
    """Delete ``folder``, ours to delete, even where an operator made it read-only
    (``chmod -R a-w`` on a guard folder); what still cannot go is named in a warning."""
    if not folder.exists():
        return
    # A folder without its write bit keeps its entries from being deleted (for any user but
    # root). Top-down: each folder is made writable before its entries are listed and removed.
    for path, _, _ in os.walk(folder):
        with contextlib.suppress(OSError):
            os.chmod(path, os.stat(path).st_mode | stat.S_IRWXU)
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        logger.warning("Could not delete %s (left over from a save); delete it by hand.", folder)


def interrupted_save(root: Path) -> Path | None:
    """The previous contents of ``root`` set aside by a :func:`staged_folder` swap that did not
    finish, if there are any."""
    found = sorted(root.parent.glob(f".{root.name}.replaced-*")) if root.parent.is_dir() else []
    return found[-1] if found else None


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if missing) for the block.

    One process at a time builds a cache entry or runs a job; another one started meanwhile
    waits, then finds the work done (or resumes it) instead of writing the same files. ``what``
    names the work in the message logged while waiting.
    """
    try:
        import fcntl
    except ImportError:  # not on this platform: no lock
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("Another process is %s; waiting for it to finish", what)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def appending(path: Path) -> Iterator[TextIO]:
    """``path`` opened to append lines; a last line a crash cut short is ended first, so the
    first new line does not join it (and is not lost with it on the next read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as tail:
            tail.seek(-1, os.SEEK_END)
            cut = tail.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as handle:
        if cut:
            handle.write("\n")
        yield handle
