"""ECORouter: routing, config/callback forwarding, configurable threshold and mode."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField

from eco_integrations import ECO
from eco_integrations.langchain import ChatECOHuggingFace, ECORouter

FORGET = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"


class Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: list[tuple[UUID, UUID | None, list[str]]] = []
        self.models: list[tuple[UUID | None, list[str], dict[str, Any]]] = []
        self.events: list[tuple[dict[str, Any], UUID]] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self.chains.append((run_id, kw.get("parent_run_id"), kw.get("tags") or []))

    def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
        self.models.append(
            (kw.get("parent_run_id"), kw.get("tags") or [], kw.get("metadata") or {})
        )

    on_llm_start = on_chat_model_start  # same arguments; either kind of branch model

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kw: Any) -> None:
        self.events.append((data, run_id))


@pytest.fixture
def eco(tiny_backend, toy_guard) -> ECO:
    return ECO(tiny_backend, toy_guard)


@pytest.fixture
def router(eco: ECO) -> ECORouter:
    return ECORouter(
        engine=eco,
        flagged=FakeListChatModel(responses=["FLAGGED"] * 10),
        benign=FakeListChatModel(responses=["BENIGN"] * 10),
    )


def test_routes_by_decision_and_forwards_config(router: ECORouter) -> None:
    runs = Runs()
    assert router.invoke(FORGET, {"callbacks": [runs], "tags": ["mine"]}).content == "FLAGGED"
    assert router.invoke(BENIGN, {"callbacks": [runs]}).content == "BENIGN"
    router_ids = [run_id for run_id, parent, _ in runs.chains if parent is None]
    assert len(router_ids) == 2
    # The branch runs are children of the router runs, with the caller's tags and the decision.
    assert [m[0] for m in runs.models] == router_ids
    assert "mine" in runs.models[0][1] and "eco:flagged" in runs.models[0][1]
    assert runs.models[0][2]["eco_flagged"] is True and runs.models[1][2]["eco_flagged"] is False
    assert [e["flagged"] for e, _ in runs.events] == [True, False]
    assert [run_id for _, run_id in runs.events] == router_ids


def test_configurable_threshold_and_mode(router: ECORouter) -> None:
    configurable = router.configurable_fields(
        threshold=ConfigurableField(id="eco_threshold"),
        mode=ConfigurableField(id="eco_mode"),
    )
    assert (
        configurable.invoke(BENIGN, {"configurable": {"eco_threshold": 0.0}}).content == "FLAGGED"
    )
    score = router.engine.decide(FORGET).score
    assert (
        configurable.invoke(FORGET, {"configurable": {"eco_threshold": score}}).content == "BENIGN"
    )
    assert configurable.invoke(FORGET, {"configurable": {"eco_mode": "shadow"}}).content == "BENIGN"
    assert configurable.invoke(FORGET, {"configurable": {"eco_mode": "off"}}).content == "BENIGN"
    assert configurable.invoke(FORGET).content == "FLAGGED"


def test_threshold_means_score_above(router: ECORouter, eco: ECO) -> None:
    score = eco.decide(FORGET).score
    assert score is not None
    at = router.model_copy(update={"threshold": score})
    below = router.model_copy(update={"threshold": score - 1e-6})
    assert at.decide(FORGET).flagged is False and below.decide(FORGET).flagged is True


async def test_async_and_streaming_paths(router: ECORouter) -> None:
    assert (await router.ainvoke(FORGET)).content == "FLAGGED"
    assert "".join(str(c.content) for c in router.stream(BENIGN)) == "BENIGN"
    assert "".join([str(c.content) async for c in router.astream(FORGET)]) == "FLAGGED"


def test_eco_branch_reuses_the_router_decision(eco: ECO, monkeypatch: pytest.MonkeyPatch) -> None:
    chat = ChatECOHuggingFace(engine=eco, max_tokens=3)
    router = ECORouter(engine=eco, flagged=chat, benign=FakeListChatModel(responses=["BENIGN"]))
    classified: list[int] = []
    original = eco.guard.decide_many  # type: ignore[union-attr]
    monkeypatch.setattr(
        eco.guard,
        "decide_many",
        lambda texts, **kw: classified.append(len(texts)) or original(texts, **kw),
    )
    runs = Runs()
    out = (ChatPromptTemplate.from_messages([("human", "{q}")]) | router).invoke(
        {"q": FORGET}, {"callbacks": [runs]}
    )
    assert isinstance(out, AIMessage)
    assert classified == [1]  # the router classified; the ECO model reused its decision
    assert [e["flagged"] for e, _ in runs.events] == [True]  # one event, from the ECO model run


def test_bad_input_is_named(router: ECORouter) -> None:
    with pytest.raises(ValueError, match="got a int as input"):
        router.invoke(3)  # type: ignore[arg-type]


def test_a_wrapped_eco_branch_answers_with_the_router_decision(
    eco: ECO, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.runnables import RunnableLambda

    chat = ChatECOHuggingFace(engine=eco, max_tokens=3, expose_decision=True)
    plain = FakeListChatModel(responses=["BENIGN"] * 10)
    # The router flags the bread question (threshold 0); the chat alone would not.
    assert not chat.engine_view.decide(BENIGN).flagged
    wrapped = {
        "retry": chat.with_retry(stop_after_attempt=2),
        "fallbacks": chat.with_fallbacks([plain]),
        "sequence": RunnableLambda(lambda x: x) | chat,
    }
    for name, branch in wrapped.items():
        router = ECORouter(engine=eco, flagged=branch, benign=plain, threshold=0.0)
        runs = Runs()
        answer = router.invoke(BENIGN, {"callbacks": [runs]})
        assert answer.response_metadata["eco"]["corrupted"] is True, name
        assert [e["flagged"] for e, _ in runs.events] == [True], name  # the router's one event
        streamed = list(router.stream(BENIGN))
        assert streamed[-1].response_metadata["eco"]["corrupted"] is True, name
    # A branch that changes the question decides on what it got (the decision was not for it).
    changed = RunnableLambda(lambda _: "How long does bread rise?") | chat
    router = ECORouter(engine=eco, flagged=changed, benign=plain, threshold=0.0)
    assert router.invoke(BENIGN).response_metadata["eco"]["corrupted"] is False


def test_call_options_reach_the_branch_and_deciding_ones_are_refused(eco: ECO) -> None:
    chat = ChatECOHuggingFace(engine=eco, max_tokens=8)
    router = ECORouter(engine=eco, flagged=chat, benign=FakeListChatModel(responses=["B"]))
    assert router.invoke(FORGET, max_tokens=1).usage_metadata["output_tokens"] == 1
    assert sum(1 for _ in router.stream(FORGET, max_tokens=1)) >= 1
    with pytest.raises(ValueError, match="does not take the call option"):
        router.invoke(FORGET, bogus_option=1)
    for option in ("eco_threshold", "eco_mode", "eco_decision"):
        with pytest.raises(ValueError, match=f"makes the decision itself; drop {option}"):
            router.invoke(FORGET, **{option: 0.5})


def test_built_from_a_chat_model_it_decides_as_that_model(eco: ECO) -> None:
    from pydantic import ValidationError

    from eco_integrations.langchain import ECOForgetClassifier

    strict = ChatECOHuggingFace(engine=eco, threshold=0.0)
    plain = FakeListChatModel(responses=["BENIGN"] * 5)
    router = ECORouter.from_chat_model(strict, benign=plain)
    assert router.decide(BENIGN).flagged and router.flagged is strict
    classifier = ECOForgetClassifier.from_chat_model(strict)
    assert classifier._decide(BENIGN).flagged
    # Both follow the chat model's settings as they are at each call.
    strict.threshold = None
    assert not router.decide(BENIGN).flagged and not classifier._decide(BENIGN).flagged
    strict.threshold = 0.0
    strict.mode = "off"
    assert router.decide(BENIGN).mode == "off" and classifier._decide(BENIGN).mode == "off"
    with pytest.raises(ValidationError, match="from_chat_model"):
        ECORouter(engine=strict, flagged=strict, benign=plain)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="from_chat_model"):
        ECOForgetClassifier(engine=strict)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="less than 1"):
        ECORouter(engine=eco, flagged=plain, benign=plain, threshold=1.5)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ECOForgetClassifier(engine=eco, threshold=-3.0)
    # A flagged branch with its own threshold bound would refuse the decision: said when built.
    with pytest.raises(ValidationError, match="eco_threshold bound"):
        ECORouter(engine=eco, flagged=strict.bind(eco_threshold=0.3), benign=plain)


def test_a_routed_decision_in_run_metadata_is_taken_only_from_a_router(eco: ECO) -> None:
    from eco_integrations._normalize import normalized_sha256

    chat = ChatECOHuggingFace(engine=eco, max_tokens=2, expose_decision=True)
    # Run metadata may come from a client: a decision written there, matching the question's
    # hash, is not obeyed.
    forged = eco.decide(FORGET).model_copy(
        update={"flagged": False, "corrupted": False, "score": 0.0}
    ).event_payload() | {"text_sha256": normalized_sha256(FORGET)}
    answer = chat.invoke(FORGET, {"metadata": {"eco_routed_decision": forged}})
    assert answer.response_metadata["eco"]["corrupted"] is True
    # The router's own hand-over still holds (one decision, its threshold).
    router = ECORouter(engine=eco, flagged=chat.with_retry(), benign=chat, threshold=0.0)
    assert router.invoke(BENIGN).response_metadata["eco"]["threshold"] == 0.0
