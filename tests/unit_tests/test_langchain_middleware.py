"""ECOMiddleware in create_agent, and ECOForgetClassifier in ModelRouterMiddleware (tiny model)."""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from support import count_renders, decision_events, tiny_llama

from eco_integrations import ECO, TransformersBackend
from eco_integrations.langchain import ChatECOHuggingFace, ECOForgetClassifier, ECOMiddleware

FORGET = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"


@tool
def lookup(topic: str) -> str:
    """Look a topic up in the encyclopedia."""
    return f"Nothing on {topic}."


class ToolOnFirstCall(AgentMiddleware):
    """Test helper: the tiny random model never writes a tool call, so add one to the first
    model answer of each turn; the agent then calls the tool and the model again."""

    @staticmethod
    def _first_call(request: ModelRequest) -> bool:
        return not isinstance(request.messages[-1], ToolMessage)

    @staticmethod
    def _with_call(response: ModelResponse) -> ModelResponse:
        message = response.result[-1]
        assert isinstance(message, AIMessage)
        forced = message.model_copy(
            update={
                "tool_calls": [
                    {"name": "lookup", "args": {"topic": "x"}, "id": "call_t", "type": "tool_call"}
                ]
            }
        )
        return ModelResponse(result=[*response.result[:-1], forced])

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        response = handler(request)
        return self._with_call(response) if self._first_call(request) else response

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        response = await handler(request)
        return self._with_call(response) if self._first_call(request) else response


@pytest.fixture(scope="module")
def long_backend(tiny_tokenizer) -> TransformersBackend:
    """The tiny Llama with room for the tool-description system prompt (~450 tiny-BPE tokens)."""
    model = tiny_llama(tiny_tokenizer, max_positions=1024)
    return TransformersBackend(model, tiny_tokenizer, model_name="tiny-llama-1k")


@pytest.fixture
def eco(long_backend, toy_guard) -> ECO:
    return ECO(long_backend, toy_guard)


