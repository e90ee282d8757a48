"""``ECOPolicy.classify_roles`` through the skins: what the application or client wrote is read,
what a skin writes itself (tool instructions) is not, and a decision handed down still matches.

The tiny random model and the toy Harry Potter guard; prompts with tool instructions are long,
so the model takes 1,024 positions.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from support import decision_events, tiny_llama

from eco_integrations import ECO, ECOPolicy, InvalidInputError, TransformersBackend
from eco_integrations._prompting import render
from eco_integrations.langchain import ChatECOHuggingFace, ECOMiddleware, ECORouter

EVERY_ROLE = ("system", "user", "assistant", "tool")
FORGET = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"


@tool
def wizard_facts(topic: str) -> str:
    """Facts about Harry Potter, Hogwarts and Lord Voldemort."""
    return "x"


@pytest.fixture(scope="module")
def backend(tiny_tokenizer) -> TransformersBackend:
    return TransformersBackend(
        tiny_llama(tiny_tokenizer, max_positions=1024), tiny_tokenizer, model_name="tiny"
    )


def _eco(backend: TransformersBackend, toy_guard: Any, roles: Any = EVERY_ROLE) -> ECO:
    return ECO(backend, toy_guard, policy=ECOPolicy(classify_roles=roles))


def test_tool_instructions_the_skin_writes_are_not_read(backend, toy_guard) -> None:
    eco = _eco(backend, toy_guard)
    chat = ChatECOHuggingFace(engine=eco, max_tokens=2, expose_decision=True)
    # A tool described in forget words, bound to a benign question: the description is the
    # skin's scaffolding, not the user's or the application's words.
    answer = chat.bind_tools([wizard_facts]).invoke([HumanMessage(BENIGN)])
    assert answer.response_metadata["eco"]["flagged"] is False
    assert answer.response_metadata["eco"]["text_sha256"] == eco.decide(BENIGN).text_sha256
    # The application's own system prompt, before the appended instructions, is read.
    asked = chat.bind_tools([wizard_facts]).invoke([SystemMessage(FORGET), HumanMessage(BENIGN)])
    assert asked.response_metadata["eco"]["flagged"] is True
    reference = eco.decide(
        [{"role": "system", "content": FORGET}, {"role": "user", "content": BENIGN}]
    )
    assert asked.response_metadata["eco"]["text_sha256"] == reference.text_sha256


def test_a_router_s_decision_survives_a_tool_bound_wrapped_branch(backend, toy_guard) -> None:
    eco = _eco(backend, toy_guard)
    chat = ChatECOHuggingFace(engine=eco, max_tokens=2, expose_decision=True)
    router = ECORouter(
        engine=eco,
        threshold=0.3,  # the router's own, below the guard's: the benign question is routed
        flagged=chat.bind_tools([wizard_facts], tool_choice="any").with_retry(),
        benign=FakeListChatModel(responses=["B"]),
    )
    events = decision_events()
    assert router.decide([HumanMessage(BENIGN)]).corrupted
    out = router.invoke([HumanMessage(BENIGN)], {"callbacks": [events]})
    assert out.response_metadata["eco"]["corrupted"] is True
    assert [e["threshold"] for e in events.events] == [0.3]  # one decision, the router's


def test_the_middleware_reads_the_agent_s_system_prompt(backend, toy_guard) -> None:
    from langchain.agents import create_agent

    for roles, flagged in ((EVERY_ROLE, True), (None, False)):
        eco = _eco(backend, toy_guard, roles)
        chat = ChatECOHuggingFace(engine=eco, max_tokens=2, expose_decision=True)
        agent = create_agent(chat, system_prompt=FORGET, middleware=[ECOMiddleware(chat)])
        state = agent.invoke({"messages": [HumanMessage(BENIGN)]})
        assert state["messages"][-1].response_metadata["eco"]["flagged"] is flagged, roles
        # The state holds the decision the answer was made under, not before_agent's (which
        # had no system prompt to read).
        assert state["eco_decision"]["flagged"] is flagged, roles


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_tool_result_in_forget_words_is_decided_and_kept_in_state(
    backend, toy_guard, use_async: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain.agents import create_agent
    from test_langchain_middleware import ToolOnFirstCall

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up in the encyclopedia."""
        return FORGET  # a retrieved page about the forget target

    chat = ChatECOHuggingFace(engine=_eco(backend, toy_guard, ("user", "tool")), max_tokens=2)
    agent = create_agent(chat, tools=[lookup], middleware=[ECOMiddleware(chat), ToolOnFirstCall()])
    events = decision_events()
    turn, config = {"messages": [HumanMessage(BENIGN)]}, {"callbacks": [events]}
    state = await agent.ainvoke(turn, config) if use_async else agent.invoke(turn, config)
    # model (benign question) -> tool (forget words) -> model: the second call is flagged, and
    # the state says so.
    assert [e["flagged"] for e in events.events] == [False, True]
    assert state["eco_decision"]["flagged"] is True
    assert state["eco_decision"] == events.events[-1]
    if not use_async:
        # A LangChain without ExtendedModelResponse (before 1.2.9) still answers under the new
        # decision; its state keeps the turn's first, as documented.
        import eco_integrations.langchain.middleware as middleware

        monkeypatch.setattr(middleware, "_WITH_STATE_UPDATE", None)
        events = decision_events()
        state = agent.invoke(turn, {"callbacks": [events]})
        assert [e["flagged"] for e in events.events] == [False, True]
        assert state["eco_decision"]["flagged"] is False


