"""langchain-tests' ChatModelUnitTests on the tiny model."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.unit_tests import ChatModelUnitTests

from eco_integrations import ECO
from eco_integrations.langchain import ChatECOHuggingFace


class TestChatECOHuggingFaceUnit(ChatModelUnitTests):
    _engine: ECO | None = None

    @pytest.fixture(autouse=True)
    def _tiny_engine(self, tiny_backend, toy_guard) -> None:
        type(self)._engine = ECO(tiny_backend, toy_guard)

    @property
    def chat_model_class(self) -> type[ChatECOHuggingFace]:
        return ChatECOHuggingFace

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"engine": self._engine}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # A local model has no API key, network timeout or retries; the class forbids unknown
        # fields so that typos fail loudly.
        params = super().standard_chat_model_params
        for key in ("api_key", "timeout", "max_retries"):
            params.pop(key, None)
        return params
