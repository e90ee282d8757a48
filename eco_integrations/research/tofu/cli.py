"""Command-line entry points: ``eco finetune`` and ``eco eval tofu``.

Wiring (in ``eco_integrations/cli.py`` / ``research/eval/cli.py``)::

    from .research.tofu.cli import add_eval_tofu, register_finetune
    register_finetune(sub)          # the top-level subparsers
    add_eval_tofu(evaluate)         # the subparsers of ``eco eval``

Both commands print one JSON object as their last line; progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..._console import print_json, whole_number
from ..._validation import validation_problems
from ...exceptions import ConfigurationError

_FINETUNE_FLAGS = {
    "epochs": "--epochs",
    "learning_rate": "--lr",
    "batch_size": "--batch-size",
    "max_length": "--max-length",
    "trainable_layers": "--trainable-layers",
    "seed": "--seed",
    "system_prompt": "--system-prompt",
}


def _finetune_config(args: argparse.Namespace, base: Any) -> Any:
    """``base`` with the fine-tune flags given on the command line, checked by its own rules."""
    from pydantic import ValidationError

    updates = {
        field: value
        for field, flag in _FINETUNE_FLAGS.items()
        if (value := getattr(args, flag[2:].replace("-", "_"))) is not None
    }
    if not updates:
        return base
    try:
        # model_copy(update=...) would skip validation: --batch-size 0 reached a division.
        return type(base).model_validate({**base.model_dump(), **updates})
    except ValidationError as err:
        msg = f"Bad fine-tune option: {validation_problems(err, _FINETUNE_FLAGS)}."
        raise ConfigurationError(msg) from None


def _add_finetune_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None, help="prompt + answer tokens")
    parser.add_argument(
        "--trainable-layers",
        type=int,
        default=None,
        help="train only the last N blocks (default: see the command)",
    )
    parser.add_argument(
        "--system-prompt",
        default=None,
        help="system message for every question ('' for an empty one)",
    )


# -- eco finetune --------------------------------------------------------------------------------
def cmd_finetune(args: argparse.Namespace) -> int:
    from ..finetune import FinetuneConfig, finetune, read_pairs

    rows = read_pairs(args.data)
    config = _finetune_config(args, FinetuneConfig())
    started = time.perf_counter()
    result = finetune(
        rows,
        model=args.model,
        config=config,
        out=args.out,
        name=args.name,
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
        show_progress=not args.quiet,
    )
    summary = {
        "model_folder": str(result.model_folder),
        "complete": result.complete,
        "cached": result.cached,
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "final_loss": result.losses[-1] if result.losses else None,
        "config": config.model_dump(mode="json"),
    }
    print_json(summary)
    return 0


def register_finetune(subparsers: Any) -> None:
    """Add ``finetune`` to the top-level ``eco`` subparsers."""
    p = subparsers.add_parser(
        "finetune", help="fine-tune a causal LM on question/answer pairs (CPU, resumable, cached)"
    )
    p.add_argument(
        "--data", required=True, help="JSON Lines (or a JSON array) of {question, answer}"
    )
    p.add_argument(
        "--model", default=None, help="base model folder or hub id (default: embedded SmolLM2)"
    )
    p.add_argument("--out", default=None, help="parent folder of runs (default: the user cache)")
    p.add_argument(
        "--name",
        default="finetune",
        help="run folder prefix; the folder is <name>-<hash of data and settings>",
    )
    p.add_argument("--seed", type=whole_number(0), default=None)
    _add_finetune_options(p)
    p.add_argument(
        "--max-steps",
        type=whole_number(1),
        default=None,
        help="stop after this many steps (resume later by re-running)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=whole_number(1),
        default=25,
        help="steps between resumable checkpoints",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)


# -- eco eval tofu -------------------------------------------------------------------------------
def _selectors(args: argparse.Namespace) -> tuple[str, ...]:
    """``--selectors a,b`` as a tuple; ``--selector`` alone stays a single choice."""
    if args.selectors is None:
        return ()
    if args.selector is not None:
        msg = "Pass either --selector NAME or --selectors A,B,..., not both."
        raise ConfigurationError(msg)
    names = tuple(n.strip() for n in args.selectors.split(",") if n.strip())
    if not names:
        msg = "--selectors needs at least one name, e.g. --selectors content,entities."
        raise ConfigurationError(msg)
    return names


def cmd_eval_tofu(args: argparse.Namespace) -> int:
    from .pipeline import TofuOptions, headline, precompute, run_tofu
    from .report import markdown_table
    from .training import TOFU_FINETUNE

    options = TofuOptions(
        split=args.split,
        data_dir=args.data_dir,
        model=args.model,
        finetune=_finetune_config(args, TOFU_FINETUNE),
        finetune_out=args.finetune_out,
        retain_authors=args.retain_authors,
        retain_eval_n=args.retain_eval_n or None,
        general_n=args.general_n or None,
        seed=args.seed if args.seed is not None else 0,
        max_new_tokens=args.max_new_tokens,
        corruption=args.corruption,
        dims=args.dims,
        selector=args.selector or "content",
        selectors=_selectors(args),
        init_strength=args.init_strength,
        search_steps=args.search_steps,
        search_eps=args.search_eps,
        search_objective=args.search_objective,
        shared_draws=args.shared_draws,
        corruption_draws=args.corruption_draws,
        answer_entities=args.answer_entities,
        restore_prompt_words=args.restore_prompt_words,
        target_fpr=args.target_fpr,
        batch_size=args.eval_batch_size,
        show_progress=not args.quiet,
    )

    def on_stage(name: str, seconds: float) -> None:
        print(f"[{name}] {seconds:.1f} s", file=sys.stderr, flush=True)

    if args.score_only:
        started = time.perf_counter()
        precompute(options, args.out, args.score_only)
        print_json(
            {
                "scored": args.score_only,
                "out": str(args.out),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        return 0
    summary = run_tofu(options, args.out, on_stage=on_stage)
    if args.docs:
        import shutil

        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        for name in (
            "table.md",
            "results.json",
            "strength_search.json",
            "truth_ratio_histograms.png",
            "forget_quality_vs_utility.png",
        ):
            shutil.copy2(Path(args.out) / name, docs / f"{args.split}_{name}")
    print(markdown_table(summary))
    print("timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_seconds"].items()))
    print_json(headline(summary))
    return 0


def add_eval_tofu(eval_subparsers: Any) -> None:
    """Add ``tofu`` to the subparsers of ``eco eval``."""
    p = eval_subparsers.add_parser(
        "tofu", help="TOFU at small scale: original, retained, ECO and two baselines"
    )
    p.add_argument("--split", default="forget01", choices=["forget01", "forget05", "forget10"])
    p.add_argument(
        "--data-dir", default=None, help="folder with tofu/ (default: the Hugging Face hub)"
    )
    p.add_argument(
        "--out",
        default="eco-tofu",
        help="folder for results.json, records.jsonl, table.md, plots, the guard",
    )
    p.add_argument(
        "--docs",
        nargs="?",
        const="docs/tofu",
        default=None,
        metavar="DIR",
        help="also copy the table, results and plots to DIR (default: docs/tofu under the current folder)",
    )
    p.add_argument(
        "--model", default=None, help="base model to fine-tune (default: embedded SmolLM2)"
    )
    p.add_argument(
        "--finetune-out",
        default=None,
        help="parent folder of the fine-tuned models (default: the user cache)",
    )
    p.add_argument(
        "--retain-authors",
        type=int,
        default=20,
        help="retain authors trained on, drawn with --seed",
    )
    p.add_argument(
        "--retain-eval-n",
        type=whole_number(0),
        default=20,
        help="retain rows scored (0: all of the subset's)",
    )
    p.add_argument(
        "--general-n",
        type=whole_number(0),
        default=20,
        help="real_authors and world_facts rows scored (0: all)",
    )
    p.add_argument("--seed", type=whole_number(0), default=None)
    _add_finetune_options(p)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument(
        "--corruption",
        default="rand_noise_full",
        help="corruption of the flagged questions' tokens (its strength, or k, is searched)",
    )
    p.add_argument(
        "--dims",
        type=int,
        default=None,
        help="rand_noise_first_n/top_k: dimensions touched (default 1); zero/flip corruptions: where the search over k starts",
    )
    p.add_argument(
        "--selector",
        default=None,
        choices=["content", "all", "entities"],
        help="the token selector (default content); --selectors searches several",
    )
    p.add_argument(
        "--selectors",
        default=None,
        metavar="A,B,...",
        help="search the strength once per selector (content, all, entities) on the calibration "
        "half; the best (selector, strength) by --search-objective wins",
    )
    p.add_argument(
        "--init-strength",
        type=float,
        default=None,
        help=(
            "where the strength search starts (default: twice the std of the model's embedding "
            "table; 1 for substitute_tokens, whose strength is a share of at most 1)"
        ),
    )
    p.add_argument(
        "--search-steps",
        type=int,
        default=3,
        help="zeroth-order steps (each evaluates two settings)",
    )
    p.add_argument(
        "--search-objective",
        default="distance",
        choices=["distance", "both", "folded", "unfolded", "retained"],
        help="what the search optimises on the calibration half: the distance between log truth ratios (minimised), "
        "a forget quality (both: the smaller of folded and unfolded), or retained: the mean of 1 - both "
        "forget qualities and the relative gaps in ROUGE-L recall and log answer probability (minimised)",
    )
    p.add_argument(
        "--search-eps",
        type=float,
        default=0.1,
        help="search step half-width, in decades of the strength (or k)",
    )
    p.add_argument(
        "--shared-draws",
        action="store_true",
        help="score every answer to a question against one corrupted question (the draw the "
        "engine generates from) and corrupt a word the answers share the same way in each; "
        "default: a draw per (question, answer), as in the paper's code",
    )
    p.add_argument(
        "--corruption-draws",
        type=int,
        default=1,
        metavar="K",
        help="score each answer under K independent draws of a random corruption and use the "
        "log of the mean of its per-token probability over them (the corrupted model's figure, "
        "not one draw's); greedy answers keep the engine's draw; default 1, as in the paper's code",
    )
    p.add_argument(
        "--answer-entities",
        choices=["forget-terms", "names"],
        default="forget-terms",
        help="which words of an answer the entities selector corrupts when answers are scored: "
        "forget-terms, every term mined from the forget texts (which hold the true answers, so "
        "the right answer's facts are corrupted more than the wrong answers'); names, the "
        "question's terms and every capitalised name of the answer, right or wrong alike",
    )
    p.add_argument(
        "--restore-prompt-words",
        action="store_true",
        help="write back, in ECO's generated answers, the question's words where an answer "
        "repeats the invented ones the corruption read in their place (a corruption that puts "
        "words in place: invent_words, substitute_tokens); scores are unchanged",
    )
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--eval-batch-size", type=whole_number(1), default=8)
    p.add_argument(
        "--score-only",
        choices=["retained", "prompt_baseline"],
        default=None,
        help="score just this method into --out's cache (run in a second process to share the work), then exit",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval_tofu)
