"""Helpers shared by several test files (not fixtures)."""

from __future__ import annotations

from typing import Any


def plain_answer(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int
) -> str:
    """What the unmodified model says: chat template, greedy generate, cut at EOS."""
    import torch

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True)


def decision_events() -> Any:
    """A LangChain callback handler that keeps the payload of every ``eco_decision`` event."""
    from langchain_core.callbacks import BaseCallbackHandler

    class Events(BaseCallbackHandler):
        def __init__(self) -> None:
            self.events: list[dict[str, Any]] = []

        def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
            if name == "eco_decision":
                self.events.append(data)

    return Events()


def count_renders(monkeypatch: Any) -> list[int]:
    """Count the engine's renders (chat template + offset tokenization): one entry per render."""
    import eco_integrations.engine as engine_module

    calls: list[int] = []
    original = engine_module.render

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "render", counting)
    return calls


def tiny_llama(tokenizer: Any, *, max_positions: int = 256) -> Any:
    """A random 2-layer Llama over the tiny tokenizer, the same weights for any ``max_positions``
    (seeded; the context length only sizes the rotary cache)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def run_notebook(name: str, monkeypatch: Any) -> str:
    """Execute ``cookbook/<name>`` top to bottom as a reader would (from the cookbook folder) and
    return everything its code cells printed; a failing cell raises CellExecutionError.

    The kernel imports this checkout's eco_integrations (put first on its PYTHONPATH), not
    whichever copy the environment has installed.
    """
    import os
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    )
    notebook_path = repo / "cookbook" / name
    notebook = nbformat.read(notebook_path, as_version=4)
    NotebookClient(
        notebook,
        timeout=1200,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook_path.parent)}},
    ).execute()
    return "".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


async def assert_cancelling_stops_generation(model: Any, call: Any) -> None:
    """Cancel ``call()`` (an awaitable that asks for 200 tokens) after 0.3 s and check that the
    model's forward steps stop soon after, far short of the 200 (each step is slowed to 10 ms)."""
    import asyncio
    import time

    import pytest

    steps: list[int] = []

    def slow_step(*args: Any) -> None:
        steps.append(1)
        time.sleep(0.01)

    hook = model.register_forward_hook(slow_step)
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call(), 0.3)
        await asyncio.sleep(0.5)  # the worker thread stops at its next token
        stopped_at = len(steps)
        await asyncio.sleep(0.5)
        assert len(steps) == stopped_at < 150
    finally:
        hook.remove()


def neutral_report(*, leak: float, fluency: float = 1.0) -> Any:
    """A :class:`NeverLearnedReport` with the given leak and fluency and neutral other figures."""
    from eco_integrations.research.never_learned import NeverLearnedReport

    return NeverLearnedReport(
        leak=leak,
        fluency=fluency,
        on_topic=1.0,
        distinguishable=0.5,
        eco_nll=1.0,
        reference_nll=1.0,
        eco_similarity=0.5,
        reference_similarity=0.5,
        answers=2,
        leaks=[],
    )
