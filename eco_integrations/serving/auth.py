"""API keys for the gateway: constant-time comparison, and a short fingerprint for the log.

Keys come from ``--api-key`` (repeatable), ``--api-key-file`` (one per line, ``#`` comments)
and the ``ECO_API_KEYS`` environment variable (comma-separated). A key is never logged: the
access log records :func:`fingerprint` of the key used, enough to tell clients apart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..exceptions import ConfigurationError

API_KEYS_ENV = "ECO_API_KEYS"
MIN_KEY_CHARS = 16


def fingerprint(key: str) -> str:
    """The first 8 hex digits of the key's SHA-256: identifies a key without revealing it."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def load_keys(
    keys: Iterable[str] = (), files: Iterable[str | os.PathLike[str]] = (), *, env: bool = True
) -> tuple[str, ...]:
    """Every configured key, checked: printable ASCII without spaces, at least 16 characters."""
    found = [k.strip() for k in keys]
    for file in files:
        path = Path(file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            msg = f"Cannot read the API key file {path} ({err}); give a UTF-8 text file with one key per line."
            raise ConfigurationError(msg) from None
        in_file = [
            line.strip() for line in lines if line.strip() and not line.strip().startswith("#")
        ]
        if not in_file:
            # An empty file would serve without keys: the opposite of what giving one asks for.
            msg = f"The API key file {path} holds no key; put one key per line in it."
            raise ConfigurationError(msg)
        found.extend(in_file)
    if env:
        found.extend(k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip())
    return check_keys(found)


def check_keys(keys: Sequence[str]) -> tuple[str, ...]:
    """The keys, once each, if every one is usable: printable ASCII without spaces, at least
    :data:`MIN_KEY_CHARS` characters. One string in place of a list of keys is refused: it
    would be taken as one key per character, and a one-letter header would get in."""
    if isinstance(keys, (str, bytes)):
        msg = "api_keys is one string; pass a list or tuple of keys, e.g. api_keys=[key]."
        raise ConfigurationError(msg)
    for key in keys:
        if (
            not isinstance(key, str)
            or len(key) < MIN_KEY_CHARS
            or not key.isascii()
            or not key.isprintable()
            or " " in key
        ):
            shown = fingerprint(key) if isinstance(key, str) else type(key).__name__
            msg = (
                f"API key {shown} (fingerprint) is not usable: keys must be at least {MIN_KEY_CHARS} "
                "printable ASCII characters without spaces, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
            raise ConfigurationError(msg)
    return tuple(dict.fromkeys(keys))


class KeyChecker:
    """Checks ``Authorization: Bearer KEY`` headers against the configured keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [(k.encode(), fingerprint(k)) for k in check_keys(keys)]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> str | None:
        """The fingerprint of the matching key, or None.

        Every key is compared (``hmac.compare_digest``), so the time taken does not tell an
        attacker which key, or how much of one, was right.
        """
        if not authorization:
            return None
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = given.strip().encode("utf-8", "replace")
        matched = None
        for key, print_ in self._keys:
            if hmac.compare_digest(key, token):
                matched = print_
        return matched
