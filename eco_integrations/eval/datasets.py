"""Loaders for TOFU, WMDP, MMLU and MUSE QA: from a local folder laid out like the
project's shared data, or from the Hugging Face hub with ``datasets``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..exceptions import ConfigurationError

TOFU_SPLITS = (
    "full", "forget01", "forget05", "forget10", "retain99", "retain95", "retain90",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
    "real_authors", "real_authors_perturbed", "world_facts", "world_facts_perturbed",
)
TOFU_HUB_ID = "locuslab/TOFU"


def _data_dir(data_dir: str | Path | None, sub: str) -> Path | None:
    if data_dir is None:
        return None
    root = Path(data_dir)
    folder = root / sub
    if not folder.is_dir():
        msg = f"{folder} does not exist; --data-dir must contain tofu/, wmdp/, mmlu/ and muse/ (see the data README)."
        raise ConfigurationError(msg)
    return folder


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        msg = f"Missing data file {path}."
        raise ConfigurationError(msg)
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_tofu(split: str, data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows of a TOFU split (``question``, ``answer``, ...), in the published order."""
    if split not in TOFU_SPLITS:
        msg = f"Unknown TOFU split {split!r}; choose one of: {', '.join(TOFU_SPLITS)}."
        raise ConfigurationError(msg)
    folder = _data_dir(data_dir, "tofu")
    if folder is not None:
        return _read_jsonl(folder / f"{split}.json")
    return _from_hub(TOFU_HUB_ID, split, "train")


def _from_hub(repo: str, config: str | None, split: str) -> list[dict[str, Any]]:
    from ..exceptions import require

    require("datasets", "data")
    import datasets

    return [dict(row) for row in datasets.load_dataset(repo, config, split=split)]
