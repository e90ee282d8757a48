"""``ECOForgetClassifier``: the ECO guard as a ``langchain_core.decisions.BaseDecisionModel``.

So the guard plugs into ``ModelRouterMiddleware`` (and anything else that consumes decision
models). It answers one question, whatever the wording: is the latest user turn about a forget
target? ``Noul`` questions get the guard's score; ``Choice`` questions get ``flagged_label`` or
``benign_label``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.decisions import (
    BaseDecisionModel,
    Choice,
    ChoiceAnswer,
    ClassifierResponse,
    Noul,
    NoulAnswer,
    Question,
    State,
)
from langchain_core.messages import BaseMessage
from pydantic import ConfigDict, Field, model_validator

from eco_integrations.config import Decision, Mode, Threshold
from eco_integrations.engine import ECO
from eco_integrations.exceptions import InvalidInputError
from eco_integrations.langchain._decision import (
    ChatModelField,
    EngineField,
    chat_model_engine,
    deciding_engine,
)
from eco_integrations.langchain._messages import decide_conversation


class ECOForgetClassifier(BaseDecisionModel):
    """Decision model over an ECO guard.

    Example:
        .. code-block:: python

            from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware

            router = ModelRouterMiddleware(
                choices={"forget": ModelChoice(eco_chat, "About a forgotten topic."),
                         "default": ModelChoice(plain_chat, "Anything else.")},
                instructions="Is the request about a forgotten topic?",
                classifier=ECOForgetClassifier(engine=eco),
            )

    The ``Noul`` probability is the guard's raw score; the ``Choice`` label follows the guard's
    calibrated threshold (or ``threshold``), so the two may disagree around 0.5 by design.
    """

    # validate_assignment: a bad value is refused where it is set, not at the next call.
    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", validate_assignment=True
    )

    engine: EngineField = Field(exclude=True)
    """The engine whose guard answers."""

    chat_model: ChatModelField | None = Field(default=None, exclude=True)
    """Set by ``from_chat_model``: decisions follow this chat model's engine, threshold, mode and
    window as they are at each call (``chat.mode = "shadow"`` reaches this too)."""

    model: str = ""
    """Reported as ``ls_model_name``; defaults to the guard's ``policy_id``."""

    flagged_label: str = "forget"
    """Choice label picked when the turn is flagged."""

    benign_label: str = "default"
    """Choice label picked otherwise."""

    threshold: Threshold | None = None
    """Override the guard's threshold (flagged means score > threshold)."""

    mode: Mode | None = None
    """Engine mode for the decision; ``off`` answers 0 / ``benign_label`` without classifying."""

    @classmethod
    def from_chat_model(cls, chat: Any, **kwargs: Any) -> ECOForgetClassifier:
        """A classifier deciding as ``chat`` (a ChatECOHuggingFace) does: its engine, threshold,
        mode and window, now and after a change to them."""
        return cls(engine=chat_model_engine(chat, cls), chat_model=chat, **kwargs)

    @property
    def deciding_engine(self) -> ECO:
        """The engine decisions are made with now: the chat model's, if built from one."""
        return deciding_engine(self.engine, self.chat_model)

    @model_validator(mode="after")
    def _name(self) -> ECOForgetClassifier:
        if not self.model:
            self.model = (
                self.engine.guard.policy_id if self.engine.guard is not None else "eco-no-guard"
            )
        return self

    @property
    def _provider(self) -> str:
        return "eco"

    def _decide(self, state: State) -> Decision:
        """The engine's decision on the state's latest user turn(s), with this model's overrides."""
        if isinstance(state, str):
            return self.deciding_engine.decide_texts(
                [state], mode=self.mode, threshold=self.threshold
            )[0]
        if isinstance(state, Mapping) and "messages" in state:
            state = state["messages"]  # type: ignore[assignment]
        messages = [state] if isinstance(state, BaseMessage) else state
        if isinstance(messages, Sequence) and messages:
            conversation = [m for m in messages if isinstance(m, BaseMessage)]
            if len(conversation) == len(messages):
                return decide_conversation(
                    self.deciding_engine, conversation, mode=self.mode, threshold=self.threshold
                )
        msg = (
            "ECOForgetClassifier classifies a string, a message, a list of messages or a dict "
            f"with 'messages'; got {type(state).__name__}."
        )
        raise InvalidInputError(msg)

    def _classify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        decision = self._decide(state)
        p = float(decision.score) if decision.score is not None else 0.0
        answers: dict[str, Any] = {}
        for key, question in questions.items():
            if isinstance(question, Noul):
                answers[key] = NoulAnswer(type="noul", noul=p)
            elif isinstance(question, Choice):
                labels = set(question.criteria)
                if labels != {self.flagged_label, self.benign_label}:
                    msg = (
                        f"Choice {key!r} has labels {sorted(labels)}; ECOForgetClassifier "
                        f"picks between {self.flagged_label!r} and {self.benign_label!r}. "
                        "Name the choices so, or set flagged_label/benign_label."
                    )
                    raise InvalidInputError(msg)
                label = self.flagged_label if decision.flagged else self.benign_label
                answers[key] = ChoiceAnswer(
                    type="choice",
                    choice=label,
                    probabilities={self.flagged_label: p, self.benign_label: 1.0 - p},
                    confidence=p if decision.flagged else 1.0 - p,
                )
            else:
                msg = (
                    f"Question {key!r} is a {type(question).__name__}; "
                    "ECOForgetClassifier answers Noul and Choice questions."
                )
                raise InvalidInputError(msg)
        return ClassifierResponse(
            model=self.model, answers=answers, request_id=decision.text_sha256[:16]
        )
