"""Unit tests run without network sockets: they use tiny in-memory models and in-process apps.

Unix sockets stay allowed: asyncio's event loop wakes itself through a socketpair.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_socket import disable_socket, enable_socket


@pytest.fixture(autouse=True)
def _no_network_sockets() -> Iterator[None]:
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()
