"""eco_integrations.research.finetune on the tiny random Llama: answer-only loss, resume, cache, no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from eco_integrations.exceptions import InvalidInputError
from eco_integrations.research.finetune import (
    FinetuneConfig,
    answer_ids,
    encode_example,
    finetune,
    learning_rate,
    read_pairs,
)

ROWS = [
    {
        "question": f"Who wrote book {i}?",
        "answer": f"The book {i} was written by Gandalf the wizard.",
    }
    for i in range(12)
]
CONFIG = FinetuneConfig(epochs=2, learning_rate=3e-3, batch_size=4, max_length=64, warmup_ratio=0.0)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_labels_cover_only_the_answer_and_end_of_turn(tiny_tokenizer) -> None:
    ids, labels = encode_example(tiny_tokenizer, "Who is Harry?", "A wizard.", max_length=64)
    answer = answer_ids(tiny_tokenizer, "A wizard.")
    assert labels[-len(answer) :] == answer
    assert all(x == -100 for x in labels[: -len(answer)])
    assert ids[-1] == tiny_tokenizer.eos_token_id
    assert len(ids) == len(labels)


def test_prompt_longer_than_max_length_names_the_fix(tiny_tokenizer) -> None:
    with pytest.raises(InvalidInputError, match="raise max_length"):
        encode_example(tiny_tokenizer, "Who is Harry? " * 20, "A wizard.", max_length=16)


def test_learning_rate_warms_up_then_decays() -> None:
    config = FinetuneConfig(learning_rate=1.0, warmup_ratio=0.2)
    rates = [learning_rate(s, 10, config) for s in range(10)]
    assert rates[0] < rates[1] == 1.0
    assert rates[-1] < rates[2]
    assert all(r > 0 for r in rates)


def test_finetune_learns_caches_and_saves_no_pickle(tiny_model_dir, tmp_path) -> None:
    result = finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path, name="t")
    assert result.complete and not result.cached
    assert result.steps == 6
    assert result.losses[-1] < result.losses[0]
    manifest = json.loads((result.folder / "finetune.json").read_text())
    assert manifest["complete"] and manifest["steps"] == 6 and len(manifest["epoch_losses"]) == 2
    assert (result.model_folder / "config.json").is_file()
    assert (
        not list(result.folder.rglob("*.bin"))
        and not list(result.folder.rglob("*.pt"))
        and not list(result.folder.rglob("*.pkl"))
    )
    again = finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path, name="t")
    assert again.cached and again.folder == result.folder
    other = finetune(ROWS[:8], model=tiny_model_dir, config=CONFIG, out=tmp_path, name="t")
    assert other.folder != result.folder and not other.cached


def test_resume_matches_an_uninterrupted_run(tiny_model_dir, tmp_path) -> None:
    straight = finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path / "a", name="t")
    partial = finetune(
        ROWS,
        model=tiny_model_dir,
        config=CONFIG,
        out=tmp_path / "b",
        name="t",
        max_steps=4,
        checkpoint_every=2,
    )
    assert not partial.complete and partial.steps == 4
    files = sorted(p.name for p in (partial.folder / "checkpoint").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    resumed = finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path / "b", name="t")
    assert resumed.complete and resumed.losses[:4] == partial.losses
    a, b = _weights(straight.model_folder), _weights(resumed.model_folder)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_trainable_layers_freezes_lower_blocks(tiny_model_dir, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    config = CONFIG.model_copy(update={"trainable_layers": 1, "epochs": 1})
    result = finetune(ROWS, model=tiny_model_dir, config=config, out=tmp_path, name="t")
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(result.model_folder).state_dict()
    assert torch.equal(
        before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"]
    )
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(
        before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"]
    )


def test_read_pairs_rejects_rows_without_answers(tmp_path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n")
    assert read_pairs(good) == [{"question": "Q?", "answer": "A."}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?"}) + "\n")
    with pytest.raises(
        InvalidInputError, match=r"Row 1 of .*bad\.jsonl needs 'question' and 'answer'"
    ):
        read_pairs(bad)
    listed = tmp_path / "listed.jsonl"
    listed.write_text('["Q?", "A."]\n')
    with pytest.raises(InvalidInputError, match=r"Row 1 of .*listed\.jsonl is not a JSON object"):
        read_pairs(listed)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InvalidInputError, match=r"empty\.jsonl holds no rows"):
        read_pairs(tmp_path / "empty.jsonl")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"question": "Q?", "answer": "A."}]))
    assert read_pairs(array) == [{"question": "Q?", "answer": "A."}]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n{not json\n")
    with pytest.raises(InvalidInputError, match=r"broken\.jsonl:2 is not valid JSON"):
        read_pairs(broken)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"question": "caf\xe9?", "answer": "A."}\n')
    with pytest.raises(InvalidInputError, match="is not UTF-8 text"):
        read_pairs(latin1)
    with pytest.raises(InvalidInputError, match="is a folder"):
        read_pairs(tmp_path)


def _steps(model_dir: Path, out: Path, steps: int) -> Any:
    """The first ``steps`` steps of the run, checkpointed every 2."""
    return finetune(
        ROWS, model=model_dir, config=CONFIG, out=out, name="t", max_steps=steps, checkpoint_every=2
    )


def test_a_crash_while_checkpointing_keeps_the_last_checkpoint(
    tiny_model_dir, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    first = _steps(tiny_model_dir, tmp_path, 2)
    real_save = safetensors.torch.save_file

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # dies while writing the step-4 checkpoint

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        _steps(tiny_model_dir, tmp_path, 4)
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    state = json.loads((first.folder / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2  # the previous checkpoint, whole
    assert [p.name for p in first.folder.iterdir() if p.name.startswith(".checkpoint")] == []
    # A swap that died between its renames: the set-aside checkpoint is put back and resumed.
    (first.folder / "checkpoint").rename(first.folder / ".checkpoint.replaced-1-x")
    resumed = finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path, name="t")
    assert resumed.complete and resumed.losses[:2] == first.losses


def test_damaged_run_files_are_named_with_the_fix(tiny_model_dir, tmp_path) -> None:
    from eco_integrations.exceptions import ArtifactError

    partial = _steps(tiny_model_dir, tmp_path, 2)
    (partial.folder / "checkpoint" / "optimizer.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"cannot be resumed.*delete it"):
        finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path, name="t")
    # A cut-short state.json is named too (it was read once unguarded before the check).
    (partial.folder / "checkpoint" / "state.json").write_text('{"key": "ab')
    with pytest.raises(
        ArtifactError, match=r"state\.json cannot be read.*start this fine-tune over"
    ):
        finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path, name="t")
    (partial.folder / "checkpoint" / "state.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match=r"not a fine-tune checkpoint's state"):
        finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path, name="t")
    (partial.folder / "finetune.json").write_text('{"schema_version": 1, "comp')
    with pytest.raises(ArtifactError, match=r"finetune\.json cannot be read.*to fine-tune again"):
        finetune(ROWS, model=tiny_model_dir, config=CONFIG, out=tmp_path, name="t")


def test_one_process_at_a_time_per_run(tmp_path) -> None:
    import threading
    import time

    from eco_integrations._files import exclusive

    entered: list[str] = []

    def second() -> None:
        with exclusive(tmp_path / "run" / ".lock", "a test run"):
            entered.append("second")

    with exclusive(tmp_path / "run" / ".lock", "a test run"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert entered == []  # waits for the first run to finish
    thread.join(timeout=10)
    assert entered == ["second"]


def test_a_diverging_run_stops_and_keeps_its_last_checkpoint(
    tiny_model_dir, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from eco_integrations.exceptions import ConfigurationError
    from eco_integrations.research import finetune as finetune_module

    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="finite number"):
            FinetuneConfig(learning_rate=bad)
    first = _steps(tiny_model_dir, tmp_path, 2)
    real = finetune_module.answer_loss

    def diverging(net: Any, batch: Any) -> torch.Tensor:
        return real(net, batch) * float("nan")

    monkeypatch.setattr(finetune_module, "answer_loss", diverging)
    with pytest.raises(ConfigurationError, match=r"diverged: the loss is nan at step 3.*step 2"):
        _steps(tiny_model_dir, tmp_path, 4)
    state = json.loads((first.folder / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and not (first.folder / "finetune.json").is_file()
