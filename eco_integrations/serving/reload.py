"""Live guard changes: the gateway re-reads its guard folder and swaps the engine atomically.

``eco serve --watch`` polls the folder (``manifest.json``, ``policy.json``, ``integrity.json``)
and SIGHUP asks for a check at once. A new guard is loaded and verified (schema, ranges,
integrity, signature, the same encoder) in the watcher's thread while the old one keeps
serving; only a guard that loads and answers a warm-up decision is swapped in. Several replicas
watching one shared folder all pick up a change without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from .._integrity import INTEGRITY_FILE
from ..config import ECOPolicy
from ..engine import ECO
from ..guard import Guard
from .app import served_engine

logger = logging.getLogger(__name__)
WATCHED = ("manifest.json", "policy.json", INTEGRITY_FILE)


def reload_engine(current: ECO, folder: str | os.PathLike[str]) -> ECO:
    """A new engine on ``current``'s backend with the guard (and policy, if it holds one) now
    in ``folder``.

    The guard must use the encoder ``current`` uses (``Guard.load`` refuses one that embeds
    differently), so the loaded encoder is shared and nothing is re-read but the guard.
    """
    root = Path(folder)
    # A folder without policy.json keeps the policy being served (one set in code, say): a
    # reload swaps what the folder holds, it does not reset the rest to defaults.
    policy = ECOPolicy.load(root) if (root / "policy.json").is_file() else current.policy
    encoder = current.guard.encoder if current.guard is not None else None
    guard = Guard.load(root, encoder=encoder)
    return ECO(
        current.backend,
        guard,
        policy=policy,
        mode=current.mode,
        batch_size=current.batch_size,
        on_guard_error=current.on_guard_error,
    )


def _content(engine: ECO) -> str | None:
    return engine.guard.content_sha256 if engine.guard is not None else None


class GuardWatcher:
    """Polls a guard folder every ``interval`` seconds (None: only on :meth:`poke`) and swaps on change."""

    def __init__(
        self, gateway: Any, folder: str | os.PathLike[str], *, interval: float | None = 2.0
    ) -> None:
        self.gateway = gateway
        self.folder = Path(folder)
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seen = self._stamp()
        self.last_error: str | None = None

    def _stamp(self) -> tuple[Any, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for name in WATCHED:
            try:
                st = (self.folder / name).stat()
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def poke(self) -> None:
        """Check now (SIGHUP), even if nothing seems to have changed."""
        self._seen = ()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def check(self) -> bool:
        """Reload if the folder changed; True when a new guard was swapped in."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        engine = self.gateway.state.engine
        if engine is None:
            return False  # still loading: the loader reads the folder as it is now
        self._seen = stamp
        metrics = self.gateway.metrics
        try:
            fresh = served_engine(reload_engine(engine, self.folder))
            if fresh.policy_version == engine.policy_version and _content(fresh) == _content(
                engine
            ):
                return False  # files touched, nothing changed (a re-fit keeping its id and
                # version changes its content hash, and is swapped in)
            self.gateway.swap_engine(fresh)
        except Exception as err:
            # The old guard keeps serving; a half-written folder is retried when it changes again.
            self.last_error = f"{type(err).__name__}: {err}"
            metrics.guard_reloads.labels(outcome="refused").inc()
            logger.error(
                "guard reload from %s refused, the old guard keeps serving: %s",
                self.folder,
                self.last_error,
            )
            return False
        self.last_error = None
        metrics.guard_reloads.labels(outcome="swapped").inc()
        logger.warning(
            "guard reloaded from %s: now serving %s (was %s)",
            self.folder,
            fresh.policy_version,
            engine.policy_version,
        )
        return True

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.check()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="eco-guard-watcher", daemon=True)
        thread.start()
        return thread
