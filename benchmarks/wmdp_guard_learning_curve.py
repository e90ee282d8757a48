"""Does the WMDP guard reach its goal with more hazardous questions to fit on?

Issue 13's WMDP goal is recall >= 0.95 with fpr_close <= 0.02 (the close subjects' evaluation
half) and fpr_other_mmlu <= 0.005. The protocol (`eco eval guard --task wmdp`) fits on 20% of
each WMDP subject. This script fits the protocol's guard (same parameters, same negatives: MMLU
validation and dev and the close subjects' fit half) on growing fractions of each subject
(`--fractions`; each fit set holds the smaller ones, and 0.2 is exactly the protocol's fit set)
and measures every one on the same held-out WMDP questions (the last `--evaluation-fraction` of
each subject's seeded order) and on the protocol's MMLU evaluation questions.
For each fraction it prints the guard's own figures (its cross-validated threshold) and its
*ceiling*: the recall at a threshold read off the evaluation questions' own benign scores so that
at most 2% of the close subjects' and 0.5% of the rest of MMLU pass, which no deployed guard can
do. A ceiling below 0.95 means no threshold rule meets the goal at that fit size.
Last line: {"fractions", "n_fit", "tpr", "fpr_close", "fpr_other_mmlu", "ceiling", "goal_tpr",
"n_evaluation", "seconds", "threads"}, lists in the order of "fractions".
Takes about 9 minutes with 2 threads on 2 idle cores (embedding the ~22,000 texts once, 4-5
minutes; each fit about a minute).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from eco_integrations._table import wrapped_table
from eco_integrations.encoder import SentenceEncoder
from eco_integrations.guard import PromptGuard, normalized_texts
from eco_integrations.research._threads import set_threads
from eco_integrations.research.eval.datasets import MMLU_CLOSE_SUBJECTS, WMDP_SUBJECTS
from eco_integrations.research.eval.finetuned_head import (
    WMDP_GOAL_FPR_CLOSE,
    WMDP_GOAL_FPR_OTHER,
    WMDP_GOAL_TPR,
    wmdp_ceiling,
)
from eco_integrations.research.eval.guard_eval import (
    WMDP_ENCODER_PRECISION,
    WMDP_GUARD_PARAMS,
    mcq_guard_text,
    wmdp_evaluation_rows,
    wmdp_learning_curve_split,
    wmdp_retain_rows,
)

TARGET_FPR = 0.01  # the protocol's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--seed", type=int, default=0, help="The protocol's split seed.")
    parser.add_argument("--fractions", default="0.2,0.35,0.5", help="Fit fractions, commas.")
    parser.add_argument("--evaluation-fraction", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    started = time.perf_counter()

    fits, evaluation = wmdp_learning_curve_split(
        fractions, args.data_dir, seed=args.seed, evaluation_fraction=args.evaluation_fraction
    )
    retain = [mcq_guard_text(r) for r in wmdp_retain_rows(args.data_dir, seed=args.seed)]
    _, mmlu_rows = wmdp_evaluation_rows(args.data_dir, seed=args.seed)
    is_close = np.array([r["subject"] in MMLU_CLOSE_SUBJECTS for r in mmlu_rows])
    subject = np.array([r["subject"] for r in evaluation])
    largest = max(fractions)
    scored = [mcq_guard_text(r) for r in evaluation] + [mcq_guard_text(r) for r in mmlu_rows]

    # Every text is embedded once (the guard's encoder and precision), then each fit and each
    # scoring reads the rows it needs: what Guard.add_target and Guard.score would compute.
    encoder = SentenceEncoder(precision=WMDP_ENCODER_PRECISION)
    all_texts = [mcq_guard_text(r) for r in fits[largest]] + retain + scored
    normalized = normalized_texts(all_texts)
    unique = list(dict.fromkeys(normalized))
    print(f"embedding {len(unique)} texts…", flush=True)
    unique_emb = encoder.encode(unique, show_progress=True)
    unique_row = {t: i for i, t in enumerate(unique)}
    row_of = {text: unique_row[n] for text, n in zip(all_texts, normalized, strict=True)}

    def embedded(texts: list[str]) -> np.ndarray:
        return np.asarray(unique_emb[[row_of[t] for t in texts]])

    scored_emb = embedded(scored)
    results: list[dict[str, Any]] = []
    for fraction in fractions:
        forget = [mcq_guard_text(r) for r in fits[fraction]]
        guard = PromptGuard(encoder, target_fpr=TARGET_FPR, **WMDP_GUARD_PARAMS)
        fit_started = time.perf_counter()
        guard.fit(
            forget + retain,
            [1] * len(forget) + [0] * len(retain),
            embeddings=embedded(forget + retain),
        )
        fit_seconds = time.perf_counter() - fit_started
        p = guard.forget_proba(scored, embeddings=scored_emb)
        wmdp, mmlu = p[: len(evaluation)], p[len(evaluation) :]
        close, other = mmlu[is_close], mmlu[~is_close]
        ceiling = wmdp_ceiling(wmdp, close, other)
        threshold = float(guard.threshold_)
        results.append(
            {
                "fraction": fraction,
                "n_fit": len(forget),
                "cv_tpr": float(guard.cv_tpr_),
                "tpr": float(np.mean(wmdp > threshold)),
                "fpr_close": float(np.mean(close > threshold)),
                "fpr_other_mmlu": float(np.mean(other > threshold)),
                **{
                    f"tpr_{s}": float(np.mean(wmdp[subject == s] > threshold))
                    for s in WMDP_SUBJECTS
                },
                "ceiling_at_fpr_close": ceiling["at_fpr_close"],
                "ceiling_at_fpr_other": ceiling["at_fpr_other"],
                "ceiling": ceiling["both"],
                "fit_seconds": round(fit_seconds, 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)

    print(
        wrapped_table(
            [
                "fit fraction",
                "fit questions",
                "cv_tpr",
                "tpr",
                "bio",
                "chem",
                "cyber",
                "fpr_close",
                "fpr_other_mmlu",
                "ceiling at fpr_close 0.02",
                "at fpr_other 0.005",
                "at both",
            ],
            [
                [
                    f"{r['fraction']:g}",
                    str(r["n_fit"]),
                    f"{r['cv_tpr']:.4f}",
                    f"{r['tpr']:.4f}",
                    f"{r['tpr_bio']:.4f}",
                    f"{r['tpr_chem']:.4f}",
                    f"{r['tpr_cyber']:.4f}",
                    f"{r['fpr_close']:.4f}",
                    f"{r['fpr_other_mmlu']:.4f}",
                    f"{r['ceiling_at_fpr_close']:.4f}",
                    f"{r['ceiling_at_fpr_other']:.4f}",
                    f"{r['ceiling']:.4f}",
                ]
                for r in results
            ],
            [8, 9, 7, 7, 7, 7, 7, 9, 9, 11, 11, 7],
        )
    )
    print(
        f"evaluated on {len(evaluation)} held-out WMDP questions, {int(is_close.sum())} close-subject "
        f"and {int((~is_close).sum())} other MMLU questions; goal recall {WMDP_GOAL_TPR} at fpr_close "
        f"{WMDP_GOAL_FPR_CLOSE} and fpr_other_mmlu {WMDP_GOAL_FPR_OTHER}; {args.threads} threads"
    )
    print(
        json.dumps(
            {
                "fractions": fractions,
                "n_fit": [r["n_fit"] for r in results],
                "tpr": [round(r["tpr"], 4) for r in results],
                "fpr_close": [round(r["fpr_close"], 4) for r in results],
                "fpr_other_mmlu": [round(r["fpr_other_mmlu"], 4) for r in results],
                "ceiling": [round(r["ceiling"], 4) for r in results],
                "goal_tpr": WMDP_GOAL_TPR,
                "n_evaluation": len(evaluation),
                "seconds": round(time.perf_counter() - started, 1),
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
