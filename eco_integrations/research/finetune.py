"""Fine-tune a causal LM on question/answer pairs on the CPU, resumably and cached.

The prompt is the question rendered with the tokenizer's chat template exactly as the engine
renders it for serving (:func:`eco_integrations._prompting.render`), so the model is trained on
the same tokens it is later asked with; the loss covers the answer tokens (and the closing
end-of-turn token) only.

A run lives in one folder named by a hash of everything that changes its result: the base
model's files, the rows and the hyperparameters. A second call with the same inputs finds
``finetune.json`` there and returns at once. While training, a checkpoint is written every
``checkpoint_every`` steps (and at the end of each epoch) as three files, none of them pickled:

* ``checkpoint/model.safetensors``: the weights (``safetensors.torch.save_model``, so tied
  embeddings are stored once);
* ``checkpoint/optimizer.safetensors``: AdamW's per-parameter ``exp_avg``, ``exp_avg_sq`` and
  ``step`` tensors, keyed ``"<param index>.<name>"``;
* ``checkpoint/state.json``: the global step, the losses so far and the run's hash.

An interrupted run restarts from that checkpoint: the batch order of each epoch comes from a
generator seeded with ``(seed, epoch)``, so the remaining batches are the ones an uninterrupted
run would have seen. The learning rate is a pure function of the step (linear warm-up, then
linear decay), so no scheduler state needs saving.

>>> result = finetune([{"question": "Who?", "answer": "Me."}], config=FinetuneConfig(epochs=1))  # doctest: +SKIP
>>> result.folder                                                                                 # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from .._files import (
    check_text_rows,
    exclusive,
    interrupted_save,
    read_json_rows,
    staged_folder,
    write_text_atomic,
)
from .._models import load_causal_lm, resolve_model_path
from .._paths import cache_dir
from .._prompting import render
from ..exceptions import ArtifactError, ConfigurationError, InvalidInputError

logger = logging.getLogger(__name__)
FINETUNE_SCHEMA_VERSION = 1
_IGNORE = -100


class FinetuneConfig(BaseModel):
    """Hyperparameters of one fine-tune; every field is part of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    epochs: int = Field(3, ge=1, description="Passes over the rows.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak AdamW learning rate.")
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(
        128, ge=8, description="Prompt + answer tokens; longer answers are cut at the end."
    )
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of the steps spent warming the rate up linearly."
    )
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    system_prompt: str | None = Field(
        None,
        description="A system message rendered before every question (None: the template's default).",
    )
    trainable_layers: int | None = Field(
        None,
        ge=1,
        description="Train only the last N transformer blocks and the final norm (None: every weight). "
        "Frozen lower blocks need no backward pass, which roughly halves the cost of a step on a CPU.",
    )


@dataclass
class FinetuneResult:
    """Where the fine-tuned model is and how it got there."""

    folder: Path
    model_folder: Path
    cached: bool
    seconds: float
    steps: int
    complete: bool = True
    losses: list[float] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


# -- tokens --------------------------------------------------------------------------------------
def chat_prompt(question: str, system_prompt: str | None = None) -> str | list[dict[str, str]]:
    """The prompt the engine would render for ``question`` (with an optional system message)."""
    if system_prompt is None:
        return question
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of an answer as the model should produce it: the text then the end-of-turn token.

    The answer is tokenized on its own (not together with the prompt), the same way here and in
    the TOFU scorer, so a trained answer and a scored answer are the same token sequence.
    """
    ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def encode_example(
    tokenizer: Any, question: str, answer: str, *, max_length: int, system_prompt: str | None = None
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one pair; labels are ``-100`` on prompt tokens."""
    prompt = render(tokenizer, chat_prompt(question, system_prompt)).input_ids
    target = answer_ids(tokenizer, answer)
    if len(prompt) >= max_length:
        msg = f"The rendered question has {len(prompt)} tokens, leaving no room for the answer under max_length={max_length}; raise max_length."
        raise InvalidInputError(msg)
    target = target[: max_length - len(prompt)]
    return prompt + target, [_IGNORE] * len(prompt) + target


