"""Settings models' complaints in words a user reads, without pydantic's banner and links."""

from __future__ import annotations

from pydantic import ValidationError


def validation_problems(err: ValidationError) -> str:
    """A settings model's complaints as one sentence a command line can print, field first."""
    return "; ".join(
        ("" if not e["loc"] else f"{'.'.join(map(str, e['loc']))}: ")
        + str(e["msg"]).removeprefix("Value error, ")
        for e in err.errors()
    )
