"""The in-process transport: ``vllm.LLM(enable_prompt_embeds=True)`` on the default SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from eco_integrations import ECO, GenerationConfig
from eco_integrations._prompting import render
from eco_integrations.backends import PreparedRow
from eco_integrations.backends.transformers import TransformersBackend
from eco_integrations.backends.vllm import EmbeddingTable, VLLMBackend
from eco_integrations.demo import read_lines

GREEDY = GenerationConfig(max_new_tokens=24, temperature=0.0)
BENIGN = [
    "What is the capital of France?",
    "Who wrote The Lord of the Rings?",
    "What is a boarding school?",
]


# Below SmolLM2's 8192: the window must be the engine's, not the model config's.
IN_PROCESS_MAX_MODEL_LEN = 4096


@pytest.fixture(scope="module")
def backend(model_folder: Path, llm_kwargs: dict[str, object]) -> Iterator[VLLMBackend]:
    built = VLLMBackend.from_model_folder(
        model_folder, max_logprobs=-1, max_model_len=IN_PROCESS_MAX_MODEL_LEN, **llm_kwargs
    )
    yield built
    built.close()


def test_embedding_table_is_the_models_input_embedding(
    model_folder: Path, backend: VLLMBackend
) -> None:
    reference = TransformersBackend.from_pretrained(model_folder)
    ids = render(reference.tokenizer, "Who is Harry Potter?").input_ids
    assert torch.equal(backend.embed(ids), reference.embed(ids))
    table = EmbeddingTable.from_folder(model_folder)
    assert table.name == "model.embed_tokens.weight" and table.weight.shape == (49152, 576)


def test_the_window_is_the_engines_max_model_len(backend: VLLMBackend) -> None:
    assert backend.context_window == IN_PROCESS_MAX_MODEL_LEN


def test_text_path_and_uncorrupted_embeds_path_agree(backend: VLLMBackend) -> None:
    ids = [render(backend.tokenizer, p).input_ids for p in BENIGN]
    as_text = backend.generate([PreparedRow(i) for i in ids], GREEDY)
    as_embeds = backend.generate([PreparedRow(i, backend.embed(i)) for i in ids], GREEDY)
    assert [g.text for g in as_text] == [g.text for g in as_embeds]
    assert all(g.text.strip() for g in as_text)
    assert "Paris" in as_text[0].text
    assert [g.completion_tokens for g in as_text] == [g.completion_tokens for g in as_embeds]


def test_same_decisions_as_the_transformers_path(
    model_folder: Path, backend: VLLMBackend, hp_guard
) -> None:
    demo = read_lines("demo_prompts.txt")
    prompts = [demo[0], demo[2], demo[7], demo[9]]  # two forget prompts, two benign ones
    short = GenerationConfig(max_new_tokens=8, temperature=0.0)
    on_vllm = ECO(backend, hp_guard).generate(prompts, config=short, seeds=[7] * len(prompts))
    on_hf = ECO(TransformersBackend.from_pretrained(model_folder), hp_guard).generate(
        prompts, config=short, seeds=[7] * len(prompts)
    )
    assert [r.decision for r in on_vllm] == [
        r.decision.model_copy(update={"latency_ms": v.decision.latency_ms})
        for r, v in zip(on_hf, on_vllm, strict=True)
    ]
    assert [r.decision.corrupted for r in on_vllm] == [True, True, False, False]
    assert [r.corrupted_tokens for r in on_vllm] == [r.corrupted_tokens for r in on_hf]
    assert on_vllm[0].corrupted_tokens > 0 and on_vllm[2].corrupted_tokens == 0


def test_flagged_prompts_are_answered_from_corrupted_embeddings(
    backend: VLLMBackend, hp_guard
) -> None:
    prompt = "Who is Harry Potter?"
    plain = backend.generate([PreparedRow(render(backend.tokenizer, prompt).input_ids)], GREEDY)[
        0
    ].text
    eco = ECO(backend, hp_guard).generate([prompt], config=GREEDY, seeds=[7])[0]
    assert eco.decision.corrupted and eco.text != plain
    assert "wizard" in plain.lower() or "potter" in plain.lower()


def test_seeded_sampling_is_reproducible_per_request(backend: VLLMBackend) -> None:
    ids = render(backend.tokenizer, "Tell me a short poem about the sea.").input_ids
    config = GenerationConfig(max_new_tokens=16, temperature=1.0)
    first = backend.generate([PreparedRow(ids, seed=11), PreparedRow(ids, seed=12)], config)
    again = backend.generate([PreparedRow(ids, seed=11)], config)
    assert first[0].text == again[0].text
    assert first[0].text != first[1].text


def test_next_token_logits_rank_like_the_transformers_model(
    model_folder: Path, backend: VLLMBackend
) -> None:
    ids = render(backend.tokenizer, "The capital of France is", raw=True).input_ids
    logprobs = backend.next_token_logits([PreparedRow(ids)])
    reference = TransformersBackend.from_pretrained(model_folder).next_token_logits(
        [PreparedRow(ids)]
    )
    assert logprobs.shape == reference.shape == (1, 49152)
    assert torch.equal(logprobs.topk(5).indices, reference.topk(5).indices)
