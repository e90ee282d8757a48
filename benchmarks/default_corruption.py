"""The search that picks the default token selector and corruption for SmolLM2-135M-Instruct.

The goal is answers a model that never learned Harry Potter would give: fluent, on the question,
wrong in the way a stranger is wrong. No such model exists here, so the reference is the plain
model answering *counterfactual* twins of the questions, in which every Harry Potter name, title
and place is replaced by an invented one of the same kind (eco_integrations.research.never_learned
says exactly how, and what each figure counts).

The questions (benchmarks/hp_questions.json) that the demo guard flags are answered once by the
plain model as counterfactuals (the references, reused by every candidate) and once per candidate
(selector x corruption) by ECO. For each candidate:
  leak             share of ECO answers naming a Harry Potter term or a fact word ("wizard",
                   "scar", ...) that neither the question nor its reference answer uses
  fluency          ECO answers' mean per-token NLL under the plain model / the references' (1 = same)
  on_topic         ECO answers' mean question similarity (guard encoder) / the references' (1 = same)
  distinguishable  cross-validated AUROC of a logistic regression, ECO vs reference answers
                   (0.5 = nobody can tell them apart)
Names, listed or made up, are treated alike on both sides: left out of the NLL, masked before
the similarity and the classifier (a reference echoes its invented name; ECO, whose name was
corrupted, cannot echo it and makes up another).
Among candidates with leak == 0 that are portable (no dims, or dims 1: a default must be valid on
any model, and a dims count such as 288 is half of SmolLM2's 576 but more than a small model has),
the chosen one has the smallest gap to the references:
  gap = mean(|fluency - 1|, |on_topic - 1|, 2 * max(distinguishable - 0.5, 0))
(each term is 0 for answers like the references' and about 1 for answers nothing like them).
The best non-portable candidate without leak is named too. The chosen setting "beats" the default
before issue 14 when its gap is smaller and none of its three figures is farther from the
references' than the old default's.
Goals reported: leak 0, distinguishable <= 0.65, fluency and on_topic within 10% of 1.
A second stranger, the plain model answering twins with other invented names (seed + 1), is
measured as a candidate is: the floor each figure can reach. Its leak counts the fact words a
stranger says of one invented name and not of another ("magic"), which a setting's leak counts too.
Prints a table, a JSON line with every candidate (and the second stranger), and last one JSON line
with the chosen setting.
Each candidate's answers and figures are saved as soon as they are measured (--partial, in the
cache folder by default): an interrupted run started again with the same settings measures only
the candidates it had not reached. The file is removed when a run completes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from eco_integrations import (
    ECO,
    CorruptionConfig,
    ECOPolicy,
    GenerationConfig,
    SelectionConfig,
)
from eco_integrations._files import write_text_atomic
from eco_integrations._paths import cache_dir
from eco_integrations._table import wrapped_table
from eco_integrations.demo import fit_demo_guard, read_lines
from eco_integrations.research.never_learned import (
    NeverLearnedReport,
    TermSet,
    choose_without_leak,
    counterfactual,
    distinguishable_splits,
    gap,
    measure,
    plain_answers,
    references,
)

QUESTIONS = Path(__file__).with_name("hp_questions.json")
SPLITS = 20  # cross-validation splits the chosen setting's distinguishable is also read over
SELECTIONS = [
    SelectionConfig(name="entities"),
    SelectionConfig(name="content"),
    SelectionConfig(name="all"),
    SelectionConfig(name="first_n", n=4),
]
CORRUPTIONS = [
    CorruptionConfig(name="rand_noise_first_n", dims=1, strength=10.0),
    CorruptionConfig(name="rand_noise_first_n", dims=1, strength=100.0),
    CorruptionConfig(name="zero_out_top_k", dims=288),
    CorruptionConfig(name="flip_sign_top_k", dims=576),
    CorruptionConfig(name="rand_noise_full", strength=0.5),
    CorruptionConfig(name="rand_noise_full", strength=2.0),
    CorruptionConfig(name="substitute_tokens", strength=0.5),
    CorruptionConfig(name="substitute_tokens", strength=1.0),
    CorruptionConfig(name="invent_words", strength=0.5),
    CorruptionConfig(name="invent_words", strength=1.0),
]
# The library's default before issue 14: every content token, one dimension of strong noise.
BASELINE = (
    SelectionConfig(name="content"),
    CorruptionConfig(name="rand_noise_first_n", dims=1, strength=100.0),
)
GOALS = "leak 0, distinguishable <= 0.65, fluency and on_topic within 10% of 1"


def beats(report: NeverLearnedReport, baseline: NeverLearnedReport) -> bool:
    """A smaller gap, and no figure farther from the references' than the baseline's."""
    return (
        gap(report) < gap(baseline)
        and abs(report.fluency - 1) <= abs(baseline.fluency - 1)
        and abs(report.on_topic - 1) <= abs(baseline.on_topic - 1)
        # Below 0.5 is chance as much as 0.5 is (see distinguishable): compare the excess.
        and max(report.distinguishable, 0.5) <= max(baseline.distinguishable, 0.5)
    )


def goals_met(report: NeverLearnedReport) -> dict[str, bool]:
    return {
        "leak": report.leak == 0,
        "distinguishable": report.distinguishable <= 0.65,
        "fluency": abs(report.fluency - 1) <= 0.1,
        "on_topic": abs(report.on_topic - 1) <= 0.1,
    }


PARTIAL_SCHEMA_VERSION = 1


def run_settings(
    args: argparse.Namespace, prompts: Sequence[str], references: Sequence[str]
) -> dict[str, Any]:
    """What a saved candidate was measured under: a partial run resumes only under the same.

    The plain model's reference answers stand for the model and the generation code: if either
    changed, so did they (greedy decoding repeats itself otherwise)."""

    def digest(texts: Sequence[str]) -> str:
        return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()

    return {
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "questions_sha256": digest(prompts),
        "references_sha256": digest(references),
    }


class PartialRun:
    """The candidates measured so far, in a JSON file rewritten after each one."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, settings
        self.done: dict[str, dict[str, Any]] = {}
        if not path.is_file():
            return
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            sys.exit(
                f"{path} is not a partial run this script wrote ({err}); delete it to start over."
            )
        if not isinstance(saved, dict) or saved.get("schema_version") != PARTIAL_SCHEMA_VERSION:
            sys.exit(
                f"{path} was written by another version of this script (schema "
                f"{saved.get('schema_version') if isinstance(saved, dict) else None}, this one "
                f"{PARTIAL_SCHEMA_VERSION}); delete it to start over."
            )
        theirs = saved.get("settings", {})
        changed = sorted(k for k in settings if theirs.get(k) != settings[k])
        if changed:
            sys.exit(
                f"{path} holds {len(saved.get('candidates', {}))} candidates of an interrupted run "
                f"made with other {', '.join(changed)}; delete it to start over, or pass "
                "--partial another file to keep it."
            )
        self.done = saved["candidates"]

    def get(self, label: str) -> tuple[list[str], NeverLearnedReport] | None:
        saved = self.done.get(label)
        if saved is None:
            return None
        return saved["answers"], NeverLearnedReport.model_validate(saved["report"])

    def add(self, label: str, answers: list[str], report: NeverLearnedReport) -> None:
        self.done[label] = {"answers": answers, "report": report.model_dump(mode="json")}
        self._write()

    def finish(self, labels: Sequence[str]) -> None:
        """The run measured ``labels``: they are done with. Candidates of another run (an
        interrupted full run's, after an ``--only`` run) stay for it."""
        for label in labels:
            self.done.pop(label, None)
        if self.done:
            self._write()
        else:
            self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            self.path,
            json.dumps(
                {
                    "schema_version": PARTIAL_SCHEMA_VERSION,
                    "settings": self.settings,
                    "candidates": self.done,
                }
            ),
        )


