"""Serving ECO over HTTP: the OpenAI-compatible gateway behind ``eco serve``.

Needs the ``serve`` extra (Starlette and uvicorn): ``pip install 'eco-integrations[serve]'``.
Importing this package never fails for lack of it, so ``eco serve`` can always say what to
install; the names below load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["APIError", "Gateway", "GatewaySettings", "build_engine", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("APIError", "Gateway", "GatewaySettings"):
        from ..exceptions import require

        require("starlette", "serve")
        from . import app

        return getattr(app, name)
    if name in ("build_engine", "serve"):
        from . import cli

        return getattr(cli, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