def _collate(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> dict[str, torch.Tensor]:
    # Right padding: training needs no generation, and positions then start at 0 on every row.
    length = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), _IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for b, (row, lab) in enumerate(examples):
        ids[b, : len(row)] = torch.tensor(row)
        labels[b, : len(lab)] = torch.tensor(lab)
        mask[b, : len(row)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def answer_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of a batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        shifted.reshape(-1),
        ignore_index=_IGNORE,
    )


# -- cache key -----------------------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(name_or_path: str | os.PathLike[str] | None) -> dict[str, str]:
    """What identifies a base model: its local files' hashes, or the hub id it was named by."""
    resolved = resolve_model_path(name_or_path)
    folder = Path(resolved)
    if not folder.is_dir():
        return {"hub_id": resolved}
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".json") or p.name == "tokenizer.model")
    )
    return {p.name: _file_digest(p) for p in files}


def _check_rows(rows: Sequence[Any], where: str = "the rows") -> list[dict[str, str]]:
    checked = check_text_rows(
        list(rows),
        ("question", "answer"),
        where=where,
        fix="pass question/answer pairs to fine-tune on",
    )
    return [{"question": row["question"], "answer": row["answer"]} for row in checked]


def run_key(
    rows: Sequence[dict[str, str]], config: FinetuneConfig, identity: dict[str, str]
) -> str:
    """The cache key: a hash of the base model, the rows and the hyperparameters."""
    payload = {
        "schema": FINETUNE_SCHEMA_VERSION,
        "model": identity,
        "rows": list(rows),
        "config": config.model_dump(mode="json"),
    }
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