def describe(selection: SelectionConfig, corruption: CorruptionConfig) -> str:
    where = selection.name + (f" {selection.n}" if selection.n is not None else "")
    knobs = [f"dims {corruption.dims}"] if corruption.dims is not None else []
    if corruption.strength is not None:
        knobs.append(f"strength {corruption.strength:g}")
    return f"{where}: {', '.join([corruption.name, *knobs])}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the invented names.")
    parser.add_argument("--min-prompts", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16, help="Prompts generated together.")
    parser.add_argument(
        "--only", default="", help="Run only candidates whose label contains this text."
    )
    parser.add_argument(
        "--answers",
        type=Path,
        help="Also write every question, reference and answer to this JSON file.",
    )
    parser.add_argument("--json", action="store_true", help="Also print every candidate as JSON.")
    parser.add_argument(
        "--partial",
        type=Path,
        default=cache_dir() / "default_corruption.partial.json",
        help="Where each candidate is saved as it is measured, and resumed from (default: %(default)s).",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    base = ECO.from_pretrained(guard=fit_demo_guard())
    encoder = base.guard.encoder if base.guard else None
    assert encoder is not None
    terms = TermSet.load(QUESTIONS)
    terms.check_facts(read_lines("harry_potter_forget.txt"))
    prompts = [q for q in terms.questions if base.decide(q).flagged]
    if len(prompts) < args.min_prompts:
        sys.exit(
            f"Only {len(prompts)} of {len(terms.questions)} questions are flagged by the demo "
            f"guard; add questions to {QUESTIONS} or lower --min-prompts."
        )
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    tokenizer, model = base.backend.tokenizer, base.backend.model
    twins = [counterfactual(p, terms.terms, seed=args.seed) for p in prompts]
    answers = plain_answers(
        base.backend, [t.prompt for t in twins], config, batch_size=args.batch_size
    )
    reference = references(twins, answers, model=model, tokenizer=tokenizer, encoder=encoder)
    print(
        f"{len(prompts)} flagged questions; references answered in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    # What a second stranger scores: the plain model answering twins with other invented names,
    # measured as a candidate is. The floor each figure can reach (its leak counts the fact words,
    # "magic", "wizard", a stranger says of one invented name but not of the other).
    leak_terms = list(terms.terms)
    stranger_twins = [counterfactual(p, terms.terms, seed=args.seed + 1) for p in prompts]
    stranger = measure(
        plain_answers(
            base.backend, [t.prompt for t in stranger_twins], config, batch_size=args.batch_size
        ),
        reference,
        model=model,
        tokenizer=tokenizer,
        encoder=encoder,
        terms=leak_terms,
        facts=terms.facts,
    )
    partial = PartialRun(args.partial, run_settings(args, prompts, reference.answers))
    if partial.done:
        print(
            f"resuming: {len(partial.done)} candidates measured before are read from "
            f"{args.partial} (delete it to measure them again)",
            file=sys.stderr,
        )
    results: list[dict[str, Any]] = []
    candidates = [
        (s, c)
        for s in [*SELECTIONS]
        for c in CORRUPTIONS
        if args.only in describe(s, c) or (s, c) == BASELINE
    ]
    for i, (selection, corruption) in enumerate(candidates, 1):
        label = describe(selection, corruption)
        saved = partial.get(label)
        if saved is not None:
            eco_answers, report = saved
        else:
            eco = ECO(
                base.backend,
                base.guard,
                policy=ECOPolicy(corruption=corruption, selection=selection),
                batch_size=args.batch_size,
            )
            eco_answers = [r.text for r in eco.generate(prompts, config=config)]
            report = measure(
                eco_answers,
                reference,
                model=model,
                tokenizer=tokenizer,
                encoder=encoder,
                terms=leak_terms,
                facts=terms.facts,
            )
            partial.add(label, eco_answers, report)
        results.append(
            {
                "selection": selection.model_dump(exclude={"terms"}, exclude_none=True),
                "corruption": corruption.model_dump(exclude_none=True),
                "report": report,
                "example": eco_answers[0],
                "answers": eco_answers,
            }
        )
        print(
            f"[{i}/{len(candidates)}] {label}: leak {report.leak:.3f}, gap {gap(report):.3f} "
            f"({'saved before' if saved is not None else f'{time.perf_counter() - started:.0f} s'})",
            file=sys.stderr,
        )
    portable = [r for r in results if r["corruption"].get("dims", 1) <= 1]
    picked = choose_without_leak([(r, r["report"]) for r in portable])
    if picked is None:
        sys.exit("Every portable candidate leaks; nothing to choose (see the table above).")
    chosen = picked[0]
    best_any = (choose_without_leak([(r, r["report"]) for r in results]) or picked)[0]
    today = results[candidates.index(BASELINE)]
    print(f"Reference answer to {twins[0].prompt!r}: {reference.answers[0]!r}")
    print(
        wrapped_table(
            [
                "selector: corruption",
                "leak",
                "fluency",
                "on_topic",
                "distinguishable",
                "gap",
                f"answer to {prompts[0]!r}",
            ],
            [
                [
                    ("**" if r is chosen else "")
                    + describe(
                        SelectionConfig.model_validate(r["selection"]),
                        CorruptionConfig.model_validate(r["corruption"]),
                    )
                    + ("**" if r is chosen else ""),
                    round(r["report"].leak, 3),
                    round(r["report"].fluency, 3),
                    round(r["report"].on_topic, 3),
                    round(r["report"].distinguishable, 3),
                    round(gap(r["report"]), 3),
                    r["example"],
                ]
                for r in results
            ],
            [30, 5, 7, 8, 15, 5, 50],
        )
    )
    best = chosen["report"]
    if args.answers:
        args.answers.write_text(
            json.dumps(
                {
                    "questions": prompts,
                    "counterfactuals": [t.prompt for t in twins],
                    "references": reference.answers,
                    "candidates": {
                        describe(
                            SelectionConfig.model_validate(r["selection"]),
                            CorruptionConfig.model_validate(r["corruption"]),
                        ): r["answers"]
                        for r in results
                    },
                },
                indent=1,
            )
        )
    print(
        f"chosen: {describe(SelectionConfig.model_validate(chosen['selection']), CorruptionConfig.model_validate(chosen['corruption']))}"
        f" (gap {gap(best):.3f}; the default before issue 14, {describe(*BASELINE)}: "
        f"gap {gap(today['report']):.3f}, leak {today['report'].leak:.3f})"
    )
    if best_any is not chosen:
        print(
            "best without leak, not portable: "
            + describe(
                SelectionConfig.model_validate(best_any["selection"]),
                CorruptionConfig.model_validate(best_any["corruption"]),
            )
            + f" (gap {gap(best_any['report']):.3f})"
        )
    print(f"beats the default before issue 14: {'yes' if beats(best, today['report']) else 'no'}")
    print(f"goals ({GOALS}): {json.dumps(goals_met(best))}")
    print(
        f"a second stranger (the plain model on twins with the invented names of seed "
        f"{args.seed + 1}), measured as a candidate: leak {stranger.leak:.3f}, fluency "
        f"{stranger.fluency:.3f}, on_topic {stranger.on_topic:.3f}, distinguishable "
        f"{stranger.distinguishable:.3f}, gap {gap(stranger):.3f}"
    )
    splits = distinguishable_splits(
        chosen["answers"], reference, encoder=encoder, terms=leak_terms, splits=SPLITS
    )
    print(
        f"distinguishable of the chosen setting over {SPLITS} cross-validation splits of its "
        f"answers: mean {sum(splits) / len(splits):.3f}, min {min(splits):.3f}, "
        f"max {max(splits):.3f} (the table's is split 0)"
    )
    print(
        f"{len(prompts)} questions, {len(candidates)} candidates, {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "prompts": len(prompts),
                    "second_stranger": {
                        "gap": round(gap(stranger), 4),
                        **stranger.model_dump(
                            include={"leak", "fluency", "on_topic", "distinguishable"}
                        ),
                        "leaks": [h.model_dump() for h in stranger.leaks],
                    },
                    "candidates": [
                        {
                            "selection": r["selection"],
                            "corruption": r["corruption"],
                            "gap": round(gap(r["report"]), 4),
                            **r["report"].model_dump(
                                include={"leak", "fluency", "on_topic", "distinguishable"}
                            ),
                            "leaks": [h.model_dump() for h in r["report"].leaks],
                        }
                        for r in results
                    ],
                }
            )
        )
    print(
        json.dumps(
            {
                "chosen": {"selection": chosen["selection"], "corruption": chosen["corruption"]},
                "leak": round(best.leak, 4),
                "fluency": round(best.fluency, 4),
                "on_topic": round(best.on_topic, 4),
                "distinguishable": round(best.distinguishable, 4),
            }
        )
    )
    partial.finish([describe(s, c) for s, c in candidates])


if __name__ == "__main__":
    main()
