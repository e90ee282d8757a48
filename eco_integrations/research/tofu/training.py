"""Fine-tuning the *original* and *retained* TOFU models with one recipe."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..finetune import FinetuneConfig, FinetuneResult, finetune
from .data import TofuSetting

# Chosen by timing steps on this machine (2 shared CPU cores, see docs/tofu/README_tofu.md):
# the last 8 of SmolLM2-135M's 30 blocks train (frozen lower blocks skip the backward pass), an
# empty system message keeps the prompt short, and a higher rate than full fine-tuning would use
# lets the few steps memorise the answers.
TOFU_FINETUNE = FinetuneConfig(
    epochs=4, learning_rate=3e-4, batch_size=8, max_length=128, trainable_layers=8, system_prompt=""
)


def train_models(
    setting: TofuSetting,
    *,
    model: str | os.PathLike[str] | None = None,
    config: FinetuneConfig = TOFU_FINETUNE,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    only: str | None = None,
    on_done: Callable[[str, FinetuneResult], Any] | None = None,
) -> dict[str, FinetuneResult]:
    """Fine-tune (or reuse from the cache) the original and the retained model.

    ``only`` ("original" or "retained") trains one of them, so the two can run as separate
    processes.
    """
    runs = {"original": setting.original_rows, "retained": setting.retained_rows}
    # The run key already covers the rows, so the retained run is named without the split: splits
    # whose retain subset is the same (forget01 and forget05 at the defaults) share one
    # fine-tune instead of training the same model twice.
    run_names = {"original": f"tofu-{setting.split}-original", "retained": "tofu-retained"}
    results = {}
    for name, rows in runs.items():
        if only is not None and name != only:
            continue
        results[name] = finetune(
            rows,
            model=model,
            config=config,
            out=Path(out) if out else None,
            name=run_names[name],
            show_progress=show_progress,
        )
        if on_done is not None:
            on_done(name, results[name])
    return results
