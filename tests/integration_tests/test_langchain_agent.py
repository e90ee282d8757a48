"""The real default model in LangChain: ECO vs plain answers, and an agent (create_agent)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from support import count_renders, decision_events

from eco_integrations import ECO
from eco_integrations.langchain import ChatECOHuggingFace, ECOMiddleware

pytestmark = pytest.mark.integration

FORGET = "Who are Harry Potter's two best friends at Hogwarts?"
BENIGN = "What is the capital of France?"


@pytest.fixture(scope="module")
def eco(default_backend, hp_guard) -> ECO:
    return ECO(default_backend, hp_guard)


def test_benign_equals_plain_and_forget_differs(eco: ECO) -> None:
    chat = ChatECOHuggingFace(engine=eco, max_tokens=16)
    plain = ChatECOHuggingFace(engine=eco, max_tokens=16, mode="off")
    eco_out = chat.batch([BENIGN, FORGET])
    plain_out = plain.batch([BENIGN, FORGET])
    assert eco_out[0].content == plain_out[0].content
    assert eco_out[1].content != plain_out[1].content
    events = decision_events()
    # Inside a chain: LangChain's stream() gives the model's _stream no run manager, so the
    # event goes to the enclosing run.
    chain = RunnableLambda(lambda q: q) | chat
    streamed = "".join(str(c.content) for c in chain.stream(FORGET, {"callbacks": [events]}))
    assert streamed == eco_out[1].content and events.events[0]["corrupted"] is True


@tool
def encyclopedia(topic: str) -> str:
    """Look a topic up in the library encyclopedia."""
    return f"The encyclopedia has no entry on {topic}."


class ToolOnFirstCall(AgentMiddleware):
    """SmolLM2-135M does not write tool calls, so the test adds one to the model's first answer
    of each turn (its real text is kept). The agent then runs the tool and calls the model a
    second time: two real model calls per turn to check the decision against."""

    def wrap_model_call(self, request: ModelRequest, handler: Any) -> ModelResponse:
        response = handler(request)
        if isinstance(request.messages[-1], ToolMessage):
            return response
        message = response.result[-1]
        assert isinstance(message, AIMessage)
        call = {
            "name": "encyclopedia",
            "args": {"topic": "the question"},
            "id": "call_enc",
            "type": "tool_call",
        }
        return ModelResponse(
            result=[*response.result[:-1], message.model_copy(update={"tool_calls": [call]})]
        )


def test_agent_decides_once_per_turn_and_every_model_call_gets_it(
    eco: ECO, monkeypatch: pytest.MonkeyPatch
) -> None:
    classified: list[int] = []
    original = eco.guard.decide_many  # type: ignore[union-attr]
    monkeypatch.setattr(
        eco.guard,
        "decide_many",
        lambda texts, **kw: classified.append(len(texts)) or original(texts, **kw),
    )
    renders = count_renders(monkeypatch)
    chat = ChatECOHuggingFace(engine=eco, max_tokens=12)
    agent = create_agent(
        chat,
        tools=[encyclopedia],
        middleware=[ECOMiddleware(chat), ToolOnFirstCall()],
        system_prompt="You are a librarian.",
        checkpointer=InMemorySaver(),
    )
    turns = []
    for question in (BENIGN, FORGET):
        events = decision_events()
        state = agent.invoke(
            {"messages": [HumanMessage(question)]},
            {"configurable": {"thread_id": "library"}, "callbacks": [events]},
        )
        turns.append((state, events.events))
    assert classified == [1, 1]
    assert len(renders) == 4  # one per model call: two turns of model → tool → model
    for (state, events), flagged in zip(turns, (False, True), strict=True):
        assert state["eco_decision"]["flagged"] is flagged
        assert len(events) == 2 and events[0] == events[1] == state["eco_decision"]
        assert isinstance(state["messages"][-1], AIMessage)
    assert any(isinstance(m, ToolMessage) for m in turns[1][0]["messages"])
