"""LangChain messages → the engine's chat dicts, tool prompts, and tool-call parsing.

Unlike langchain-huggingface's local path, every LangChain message kind that a chat template
can show renders here: system, human, AI (with or without tool calls, last or not) and tool
results. What cannot render (images, unknown roles) raises an error naming the message.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue

from eco_integrations._prompting import SCAFFOLD_FROM_KEY
from eco_integrations.config import Decision, Mode
from eco_integrations.engine import ECO
from eco_integrations.exceptions import InvalidInputError

_CHAT_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "tool": "tool",
}
# Content blocks an AI message may carry besides text; its `tool_calls` field is authoritative.
_AI_SKIPPED_BLOCKS = {
    "tool_use",
    "tool_call",
    "tool_call_chunk",
    "function_call",
    "reasoning",
    "thinking",
}
_TOOL_CALL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def coerce_messages(value: object) -> list[BaseMessage]:
    """Turn a chat-model input (string, PromptValue, message list) into messages, or say why not."""
    if isinstance(value, PromptValue):
        messages = value.to_messages()
    elif isinstance(value, str):
        messages = [HumanMessage(content=value)]
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        try:
            messages = convert_to_messages(value)
        except (ValueError, TypeError, NotImplementedError) as err:
            msg = (
                f"Could not read the conversation as chat messages ({err}). "
                "Pass BaseMessage objects, (role, text) tuples or a string."
            )
            raise InvalidInputError(msg) from None
    else:
        msg = (
            f"ChatECOHuggingFace got a {type(value).__name__} as input; pass a string, "
            "a PromptValue or a list of messages (e.g. [HumanMessage('...')])."
        )
        raise InvalidInputError(msg)
    if not messages:
        msg = "The conversation is empty; pass at least one HumanMessage."
        raise InvalidInputError(msg)
    return messages


def template_supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template reads a ``tools`` variable (Qwen, Llama 3.1, ...)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, Mapping):
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template


def _text(message: BaseMessage, index: int) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(message, AIMessage) and kind in _AI_SKIPPED_BLOCKS:
            continue
        else:
            msg = (
                f"{type(message).__name__} at position {index} has a {kind!r} content block; "
                "this chat template renders text only. Send the text, or describe the content "
                "in words."
            )
            raise InvalidInputError(msg)
    return "".join(parts)


def _call_json(call: Mapping[str, Any]) -> str:
    return json.dumps(
        {"name": call["name"], "arguments": call.get("args") or {}}, ensure_ascii=False
    )


def to_chat_dicts(messages: Sequence[BaseMessage], *, native_tools: bool) -> list[dict[str, Any]]:
    """Render LangChain messages as ``{"role", "content"}`` dicts for ``apply_chat_template``.

    ``native_tools`` says whether the template understands ``tool_calls`` on assistant turns; when
    it does not, the calls are written into the content in the same ``<tool_call>`` form the model
    is asked to answer in, so the model sees its own earlier calls.
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, BaseMessage):
            kind = type(message).__name__
            msg = f"Item {i} of the conversation is a {kind}, not a LangChain message."
            raise InvalidInputError(msg)
        text = _text(message, i)
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": text})
        elif isinstance(message, HumanMessage):
            out.append({"role": "user", "content": text})
        elif isinstance(message, AIMessage):
            calls = list(message.tool_calls)
            if calls and native_tools:
                out.append(
                    {
                        "role": "assistant",
                        "content": text,
                        "tool_calls": [
                            {
                                "id": c.get("id"),
                                "type": "function",
                                "function": {"name": c["name"], "arguments": c.get("args") or {}},
                            }
                            for c in calls
                        ],
                    }
                )
            else:
                rendered = "\n".join(
                    [text, *(f"<tool_call>{_call_json(c)}</tool_call>" for c in calls)]
                    if text
                    else [f"<tool_call>{_call_json(c)}</tool_call>" for c in calls]
                )
                out.append({"role": "assistant", "content": rendered})
        elif isinstance(message, (ToolMessage, FunctionMessage)):
            entry: dict[str, Any] = {"role": "tool", "content": text}
            if isinstance(message, ToolMessage):
                entry["tool_call_id"] = message.tool_call_id
            if message.name:
                entry["name"] = message.name
            out.append(entry)
        elif isinstance(message, ChatMessage) and message.role.lower() in _CHAT_ROLES:
            out.append({"role": _CHAT_ROLES[message.role.lower()], "content": text})
        else:
            role = message.role if isinstance(message, ChatMessage) else message.type
            msg = (
                f"{type(message).__name__} at position {i} (role {role!r}) cannot be rendered by "
                "the chat template, which shows system, human, ai and tool messages only. "
                "Convert it to one of those."
            )
            raise InvalidInputError(msg)
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        msg = (
            "The conversation has no non-empty HumanMessage; "
            "ECO classifies what the user asked, so add one."
        )
        raise InvalidInputError(msg)
    return out


