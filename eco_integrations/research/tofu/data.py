"""The small-scale TOFU setting: which rows train which model and which rows score it.

TOFU's authors each own 20 consecutive rows of ``full``. The *original* model is fine-tuned on
the forget split plus a fixed subset of retain authors; the *retained* model on that retain
subset alone. The retain subset is drawn (seed 0) among the retain authors that
``retain_perturbed`` covers, because only they have the paraphrased and perturbed answers the
truth ratio needs: so the retain part of model utility is measured on authors the models
were actually trained on, as in TOFU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...exceptions import ConfigurationError
from ..eval.datasets import TOFU_AUTHOR_ROWS, TOFU_FORGET_SPLITS, load_tofu


@dataclass
class TofuSetting:
    """Rows for training and scoring, all loaded from one data folder."""

    split: str
    forget: list[
        dict[str, Any]
    ]  # forgetXX_perturbed rows (question, answer, paraphrased/perturbed answers)
    retain_train: list[dict[str, str]]  # the retain subset's question/answer rows (trained on)
    retain_eval: list[dict[str, Any]]  # retain_perturbed rows of the retain subset (scored)
    retain_guard: list[dict[str, str]]  # the whole retain split: the guard's negatives
    real_authors: list[dict[str, Any]]
    world_facts: list[dict[str, Any]]
    retain_authors: list[int]

    @property
    def original_rows(self) -> list[dict[str, str]]:
        """What the original model learns: the forget rows, then the retain subset."""
        return [
            {"question": r["question"], "answer": r["answer"]} for r in self.forget
        ] + self.retain_train

    @property
    def retained_rows(self) -> list[dict[str, str]]:
        return list(self.retain_train)


def load_setting(
    split: str,
    data_dir: str | Path | None,
    *,
    n_retain_authors: int = 20,
    seed: int = 0,
    retain_eval_n: int | None = None,
) -> TofuSetting:
    """Assemble the setting for ``split``; ``retain_eval_n`` caps the scored retain rows (seeded sample)."""
    if split not in TOFU_FORGET_SPLITS:
        msg = (
            f"Unknown TOFU forget split {split!r}; choose one of: {', '.join(TOFU_FORGET_SPLITS)}."
        )
        raise ConfigurationError(msg)
    forget = load_tofu(f"{split}_perturbed", data_dir)
    plain = load_tofu(split, data_dir)
    if [r["question"] for r in plain] != [r["question"] for r in forget]:
        msg = f"{split}.json and {split}_perturbed.json do not list the same questions in the same order; check the data folder."
        raise ConfigurationError(msg)
    retain = load_tofu(TOFU_FORGET_SPLITS[split], data_dir)
    perturbed = load_tofu("retain_perturbed", data_dir)
    # Author of a retain row = its block of 20 in the retain split (forget rows are the tail of full).
    author_of = {r["question"]: i // TOFU_AUTHOR_ROWS for i, r in enumerate(retain)}
    covered = sorted({author_of[r["question"]] for r in perturbed if r["question"] in author_of})
    if len(covered) < n_retain_authors:
        msg = f"retain_perturbed covers {len(covered)} retain authors, fewer than the {n_retain_authors} asked for; lower --retain-authors."
        raise ConfigurationError(msg)
    rng = np.random.default_rng(seed)
    chosen = sorted(int(a) for a in rng.choice(covered, size=n_retain_authors, replace=False))
    keep = set(chosen)
    retain_train = [
        {"question": r["question"], "answer": r["answer"]}
        for i, r in enumerate(retain)
        if i // TOFU_AUTHOR_ROWS in keep
    ]
    retain_eval = [r for r in perturbed if author_of.get(r["question"]) in keep]
    if retain_eval_n is not None and retain_eval_n < len(retain_eval):
        picked = sorted(
            np.random.default_rng(seed)
            .choice(len(retain_eval), size=retain_eval_n, replace=False)
            .tolist()
        )
        retain_eval = [retain_eval[i] for i in picked]
    return TofuSetting(
        split=split,
        forget=forget,
        retain_train=retain_train,
        retain_eval=retain_eval,
        retain_guard=[{"question": r["question"], "answer": r["answer"]} for r in retain],
        real_authors=load_tofu("real_authors_perturbed", data_dir),
        world_facts=load_tofu("world_facts_perturbed", data_dir),
        retain_authors=chosen,
    )
