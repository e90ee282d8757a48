"""The TOFU results as Markdown tables and two figures.

``python -m eco_integrations.research.tofu.report OUT`` writes them again from a finished run's
``OUT/results.json`` and ``OUT/records.jsonl`` (no model is loaded).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import write_text_atomic
from ...exceptions import ECOError
from ..eval.datasets import load_tofu
from .evaluate import name_figures
from .metrics import folded

COLUMNS = (
    ("forget_quality", "forget quality (folded, ECO paper)"),
    ("forget_quality_unfolded", "forget quality (unfolded, TOFU code)"),
    ("model_utility", "model utility"),
    ("forget_prob", "forget answer prob"),
    ("forget_rouge", "forget ROUGE-L recall"),
    ("retain_prob", "retain answer prob"),
    ("retain_rouge", "retain ROUGE-L recall"),
    ("flagged_forget", "forget flagged"),
    ("flagged_retain", "retain flagged"),
)


def markdown_table(summary: dict[str, Any]) -> str:
    """Methods as rows, TOFU measures as columns."""
    head = "| method | " + " | ".join(label for _, label in COLUMNS) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 1)
    lines = [head, rule]
    for method, values in summary["methods"].items():
        cells = []
        for key, _ in COLUMNS:
            v = float(values[key])
            cells.append(f"{v:.3g}" if key.startswith("forget_quality") else f"{v:.3f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


NEAR_ONE = 0.9
"""A folded truth ratio at or above this: the model finds the paraphrased and the perturbed
answers about equally likely, as a model that never saw the facts often does."""


def ratio_shape(records: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per method, the shape of its log truth ratios on the forget evaluation half: median,
    standard deviation, and the share of questions whose folded ratio is near 1 (``NEAR_ONE``).

    The KS forget qualities say *whether* a method's ratios can be told from the retained
    model's; these say how (on the side of knowing, more spread, seldom undecided).
    """
    shape = {}
    for method, sets in records.items():
        ratios = [float(r["ratio"]) for r in sets["forget"] if r["ratio"] is not None]
        logs = np.log(ratios)
        shape[method] = {
            "median": float(np.median(logs)),
            "sd": float(np.std(logs)),
            "near_one": float(np.mean(folded(ratios) >= NEAR_ONE)),
        }
    return shape


def shape_table(shape: dict[str, dict[str, float]]) -> str:
    lines = [
        "| method | log truth ratio, median | log truth ratio, sd | folded ratio >= 0.9 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {m} | {v['median']:.2f} | {v['sd']:.2f} | {v['near_one']:.3f} |"
        for m, v in shape.items()
    ]
    return "\n".join(lines) + "\n"