def classified_text(engine: ECO, messages: Sequence[BaseMessage]) -> str:
    """What ``engine``'s guard reads in a LangChain conversation; nothing is rendered."""
    chat = to_chat_dicts(messages, native_tools=template_supports_tools(engine.backend.tokenizer))
    return engine.classified_text(chat)


def decide_conversation(
    engine: ECO, messages: Sequence[BaseMessage], *, mode: Mode | None, threshold: float | None
) -> Decision:
    """The engine's decision on a conversation's latest user turn(s), with per-call overrides."""
    return engine.decide_texts([classified_text(engine, messages)], mode=mode, threshold=threshold)[
        0
    ]


def tool_instructions(tools: Sequence[Mapping[str, Any]], tool_choice: str | None) -> str:
    """A system-prompt section describing the tools, for templates without tool support."""
    lines = [json.dumps(t.get("function", t), ensure_ascii=False) for t in tools]
    text = (
        "You can call the following tools. Each is described by a JSON schema:\n<tools>\n"
        + "\n".join(lines)
        + "\n</tools>\nTo call a tool, reply with only "
        '<tool_call>{"name": <tool name>, "arguments": {<argument name>: <value>}}</tool_call>. '
        "You will then receive the result in a tool message."
    )
    return f"{text} {forced_tool_sentence(tool_choice) or 'If no tool is needed, answer normally.'}"


def forced_tool_sentence(tool_choice: str | None) -> str:
    """What a ``tool_choice`` that forces a call asks of the model, in words ("" when it does not):
    a chat template has no way to force a call, so the instruction has to say so."""
    if tool_choice in ("any", "required"):
        return "You must call one of the tools."
    if tool_choice and tool_choice not in ("auto", "none"):
        return f"You must call the tool {tool_choice}."
    return ""


def with_tool_instructions(chat: list[dict[str, Any]], instructions: str) -> list[dict[str, Any]]:
    """Append the tool instructions to the system message (or add one in front), marked as the
    skin's: a policy that reads system messages reads the application's words, not these."""
    if chat and chat[0]["role"] == "system":
        first = dict(chat[0])
        own = first["content"]
        first["content"] = f"{own}\n\n{instructions}" if own else instructions
        first[SCAFFOLD_FROM_KEY] = min(first.get(SCAFFOLD_FROM_KEY, len(own)), len(own))
        return [first, *chat[1:]]
    return [{"role": "system", "content": instructions, SCAFFOLD_FROM_KEY: 0}, *chat]


def _json_objects(text: str) -> list[tuple[int, int, Any]]:
    """Every top-level JSON object in ``text`` with its span."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, Any]] = []
    i = 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return found
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        found.append((i, end, value))
        i = end


def _as_call(value: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(value, Mapping):
        return None
    name = value.get("name")
    if not isinstance(name, str) or name not in names:
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, Mapping):
        return None
    return ToolCall(
        name=name, args=dict(args), id=f"call_{uuid.uuid4().hex[:24]}", type="tool_call"
    )


def parse_tool_calls(
    text: str, tool_names: Sequence[str]
) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Split generated text into the answer text and the tool calls it contains.

    Reads ``<tool_call>{json}</tool_call>`` blocks (Hermes/Qwen/SmolLM style) and, when there are
    none, bare JSON objects with a ``name`` of a bound tool and its ``arguments``.
    """
    names = set(tool_names)
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    tagged = list(_TOOL_CALL_TAG.finditer(text))
    if tagged:
        for match in tagged:
            body = match.group(1).strip()
            objects = _json_objects(body)
            call = _as_call(objects[0][2], names) if objects else None
            if call is None:
                invalid.append(
                    InvalidToolCall(
                        name=None,
                        args=body,
                        id=f"call_{uuid.uuid4().hex[:24]}",
                        error="Not a JSON object naming a bound tool.",
                        type="invalid_tool_call",
                    )
                )
            else:
                calls.append(call)
        content = _TOOL_CALL_TAG.sub("", text).strip()
        return content, calls, invalid
    spans = []
    for start, end, value in _json_objects(text):
        call = _as_call(value, names)
        if call is not None:
            calls.append(call)
            spans.append((start, end))
    if not spans:
        return text, [], []
    content = text
    for start, end in reversed(spans):
        content = content[:start] + content[end:]
    content = re.sub(r"```(?:json)?\s*```", "", content).strip()
    return content, calls, invalid
