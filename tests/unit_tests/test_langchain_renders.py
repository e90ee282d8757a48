"""One render and one decision per request on every path of the LangChain chat model."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from support import count_renders

from eco_integrations import ECO
from eco_integrations.langchain import ChatECOHuggingFace, ECORouter

FORGET = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"
HOGWARTS = "Tell me about Hogwarts school."


@pytest.fixture
def chat(tiny_backend, toy_guard) -> ChatECOHuggingFace:
    return ChatECOHuggingFace(engine=ECO(tiny_backend, toy_guard), max_tokens=3)


@pytest.fixture
def guard_passes(chat: ChatECOHuggingFace, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many texts each guard pass classified."""
    passes: list[int] = []
    guard = chat.engine_view.guard
    assert guard is not None
    original = guard.decide_many
    monkeypatch.setattr(
        guard, "decide_many", lambda texts, **kw: passes.append(len(texts)) or original(texts, **kw)
    )
    return passes


async def _call(chat: ChatECOHuggingFace, path: str, prompt: str) -> Any:
    if path == "invoke":
        return chat.invoke(prompt)
    if path == "stream":
        return list(chat.stream(prompt))
    if path == "ainvoke":
        return await chat.ainvoke(prompt)
    if path == "astream":
        return [c async for c in chat.astream(prompt)]
    if path == "invoke through streaming":
        return chat.model_copy(update={"streaming": True}).invoke(prompt)
    raise AssertionError(path)


@pytest.mark.parametrize(
    "path", ["invoke", "stream", "ainvoke", "astream", "invoke through streaming"]
)
async def test_one_render_and_one_decision_per_request(
    chat: ChatECOHuggingFace, guard_passes: list[int], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    renders = count_renders(monkeypatch)
    for prompt in (FORGET, BENIGN):
        await _call(chat, path, prompt)
    assert len(renders) == 2
    assert guard_passes == [1, 1]


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_batch_renders_each_input_once_and_decides_in_one_pass(
    chat: ChatECOHuggingFace,
    guard_passes: list[int],
    monkeypatch: pytest.MonkeyPatch,
    use_async: bool,
) -> None:
    renders = count_renders(monkeypatch)
    prompts = [FORGET, BENIGN, HOGWARTS]
    out = await chat.abatch(prompts) if use_async else chat.batch(prompts)
    assert len(out) == 3
    assert len(renders) == 3
    assert guard_passes == [3]


def test_a_handed_in_decision_is_not_made_again(
    chat: ChatECOHuggingFace, guard_passes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    decision = chat.engine_view.decide(FORGET)  # no rendering
    renders = count_renders(monkeypatch)
    chat.invoke(FORGET, eco_decision=decision)
    list(chat.stream(FORGET, eco_decision=decision.event_payload()))
    assert len(renders) == 2
    assert guard_passes == [1]  # the decide() above only


def test_router_with_an_eco_branch_renders_once(
    chat: ChatECOHuggingFace, guard_passes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = ECORouter(
        engine=chat.engine_view, flagged=chat, benign=FakeListChatModel(responses=["BENIGN"])
    )
    renders = count_renders(monkeypatch)
    router.invoke(FORGET)
    assert len(renders) == 1 and guard_passes == [1]