def answer_text(records: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """Per method, what its greedy answers to the forget evaluation half repeat: ROUGE-L recall,
    the share that repeat a name the question gives, and ROUGE-L recall with those names left
    out (``metrics.rouge_l_recall_without_names``).

    ``None`` when answers were not generated, or the records predate the name figures
    (``add_name_figures`` recomputes them).
    """
    table = {}
    for method, sets in records.items():
        rows = sets.get("forget", [])
        if not rows or any(
            r.get("generated") is None or r.get("rouge_without_names") is None for r in rows
        ):
            return None
        figures = [(r["rouge"], r["repeats_name"], r["rouge_without_names"]) for r in rows]
        rouge, repeats, without = (float(np.mean(column)) for column in zip(*figures, strict=True))
        table[method] = {"rouge": rouge, "repeats_name": repeats, "rouge_without_names": without}
    return table


def add_name_figures(records: dict[str, Any], references: dict[str, str]) -> None:
    """Fill in the name figures of forget records written before they were recorded, from
    ``references`` (question -> TOFU's answer); a question it lacks keeps its record as is."""
    for sets in records.values():
        for r in sets.get("forget", []):
            if (
                r.get("rouge_without_names") is None
                and r.get("generated") is not None
                and r["question"] in references
            ):
                r.update(name_figures(r["question"], references[r["question"]], r["generated"]))


def answer_text_table(table: dict[str, dict[str, float]]) -> str:
    head = (
        "| method | ROUGE-L recall | answers repeating a name from the question "
        "| ROUGE-L recall, the question's names left out |"
    )
    lines = [head, "|---|---|---|---|"]
    lines += [
        f"| {m} | {v['rouge']:.3f} | {v['repeats_name']:.3f} | {v['rouge_without_names']:.3f} |"
        for m, v in table.items()
    ]
    return "\n".join(lines) + "\n"


def plot_truth_ratios(records: dict[str, Any], path: Path) -> None:
    """Folded truth-ratio histograms on the evaluation forget half: each method against the retained model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in records if m != "retained"]
    reference = folded([r["ratio"] for r in records["retained"]["forget"]])
    bins = np.linspace(0, 1, 21)
    # Own y scale per panel: a refusal guardrail piles every question into one bar, which on a
    # shared axis would flatten the other methods' histograms.
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3), sharey=False)
    np.atleast_1d(axes)[0].set_ylabel("questions")
    for ax, method in zip(np.atleast_1d(axes), methods, strict=True):
        ax.hist(reference, bins=bins, alpha=0.5, label="retained", color="tab:green")
        ax.hist(
            folded([r["ratio"] for r in records[method]["forget"]]),
            bins=bins,
            alpha=0.5,
            label=method,
            color="tab:red",
        )
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("min(R, 1/R)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_quality_vs_utility(summary: dict[str, Any], path: Path) -> None:
    """Forget quality (log scale) against model utility, one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, values in summary["methods"].items():
        x, y = max(float(values["forget_quality"]), 1e-12), float(values["model_utility"])
        ax.scatter([x], [y], s=40)
        ax.annotate(method, (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("forget quality (KS p-value vs retained, folded)")
    ax.set_ylabel("model utility")
    ax.axvline(0.05, color="grey", lw=0.6, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    summary: dict[str, Any], records: dict[str, Any], out: str | Path
) -> dict[str, str]:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table = markdown_table(summary)
    shape = shape_table(ratio_shape(records))
    text = f"{table}\nTruth ratios on the forget evaluation half:\n\n{shape}"
    answers = answer_text(records)
    if answers is not None:
        text += f"\nAnswers to the forget evaluation half:\n\n{answer_text_table(answers)}"
    write_text_atomic(folder / "table.md", text)
    plot_truth_ratios(records, folder / "truth_ratio_histograms.png")
    plot_quality_vs_utility(summary, folder / "forget_quality_vs_utility.png")
    return {
        "table": str(folder / "table.md"),
        "histograms": str(folder / "truth_ratio_histograms.png"),
        "scatter": str(folder / "forget_quality_vs_utility.png"),
    }


def read_records(folder: str | Path) -> dict[str, Any]:
    """A run's ``records.jsonl`` back as ``{method: {set: [record, ...]}}``."""
    records: dict[str, Any] = {}
    with (Path(folder) / "records.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            method, set_name = row.pop("method"), row.pop("set")
            records.setdefault(method, {}).setdefault(set_name, []).append(row)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eco_integrations.research.tofu.report",
        description="Write a finished `eco eval tofu` run's tables and plots again.",
    )
    parser.add_argument("out", help="the run's --out folder")
    parser.add_argument(
        "--data-dir",
        help="TOFU data folder: recomputes the answer table's name figures for runs written "
        "before they were recorded",
    )
    args = parser.parse_args(argv)
    folder = Path(args.out)
    missing = [n for n in ("results.json", "records.jsonl") if not (folder / n).is_file()]
    if missing:
        print(
            f"{folder} has no {' or '.join(missing)}: pass the --out folder of a finished "
            "`eco eval tofu` run.",
            file=sys.stderr,
        )
        return 2
    summary = json.loads((folder / "results.json").read_text())
    records = read_records(folder)
    if args.data_dir is not None:
        try:
            rows = load_tofu(f"{summary['split']}_perturbed", args.data_dir)
        except ECOError as error:
            print(error, file=sys.stderr)
            return 2
        add_name_figures(records, {r["question"]: r["answer"] for r in rows})
    if answer_text(records) is None:
        fix = (
            f"the data folder's {summary['split']}_perturbed.json does not hold every question "
            "of the run; pass the folder the run was scored on"
            if args.data_dir is not None
            else "pass --data-dir with the TOFU data folder to recompute them"
        )
        print(
            "No answer table: the records have no generated answers, or predate the name "
            f"figures; {fix}.",
            file=sys.stderr,
        )
    for path in write_report(summary, records, folder).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
