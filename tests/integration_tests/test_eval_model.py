"""The evaluation model (Qwen2.5-Coder-1.5B-Instruct from 22 part wheels), when installed.

Not part of `make demo`'s or CI's install: without the parts these tests skip with the install
line (CI included). Installed, they load it by name through the engine and check it can answer.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from eco_integrations import ECO
from eco_integrations._models import (
    EVAL_MODEL_NAME,
    SPLIT_GGUF_MODELS,
    available_models,
    split_gguf_model_folder,
)
from eco_integrations.research.eval.mcq import letter_token_ids, mcq_prompt

SPEC = SPLIT_GGUF_MODELS[EVAL_MODEL_NAME]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) is not None for m in SPEC.modules()),
        reason=f"the evaluation model is not installed; install it with: {SPEC.install_line()}",
    ),
]

EASY = [
    {"question": q, "choices": c, "answer": a, "subject": s}
    for q, c, a, s in [
        ("What is the capital of France?", ["Berlin", "Madrid", "Paris", "Rome"], 2, "geography"),
        ("What is 7 multiplied by 8?", ["56", "54", "64", "48"], 0, "elementary_mathematics"),
        (
            "Which planet is known as the Red Planet?",
            ["Venus", "Mars", "Jupiter", "Saturn"],
            1,
            "astronomy",
        ),
        (
            "Which keyword defines a function in Python?",
            ["func", "function", "lambda_def", "def"],
            3,
            "computer_science",
        ),
    ]
]


@pytest.fixture(scope="module")
def eval_eco() -> ECO:
    torch.set_num_threads(1)
    return ECO.from_pretrained(EVAL_MODEL_NAME, mode="off")


def test_converted_folder_is_reused() -> None:
    folder = split_gguf_model_folder(EVAL_MODEL_NAME)
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert (
        split_gguf_model_folder(EVAL_MODEL_NAME) == folder and weights.stat().st_mtime_ns == stamp
    )
    row = next(r for r in available_models() if r["name"] == EVAL_MODEL_NAME)
    assert row["installed"] and row["converted"]


def test_loads_in_bf16_and_answers_easy_questions(eval_eco: ECO) -> None:
    backend = eval_eco.backend
    assert backend.model_name == EVAL_MODEL_NAME and backend.model.dtype == torch.bfloat16
    ids = letter_token_ids(backend.tokenizer, "space")
    logits, _ = eval_eco.next_token_logits([mcq_prompt(q) for q in EASY], raw=True, mode="off")
    preds = logits[:, ids].argmax(-1).numpy()
    # Unlike the embedded SmolLM2 (" A" to ~98.5% of questions), it answers with different letters.
    assert (preds == np.array([q["answer"] for q in EASY])).all()