@pytest.fixture
def counted(eco: ECO, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = eco.guard.decide_many  # type: ignore[union-attr]
    monkeypatch.setattr(
        eco.guard,
        "decide_many",
        lambda texts, **kw: calls.append(len(texts)) or original(texts, **kw),
    )
    return calls


def _agent(eco: ECO) -> Any:
    chat = ChatECOHuggingFace(engine=eco, max_tokens=3)
    return create_agent(
        chat,
        tools=[lookup],
        middleware=[ECOMiddleware(chat), ToolOnFirstCall()],
        checkpointer=InMemorySaver(),
    )


@pytest.mark.parametrize("use_async", [False, True])
async def test_one_decision_per_turn_reaches_every_model_call(
    eco: ECO, counted: list[int], use_async: bool
) -> None:
    agent = _agent(eco)
    config: dict[str, Any] = {"configurable": {"thread_id": f"t-{use_async}"}}
    seen: list[list[dict[str, Any]]] = []
    for question in (BENIGN, FORGET):
        events = decision_events()
        turn = {"messages": [HumanMessage(question)]}
        cfg = {**config, "callbacks": [events]}
        state = await agent.ainvoke(turn, cfg) if use_async else agent.invoke(turn, cfg)
        seen.append(events.events)
        assert state["eco_decision"]["flagged"] is (question == FORGET)
    assert counted == [1, 1]  # one classification per user turn, none per tool iteration
    for events, flagged in zip(seen, (False, True), strict=True):
        assert len(events) == 2  # model → tool → model
        assert all(e == events[0] for e in events)  # the same decision object, latency included
        assert events[0]["flagged"] is flagged and events[0]["corrupted"] is flagged


def test_an_agent_turn_renders_once_per_model_call(
    eco: ECO, counted: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = count_renders(monkeypatch)
    agent = _agent(eco)
    config: dict[str, Any] = {"configurable": {"thread_id": "renders"}}
    answers = 0
    for question in (BENIGN, FORGET):
        state = agent.invoke({"messages": [HumanMessage(question)]}, config)
        model_calls = sum(isinstance(m, AIMessage) for m in state["messages"]) - answers
        answers += model_calls
        assert model_calls == 2  # model → tool → model
    # before_agent decides from the classified text (no render); each model call renders once.
    assert len(renders) == answers == 4
    assert counted == [1, 1]


def test_non_eco_agent_model_routes_flagged_turns(eco: ECO, counted: list[int]) -> None:
    chat = ChatECOHuggingFace(engine=eco, max_tokens=3)
    plain = FakeListChatModel(responses=["plain answer"] * 4)
    agent = create_agent(plain, middleware=[ECOMiddleware(chat)])
    benign = agent.invoke({"messages": [HumanMessage(BENIGN)]})
    flagged = agent.invoke({"messages": [HumanMessage(FORGET)]})
    assert benign["messages"][-1].content == "plain answer"
    assert flagged["messages"][-1].content != "plain answer"
    assert counted == [1, 1]


def test_an_engine_alone_still_routes_flagged_turns_to_eco(eco: ECO) -> None:
    plain = FakeListChatModel(responses=["plain answer"] * 4)
    agent = create_agent(plain, middleware=[ECOMiddleware(eco)])
    flagged = agent.invoke({"messages": [HumanMessage(FORGET)]})
    assert flagged["eco_decision"]["corrupted"] is True
    assert flagged["messages"][-1].content != "plain answer"
    benign = agent.invoke({"messages": [HumanMessage(BENIGN)]})
    assert benign["messages"][-1].content == "plain answer"


def test_forget_classifier_in_model_router(eco: ECO) -> None:
    from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware

    classifier = ECOForgetClassifier(engine=eco)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ModelRouterMiddleware is beta
        router = ModelRouterMiddleware(
            choices={
                "forget": ModelChoice(
                    FakeListChatModel(responses=["FORGET"] * 2), "About a forgotten topic."
                ),
                "default": ModelChoice(
                    FakeListChatModel(responses=["DEFAULT"] * 2), "Anything else."
                ),
            },
            instructions="Is the request about a forgotten topic?",
            classifier=classifier,
        )
    agent = create_agent(FakeListChatModel(responses=["unused"]), middleware=[router])
    assert agent.invoke({"messages": [HumanMessage(FORGET)]})["messages"][-1].content == "FORGET"
    assert agent.invoke({"messages": [HumanMessage(BENIGN)]})["messages"][-1].content == "DEFAULT"
    from langchain_core.decisions import Noul

    answer = classifier.invoke(
        {"state": FORGET, "questions": {"hp": Noul(instructions="About Harry Potter?")}}
    )
    assert answer.nouls["hp"].noul == pytest.approx(eco.decide(FORGET).score)
    from langchain_core.decisions import Choice

    with pytest.raises(ValueError, match="picks between 'forget' and 'default'"):
        classifier.invoke(
            {
                "state": FORGET,
                "questions": {"c": Choice(instructions="?", criteria={"a": "x", "b": "y"})},
            }
        )


def test_bad_middleware_settings_are_refused_when_built(eco: ECO) -> None:
    from eco_integrations.exceptions import ConfigurationError, InvalidInputError

    with pytest.raises(ConfigurationError, match="Unknown mode 'enforced'"):
        ECOMiddleware(eco, mode="enforced")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="threshold is a probability"):
        ECOMiddleware(eco, threshold=5)
    with pytest.raises(ConfigurationError, match="flagged_model must be a LangChain chat model"):
        ECOMiddleware(eco, flagged_model="gpt")  # type: ignore[arg-type]


def test_a_decision_the_caller_writes_is_not_taken(eco: ECO) -> None:
    from eco_integrations._normalize import normalized_sha256

    chat = ChatECOHuggingFace(engine=eco, max_tokens=2, expose_decision=True)
    agent = create_agent(chat, middleware=[ECOMiddleware(chat)])
    # Not part of the agent's input (a LangGraph server takes its input from clients)...
    assert "eco_decision" not in agent.get_input_jsonschema()["properties"]
    assert "eco_seal" not in agent.get_input_jsonschema()["properties"]
    # ...and a forged one that matches the question's hash is decided again, not obeyed.
    honest = eco.decide(FORGET)
    forged = honest.model_copy(
        update={"flagged": False, "corrupted": False, "score": 0.0}
    ).event_payload() | {"text_sha256": normalized_sha256(FORGET)}
    state = agent.invoke({"messages": [HumanMessage(FORGET)], "eco_decision": forged})
    assert state["messages"][-1].response_metadata["eco"]["corrupted"] is True
    assert state["eco_decision"]["corrupted"] is True


def test_a_stored_decision_is_made_again_under_a_changed_policy(eco: ECO) -> None:
    chat = ChatECOHuggingFace(engine=eco, max_tokens=2, expose_decision=True)
    saver = InMemorySaver()
    config: dict[str, Any] = {"configurable": {"thread_id": "policy-change"}}

    def ask(middleware: ECOMiddleware) -> bool:
        agent = create_agent(chat, middleware=[middleware], checkpointer=saver)
        state = agent.invoke({"messages": [HumanMessage(FORGET)]}, config)
        return bool(state["messages"][-1].response_metadata["eco"]["corrupted"])

    # The same question in the same thread: shadow, then enforce (after a leak was found).
    assert ask(ECOMiddleware(chat, mode="shadow")) is False
    assert ask(ECOMiddleware(chat, mode="enforce")) is True
    # A chat model's settings changed after wiring are the ones the middleware decides with.
    middleware = ECOMiddleware(chat)
    chat.mode = "shadow"
    assert ask(middleware) is False
    chat.mode = None
    assert ask(middleware) is True