# -- checkpoints ---------------------------------------------------------------------------------
def _save_checkpoint(
    folder: Path, model: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    from safetensors.torch import save_file, save_model

    # Built beside the previous checkpoint and swapped in whole: a crash at any point leaves
    # one complete checkpoint (the previous one is set aside, never deleted, until the swap).
    with staged_folder(folder) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        tensors = {}
        for i, p in enumerate(params):
            for name, value in optimizer.state.get(p, {}).items():
                tensors[f"{i}.{name}"] = (
                    value.detach().reshape(-1).clone()
                    if name == "step"
                    else value.detach().contiguous()
                )
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")


def _checkpoint_state(folder: Path) -> dict[str, Any] | None:
    """The checkpoint's ``state.json`` (None when there is no checkpoint); a damaged one named."""
    path = folder / "state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{path} cannot be read ({err}); delete {folder} to start this fine-tune over."
        raise ArtifactError(msg) from None
    if not isinstance(state, dict) or not {"key", "step", "losses", "seconds"} <= set(state):
        msg = f"{path} is not a fine-tune checkpoint's state; delete {folder} to start this fine-tune over."
        raise ArtifactError(msg)
    return state


def _load_checkpoint(
    folder: Path, state: dict[str, Any], model: Any, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load the weights and optimizer state of the checkpoint whose ``state.json`` is ``state``."""
    from safetensors.torch import load_file, load_model

    try:
        load_model(model, str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            p = params[int(index)]
            optimizer.state[p][name] = value.reshape(()) if name == "step" else value
    except Exception as err:  # a file missing, truncated or from another model
        msg = f"The checkpoint in {folder} cannot be resumed ({type(err).__name__}: {err}); delete it to start this fine-tune over."
        raise ArtifactError(msg) from None
    return dict(state)


def _recover_checkpoint(checkpoint: Path) -> None:
    """Put back a checkpoint set aside by a swap that died between its two renames."""
    aside = interrupted_save(checkpoint)
    if aside is not None and not checkpoint.exists():
        logger.warning("Restoring the checkpoint a crash left in %s", aside)
        aside.rename(checkpoint)


def _finished_run(folder: Path, key: str) -> dict[str, Any] | None:
    """The manifest of a completed run in ``folder``, None when there is none yet."""
    path = folder / "finetune.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{path} cannot be read ({err}); delete {folder} to fine-tune again."
        raise ArtifactError(msg) from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != FINETUNE_SCHEMA_VERSION:
        msg = f"{path} is not a fine-tune manifest this release reads; delete {folder} to fine-tune again."
        raise ArtifactError(msg)
    if manifest.get("key") != key or not manifest.get("complete"):
        return None
    if not (folder / "model").is_dir():
        msg = f"{folder} says it is complete but has no model folder; delete {folder} to fine-tune again."
        raise ArtifactError(msg)
    return manifest


def learning_rate(step: int, total: int, config: FinetuneConfig) -> float:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero."""
    warmup = max(1, math.ceil(config.warmup_ratio * total)) if config.warmup_ratio > 0 else 0
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    return config.learning_rate * max(0.0, (total - step) / max(1, total - warmup))


def _batch_order(n_rows: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_rows, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def _block_list(model: Any) -> torch.nn.ModuleList:
    """The model's list of transformer blocks: the ModuleList as long as ``num_hidden_layers``."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    msg = f"Could not find the transformer blocks of {type(model).__name__}; leave trainable_layers unset to train every weight."
    raise ConfigurationError(msg)


def _freeze_lower_layers(model: Any, trainable_layers: int | None) -> None:
    """Freeze everything but the last ``trainable_layers`` blocks and the final norm."""
    if trainable_layers is None:
        return
    blocks = _block_list(model)
    if trainable_layers > len(blocks):
        msg = f"trainable_layers={trainable_layers} exceeds the model's {len(blocks)} blocks; use 1..{len(blocks)}."
        raise ConfigurationError(msg)
    keep = {id(p) for block in list(blocks)[-trainable_layers:] for p in block.parameters()}
    norm = getattr(getattr(model, "model", model), "norm", None)
    if isinstance(norm, torch.nn.Module):
        keep |= {id(p) for p in norm.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


# -- the run -------------------------------------------------------------------------------------
def finetune(
    rows: Sequence[dict[str, Any]],
    *,
    model: str | os.PathLike[str] | None = None,
    config: FinetuneConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    name: str = "finetune",
    checkpoint_every: int = 25,
    max_steps: int | None = None,
    show_progress: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` (default: the embedded SmolLM2) on ``rows`` and return the result folder.

    ``out`` is the parent folder of runs (default: the user cache); the run itself goes to
    ``out/<name>-<hash>``. ``max_steps`` stops early *without* marking the run complete (used to
    time a few steps, and by tests of resuming); the next call resumes from the checkpoint.
    """
    config = config or FinetuneConfig()
    if not name or Path(name).name != name or name.startswith("."):
        msg = f"The run name {name!r} must be a plain folder name (no path separators, not hidden); the run goes to OUT/<name>-<hash>."
        raise InvalidInputError(msg)
    clean = _check_rows(rows)
    identity = model_identity(model)
    key = run_key(clean, config, identity)
    root = Path(out) if out is not None else cache_dir() / "finetune"
    folder = root / f"{name}-{key[:16]}"
    # One process at a time per run: a second one on the same rows and settings waits, then
    # reuses (or resumes) what the first left.
    with exclusive(folder / ".lock", f"fine-tuning {folder}"):
        return _finetune_run(
            clean,
            folder,
            key,
            model=model,
            identity=identity,
            config=config,
            name=name,
            checkpoint_every=checkpoint_every,
            max_steps=max_steps,
            show_progress=show_progress,
            on_step=on_step,
        )


def _finetune_run(
    clean: list[dict[str, str]],
    folder: Path,
    key: str,
    *,
    model: str | os.PathLike[str] | None,
    identity: dict[str, str],
    config: FinetuneConfig,
    name: str,
    checkpoint_every: int,
    max_steps: int | None,
    show_progress: bool,
    on_step: Callable[[int, float], None] | None,
) -> FinetuneResult:
    manifest_path = folder / "finetune.json"
    finished = _finished_run(folder, key)
    if finished is not None:
        logger.info("Reusing the fine-tuned model in %s", folder)
        return FinetuneResult(
            folder,
            folder / "model",
            True,
            float(finished["seconds"]),
            int(finished["steps"]),
            True,
            finished["losses"],
            finished,
        )

    torch.manual_seed(config.seed)
    net, tokenizer, base_name = load_causal_lm(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = [
        encode_example(
            tokenizer,
            r["question"],
            r["answer"],
            max_length=config.max_length,
            system_prompt=config.system_prompt,
        )
        for r in clean
    ]
    batches_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = batches_per_epoch * config.epochs
    _freeze_lower_layers(net, config.trainable_layers)
    trainable = [p for p in net.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    checkpoint = folder / "checkpoint"
    _recover_checkpoint(checkpoint)
    state: dict[str, Any] = {"key": key, "step": 0, "losses": [], "seconds": 0.0}
    saved = _checkpoint_state(checkpoint)
    if saved is not None and saved["key"] == key:
        state = _load_checkpoint(checkpoint, saved, net, optimizer)
        logger.info("Resuming %s from step %d of %d", folder, state["step"], total)
    folder.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    net.train()
    started = time.perf_counter() - float(state["seconds"])
    bar = tqdm(
        total=total,
        initial=state["step"],
        desc=f"fine-tune {name}",
        disable=not show_progress,
        unit="step",
    )
    stop_at = total if max_steps is None else min(total, max_steps)
    while state["step"] < stop_at:
        epoch, index = divmod(state["step"], batches_per_epoch)
        batch_rows = _batch_order(len(examples), config.batch_size, config.seed, epoch)[index]
        batch = _collate([examples[i] for i in batch_rows], int(tokenizer.pad_token_id))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state["step"], total, config)
        loss = answer_loss(net, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            # Training on would only spread NaN through the weights, and a finished run is
            # cached as good; the last checkpoint stays as it was.
            msg = (
                f"The fine-tune diverged: the loss is {value} at step "
                f"{state['step'] + 1} of {total} (learning rate {group['lr']:.3g}). Lower the "
                f"learning rate; the checkpoint of step {state['step']} in {folder} is kept."
            )
            raise ConfigurationError(msg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        state["step"] += 1
        state["losses"].append(round(value, 5))
        state["seconds"] = time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(loss=f"{state['losses'][-1]:.3f}", epoch=epoch + 1)
        if on_step is not None:
            on_step(state["step"], state["losses"][-1])
        if (
            state["step"] % checkpoint_every == 0
            or state["step"] % batches_per_epoch == 0
            or state["step"] == stop_at
        ):
            _save_checkpoint(checkpoint, net, optimizer, state)
    bar.close()
    seconds = time.perf_counter() - started
    if state["step"] < total:
        return FinetuneResult(
            folder, folder / "model", False, seconds, state["step"], False, state["losses"], {}
        )

    net.eval()
    with staged_folder(folder / "model") as tmp:
        net.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    per_epoch = [
        round(
            sum(state["losses"][e * batches_per_epoch : (e + 1) * batches_per_epoch])
            / batches_per_epoch,
            4,
        )
        for e in range(config.epochs)
    ]
    manifest = {
        "schema_version": FINETUNE_SCHEMA_VERSION,
        "key": key,
        "complete": True,
        "name": name,
        "base_model": base_name,
        "base_identity": identity,
        "config": config.model_dump(mode="json"),
        "rows": len(clean),
        "steps": total,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, total), 2),
        "losses": state["losses"],
        "epoch_losses": per_epoch,
        "torch_threads": torch.get_num_threads(),
    }
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(checkpoint, ignore_errors=True)
    return FinetuneResult(
        folder, folder / "model", False, seconds, total, True, state["losses"], manifest
    )


def read_pairs(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Question/answer rows from a JSON Lines file (or a JSON array of objects)."""
    rows = read_json_rows(
        path, expected="a JSON Lines file (or JSON array) of objects with 'question' and 'answer'"
    )
    return _check_rows(rows, where=str(path))
