"""Fixtures shared by the integration tests of the gateway."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def guard_dir(tmp_path_factory: pytest.TempPathFactory, hp_guard) -> Path:
    """The demo's Harry Potter guard saved as a folder, for ``eco serve --guard``."""
    folder = tmp_path_factory.mktemp("guard")
    hp_guard.save(folder)
    return folder
