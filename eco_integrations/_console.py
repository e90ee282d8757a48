"""What the commands print (one JSON object per result line, the last line of every command) and
the option values they share."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Collection
from typing import Any

from .exceptions import InvalidInputError


def print_json(obj: Any) -> None:
    """One JSON line on stdout (numpy numbers as floats, text unescaped)."""
    print(json.dumps(obj, ensure_ascii=False, default=float))  # noqa: T201 - the commands' output


def parse_guard_params(
    items: list[str] | None, *, reserved: Collection[str] = ()
) -> dict[str, Any]:
    """``--guard-param C=10`` pairs into PromptGuard keyword arguments (JSON values when they parse).

    ``reserved`` names parameters the command sets itself (by another option or by its protocol).
    """
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"--guard-param takes NAME=VALUE (e.g. C=10), got {item!r}."
            raise InvalidInputError(msg)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    from .guard import PromptGuard

    taken = sorted(set(params) & set(reserved))
    if taken:
        # Each reserved name has an option of the same name (knowledge and near_misses: --knowledge).
        options = sorted(
            {"--knowledge" if k == "near_misses" else "--" + k.replace("_", "-") for k in taken}
        )
        msg = f"--guard-param {', '.join(taken)}: set by this command's own option; use {', '.join(options)} instead."
        raise InvalidInputError(msg)
    allowed = set(PromptGuard().get_params(deep=False)) - {"encoder", *reserved}
    unknown = set(params) - allowed
    if unknown:
        msg = f"Unknown --guard-param {', '.join(sorted(unknown))}; this command takes: {', '.join(sorted(allowed))}."
        raise InvalidInputError(msg)
    return params


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``least``, else argparse's usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            msg = f"{text!r} is not a whole number"
            raise argparse.ArgumentTypeError(msg) from None
        if value < least:
            msg = f"must be >= {least}, got {value}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 to 65535 (0: the system picks one)."""
    value = whole_number(0)(text)
    if value > 65535:
        msg = f"a TCP port is at most 65535, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value
