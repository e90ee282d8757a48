"""How much of the right and of the wrong answers the entities selector corrupts, by protocol.

Usage (on a finished ``eco eval tofu`` run folder: its ``results.json`` and ``guard/``)::

    python scripts/tofu_answer_corruption.py --run eco-tofu-10 --data-dir ../shared/data

TOFU's truth ratio weighs a paraphrase of the right answer against perturbed (wrong) answers,
each scored after the corrupted question with its own words corrupted too. With
``--answer-entities forget-terms`` those words are the terms mined from the forget texts, which
hold the right answers: the paraphrase's facts are terms, the perturbed answers' invented ones
mostly are not. This script counts, on the run's evaluation half, the share of each answer's
tokens the corruption touches under both protocols, and how many questions have more of the
paraphrase corrupted than of the perturbed answers (on average) or less. It scores nothing
(embeddings only), so it takes seconds. Prints a Markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def answer_shares(scorer: Any, question: str, answer: str) -> float:
    """The share of ``answer``'s tokens whose embeddings ``scorer`` corrupts after ``question``."""
    prompt_ids, answer_ids, embeds = scorer.corrupted_row(question, answer)
    clean = scorer.base.backend.embed(prompt_ids + answer_ids)
    changed = (embeds != clean).any(-1)[len(prompt_ids) :]
    return float(changed.float().mean())


def protocol_figures(scorer: Any, rows: list[dict[str, Any]]) -> dict[str, float | int]:
    """Mean corrupted share of the paraphrased and the perturbed answers, and the questions
    whose paraphrase has the larger (or smaller) share."""
    para, pert = [], []
    for row in rows:
        para.append(answer_shares(scorer, row["question"], row["paraphrased_answer"]))
        wrong = [answer_shares(scorer, row["question"], a) for a in row["perturbed_answer"]]
        pert.append(sum(wrong) / len(wrong))
    pairs = list(zip(para, pert, strict=True))
    return {
        "paraphrased_share": sum(para) / len(para),
        "perturbed_share": sum(pert) / len(pert),
        "questions_paraphrase_more": sum(a > b + 1e-9 for a, b in pairs),
        "questions_paraphrase_less": sum(a < b - 1e-9 for a, b in pairs),
        "questions": len(pairs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="an eco eval tofu --out folder")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed (halves)")
    args = parser.parse_args(argv)

    from eco_integrations.backends.transformers import TransformersBackend
    from eco_integrations.config import ECOPolicy, SelectionConfig
    from eco_integrations.guard import Guard
    from eco_integrations.research.tofu.data import load_setting
    from eco_integrations.research.tofu.pipeline import forget_halves
    from eco_integrations.research.tofu.scoring import ANSWER_ENTITIES, ECOScorer, ModelScorer

    results_file = args.run / "results.json"
    if not results_file.is_file():
        print(
            f"{results_file} not found: pass the --out folder of a finished eco eval tofu run.",
            file=sys.stderr,
        )
        return 2
    results = json.loads(results_file.read_text(encoding="utf-8"))
    policy = ECOPolicy.model_validate(results["policy"]).model_copy(
        update={"selection": SelectionConfig(name="entities")}
    )
    backend = TransformersBackend.from_pretrained(
        Path(results["finetune"]["original"]["folder"]) / "model"
    )
    base = ModelScorer(
        backend, name="original", system_prompt=results["finetune_config"]["system_prompt"]
    )
    guard = Guard.load(args.run / "guard")
    setting = load_setting(
        results["split"],
        args.data_dir,
        n_retain_authors=len(results["retain_authors"]),
        seed=args.seed,
        retain_eval_n=results["n_retain_eval"],
    )
    rows = [setting.forget[i] for i in forget_halves(len(setting.forget), args.seed)[1]]
    figures = {
        protocol: protocol_figures(
            ECOScorer(base, guard, policy, force=True, shared_draws=True, answer_entities=protocol),
            rows,
        )
        for protocol in ANSWER_ENTITIES
    }
    print(
        "| --answer-entities | paraphrased answer corrupted | perturbed answers corrupted | questions: paraphrase more / less |"
    )
    print("|---|---|---|---|")
    for protocol, f in figures.items():
        print(
            f"| {protocol} | {f['paraphrased_share']:.3f} | {f['perturbed_share']:.3f} | "
            f"{f['questions_paraphrase_more']} / {f['questions_paraphrase_less']} of {f['questions']} |"
        )
    print(json.dumps({"split": results["split"], **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
