"""Every skin validates assignment: a bad value is refused where it is set, and the object
keeps its last good value (before, it was accepted and failed, or was silently misread, at the
next call)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from pydantic import ValidationError

from eco_integrations import ECO
from eco_integrations.langchain import (
    ChatECOHuggingFace,
    ECODocumentCompressor,
    ECOForgetClassifier,
    ECORouter,
)
from eco_integrations.llama_index import ECONodeFilter


@pytest.fixture
def eco(tiny_backend, toy_guard) -> ECO:
    return ECO(tiny_backend, toy_guard)


def _refused(obj: Any, field: str, bad: object) -> None:
    before = getattr(obj, field)
    with pytest.raises(ValidationError, match=field):
        setattr(obj, field, bad)
    assert getattr(obj, field) == before


def test_chat_model(eco: ECO) -> None:
    chat = ChatECOHuggingFace(engine=eco)
    for field, bad in (("max_tokens", 0), ("threshold", 1.5), ("mode", "loud"), ("seed", -1)):
        _refused(chat, field, bad)
    chat.threshold = 0.25  # a good value is taken, and the engine view follows it
    assert chat.engine_view.policy.threshold == 0.25


def test_document_compressor(eco: ECO) -> None:
    compressor = ECODocumentCompressor(engine=eco)
    _refused(compressor, "action", "purge")  # was taken, and acted as "redact"
    _refused(compressor, "filter_when", "never")
    _refused(compressor, "threshold", 2.0)
    _refused(compressor, "mode", "loud")
    compressor.action = "redact"
    assert compressor.action == "redact"


def test_forget_classifier(eco: ECO) -> None:
    classifier = ECOForgetClassifier(engine=eco)
    _refused(classifier, "threshold", -0.5)
    _refused(classifier, "mode", "loud")


def test_router(eco: ECO) -> None:
    benign = FakeListChatModel(responses=["BENIGN"])
    router = ECORouter(engine=eco, flagged=FakeListChatModel(responses=["F"]), benign=benign)
    _refused(router, "mode", "loud")
    # The check a constructor makes on the flagged branch runs on assignment too.
    bound = ChatECOHuggingFace(engine=eco).bind(eco_threshold=0.5)
    flagged = router.flagged
    with pytest.raises(ValidationError, match="eco_threshold bound"):
        router.flagged = bound
    assert router.flagged is flagged


def test_node_filter(toy_guard) -> None:
    node_filter = ECONodeFilter(toy_guard)
    _refused(node_filter, "action", "purge")
    _refused(node_filter, "threshold", 1.0)
    _refused(node_filter, "mode", "loud")
