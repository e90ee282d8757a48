"""Settings models' complaints in words a user reads, without pydantic's banner and links."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError


def validation_problems(err: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """A settings model's complaints as one sentence a command line can print, field first.

    ``names`` renames fields to what the user typed (``{"batch_size": "--batch-size"}``); the
    value given is quoted after each complaint about a field, shortened when long.
    """
    problems = []
    for e in err.errors():
        loc = [str(part) for part in e["loc"]]
        if loc and names:
            loc[0] = names.get(loc[0], loc[0])
        problem = ("" if not loc else f"{'.'.join(loc)}: ") + str(e["msg"]).removeprefix(
            "Value error, "
        )
        if loc and e["type"] != "missing":
            given = repr(e.get("input"))
            problem += f" (got {given if len(given) <= 60 else given[:57] + '...'})"
        problems.append(problem)
    return "; ".join(problems)
