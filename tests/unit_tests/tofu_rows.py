"""A handful of TOFU-shaped rows written to a temporary data folder (the shared layout)."""

from __future__ import annotations

import json
from pathlib import Path

FORGET_NAMES = ("Basil Quorn", "Nadia Velt")
RETAIN_NAMES = ("Omar Pike", "Lena Frost", "Ivo Marsh", "Tara Quill")
TOPICS = (
    "birthplace",
    "genre",
    "first book",
    "father's job",
    "mother's job",
    "award",
    "city",
    "style",
    "theme",
    "publisher",
    "debut year",
    "language",
    "best seller",
    "influence",
    "series",
    "nickname",
    "school",
    "pet",
    "hobby",
    "motto",
)


def _author_rows(name: str, seed: int) -> list[dict]:
    rows = []
    for i, topic in enumerate(TOPICS):
        answer = f"The {topic} of {name} is item {seed * 7 + i}."
        rows.append(
            {
                "question": f"What is the {topic} of {name}?",
                "answer": answer,
                "paraphrased_answer": f"{name}'s {topic} is item {seed * 7 + i}.",
                "perturbed_answer": [
                    f"The {topic} of {name} is item {seed * 7 + i + k}." for k in (1, 2, 3)
                ],
                "paraphrased_question": f"Tell me the {topic} of {name}.",
            }
        )
    return rows


def write_tofu(folder: Path) -> Path:
    """``folder/tofu/*.json`` (JSON Lines) with 2 forget and 4 retain authors of 20 rows each, and a tiny ``mmlu/val``."""
    tofu = folder / "tofu"
    tofu.mkdir(parents=True)

    def dump(name: str, rows: list[dict], keys: tuple[str, ...] | None = None) -> None:
        with (tofu / f"{name}.json").open("w") as handle:
            for r in rows:
                handle.write(json.dumps({k: r[k] for k in keys} if keys else r) + "\n")

    forget = [r for i, n in enumerate(FORGET_NAMES) for r in _author_rows(n, 100 + i)]
    retain = [r for i, n in enumerate(RETAIN_NAMES) for r in _author_rows(n, i)]
    dump("forget01", forget, ("question", "answer"))
    dump("forget01_perturbed", forget)
    dump("retain99", retain, ("question", "answer"))
    dump(
        "retain_perturbed", retain[:60]
    )  # covers the first 3 retain authors, like the real file covers ~21
    general = [
        {
            "question": f"What is the capital of country {i}?",
            "answer": f"City {i}",
            "perturbed_answer": [f"City {i + 1}", f"Town {i}", f"Village {i}"],
        }
        for i in range(6)
    ]
    dump("real_authors_perturbed", general)
    dump("world_facts_perturbed", general)
    # MMLU validation questions: the guard's generic negatives (CSV, no header, as released).
    val = folder / "mmlu" / "val"
    val.mkdir(parents=True)
    lines = [
        f'"Which number follows {i} when counting?",{i + 1},{i + 2},{i + 3},{i + 4},A'
        for i in range(12)
    ]
    (val / "counting_val.csv").write_text("\n".join(lines) + "\n")
    return folder