def test_a_template_that_re_encodes_a_tool_result_still_renders(backend, toy_guard) -> None:
    tokenizer = copy.deepcopy(backend.tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'tool' %}{{ m['content'] | tojson }}{% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"sky": "clear"}'},
    ]
    rendered = render(tokenizer, messages, roles=EVERY_ROLE)
    # Read by the guard; not located verbatim (quotes escaped), so not picked for corruption.
    assert rendered.classified_text.endswith('{"sky": "clear"}')
    assert len(rendered.content_spans) == 1
    # A user message the template rewrites is still refused: its tokens are what is corrupted.
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "{% else %}{{ m['content'] }}", "{% else %}{{ m['content'] | upper }}"
    )
    with pytest.raises(InvalidInputError, match="renders user messages verbatim"):
        render(tokenizer, messages, roles=EVERY_ROLE)


def test_an_unset_policy_saves_and_keys_as_before(backend, toy_guard, tmp_path) -> None:
    import json

    ECOPolicy().save(tmp_path)
    assert "classify_roles" not in json.loads((tmp_path / "policy.json").read_text())
    assert ECOPolicy.load(tmp_path).classify_roles is None
    assert "classify_roles" not in _eco(backend, toy_guard, None).identifying_params()
    assert _eco(backend, toy_guard).identifying_params()["classify_roles"] == list(EVERY_ROLE)
    ECOPolicy(classify_roles=("user", "tool")).save(tmp_path)
    assert ECOPolicy.load(tmp_path).classify_roles == ("user", "tool")


def test_llama_index_predict_reads_the_system_prompt_when_asked(backend, toy_guard) -> None:
    from llama_index.core.prompts import PromptTemplate

    from eco_integrations.llama_index import ECOHuggingFaceLLM

    template = PromptTemplate("Answer: {query_str}")
    for roles, flagged in ((EVERY_ROLE, True), (None, False)):
        llm = ECOHuggingFaceLLM(_eco(backend, toy_guard, roles), max_new_tokens=2)
        llm.system_prompt = FORGET
        seen: list[bool] = []
        original = llm._decide_question

        def spy(question: str, original: Any = original, seen: list[bool] = seen) -> Any:
            decision = original(question)
            seen.append(decision.flagged)
            return decision

        object.__setattr__(llm, "_decide_question", spy)
        llm.predict(template, query_str=BENIGN)
        assert seen == [flagged], roles


def test_llama_index_query_engine_decides_as_its_llm(backend, toy_guard) -> None:
    from llama_index.core import Document, PromptTemplate, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    from eco_integrations.llama_index import ECOHuggingFaceLLM, ECOQueryEngine

    index = VectorStoreIndex.from_documents(
        [Document(text="Bread is baked from flour.")], embed_model=MockEmbedding(embed_dim=8)
    )
    template = PromptTemplate("Context: {context_str}\nQ: {query_str}\nA: ")
    for roles, flagged in ((EVERY_ROLE, True), (None, False)):
        llm = ECOHuggingFaceLLM(
            _eco(backend, toy_guard, roles), max_new_tokens=2, system_prompt=FORGET
        )
        plain = index.as_query_engine(llm=llm, text_qa_template=template)
        wrapped = ECOQueryEngine(plain, llm, attach_decision=True)
        # The wrapper reads the question with the LLM's system prompt, as the LLM itself would.
        assert wrapped.decide(BENIGN).flagged is flagged, roles
        assert wrapped.query(BENIGN).metadata["eco_decision"]["flagged"] is flagged, roles
        assert llm._decide_question(BENIGN).flagged is flagged, roles
