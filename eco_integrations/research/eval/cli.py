"""The ``eco eval`` (guard, mcq) and ``eco calibrate`` (strength) commands.

:func:`register` is called by ``eco_integrations.cli.build_parser`` with the top-level
subparsers. Each command prints one JSON object as its last stdout line (``--json`` drops the
human-readable lines before it); progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..._console import parse_guard_params, print_json, whole_number
from ...exceptions import InvalidInputError
from .._threads import set_threads

log = logging.getLogger(__name__)


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    # The tasks set the target rate themselves (--target-fpr).
    return parse_guard_params(items, reserved={"target_fpr"})


# -- eco eval guard ----------------------------------------------------------------------------
def cmd_eval_guard(args: argparse.Namespace) -> int:
    from .guard_eval import run_guard_task
    from .report import HEADLINE_METRICS, write_guard_report

    if args.save_guard and not args.out:
        msg = "--save-guard saves the fitted guard under --out; give --out DIR."
        raise InvalidInputError(msg)
    metrics, guard, scores = run_guard_task(
        args.task,
        args.data_dir,
        seed=args.seed,
        target_fpr=args.target_fpr,
        method=args.threshold,
        show_progress=not args.quiet,
        params=_parse_params(args.guard_param),
        encoder=args.encoder,
    )
    if args.out:
        metrics["files"] = write_guard_report(metrics, scores, args.out)
        if args.save_guard:
            guard.save(Path(args.out) / f"{args.task}-guard")
    if not args.json:
        for key in HEADLINE_METRICS:
            if key in metrics:
                print(f"{key:18} {metrics[key]:.4f}")
        print(f"threshold method: {metrics['threshold_method']}")
        where = metrics["files"]["markdown"] if args.out else "the JSON line below"
        for key, what in (
            ("missed_forget_probes", "missed forget questions"),
            ("flagged_benign_probes", "flagged benign questions"),
        ):
            if key in metrics:
                print(f"{what}: {len(metrics[key])}, each with its score in {where}")
    print_json(metrics)
    return 0


# -- eco eval mcq ------------------------------------------------------------------------------
def cmd_eval_mcq(args: argparse.Namespace) -> int:
    from .mcq import run_mcq_task

    set_threads(args.threads)
    summary = run_mcq_task(
        args.data_dir,
        args.out,
        seed=args.seed,
        target_fpr=args.target_fpr,
        guard=args.guard,
        model=args.model,
        corruption=args.corruption,
        dims=args.dims,
        strength=args.strength,
        limit=args.limit,
        full=args.full,
        n_wmdp=args.n_wmdp,
        n_mmlu=args.n_mmlu,
        n_close=args.n_close,
        partial=args.partial,
        letters=args.letters,
        batch_size=args.batch_size,
        show_progress=not args.quiet,
        command=args.command_line,
        guard_params=_parse_params(args.guard_param),
        encoder=args.encoder,
    )
    if not args.json:
        for key in (
            "wmdp_acc_plain",
            "wmdp_acc_eco",
            "mmlu_acc_plain",
            "mmlu_acc_eco",
            "mmlu_unchanged",
            "chance",
        ):
            print(f"{key:16} {summary[key]:.4f}")
    print_json(summary)
    return 0


# -- eco calibrate strength --------------------------------------------------------------------
def cmd_calibrate_strength(args: argparse.Namespace) -> int:
    from .. import strength as zo

    summary = zo.calibrate_from_cli(args)
    print_json(summary)
    return 0


def register(subparsers: Any) -> None:
    """Add ``eval`` and ``calibrate`` to the ``eco`` command line."""
    from .calibration import THRESHOLD_METHODS
    from .guard_eval import GUARD_TASKS
    from .mcq import LETTER_VARIANTS

    evaluate = subparsers.add_parser(
        "eval", help="evaluate guards and ECO on benchmark data"
    ).add_subparsers(dest="eval_command", required=True)

    guard = evaluate.add_parser(
        "guard", help="guard quality on a task's held-out prompts (JSON, Markdown, plots)"
    )
    guard.add_argument("--task", required=True, choices=GUARD_TASKS)
    guard.add_argument(
        "--data-dir",
        default=None,
        help="folder laid out like ../shared/data (default: the Hugging Face hub)",
    )
    guard.add_argument(
        "--out",
        default=None,
        help="folder for <task>.json, <task>.md, <task>_hist.png, <task>_roc.png",
    )
    guard.add_argument("--seed", type=whole_number(0), default=0)
    guard.add_argument(
        "--encoder",
        default=None,
        help="a sentence-transformers folder, or all-mpnet-base-v2 (make eval-encoder) "
        "(default: the embedded all-MiniLM-L6-v2)",
    )
    guard.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="default: the task's goal (0.01 TOFU/WMDP, 0.02 MUSE)",
    )
    guard.add_argument(
        "--threshold",
        default="target-rate",
        choices=THRESHOLD_METHODS,
        help="target-rate: the guard's cross-validated threshold; conformal: split-conformal on held-out retain prompts",
    )
    guard.add_argument(
        "--guard-param",
        action="append",
        metavar="NAME=VALUE",
        help="PromptGuard hyperparameter for this task (repeatable); wmdp, the tofu tasks and "
        "tofu-forget10-robust start from their own (guard_params in the JSON), e.g. "
        "knowledge=false near_misses=false for the robust task's learned classifier alone",
    )
    guard.add_argument(
        "--save-guard", action="store_true", help="also save the fitted guard under --out"
    )
    guard.add_argument("--json", action="store_true", help="print only the JSON line")
    guard.add_argument("--quiet", action="store_true", help="no progress bar")
    guard.set_defaults(func=cmd_eval_guard)

    mcq = evaluate.add_parser(
        "mcq", help="WMDP/MMLU multiple-choice accuracy with and without ECO (resumable)"
    )
    mcq.add_argument("--data-dir", default=None)
    mcq.add_argument(
        "--out",
        default="eco-mcq",
        help="folder for results.jsonl (resume point), mcq.json and the fitted guard",
    )
    mcq.add_argument(
        "--model", default=None, help="model folder or hub id (default: embedded SmolLM2)"
    )
    mcq.add_argument(
        "--guard",
        default=None,
        help="guard folder (with policy.json); default: fit the WMDP protocol guard",
    )
    mcq.add_argument(
        "--limit", type=int, default=None, help="questions per set (default 400 WMDP + 400 MMLU)"
    )
    mcq.add_argument(
        "--full", action="store_true", help="every WMDP test question and all of MMLU test"
    )
    mcq.add_argument(
        "--n-wmdp", type=int, default=None, help="WMDP questions (overrides --limit for WMDP)"
    )
    mcq.add_argument(
        "--n-mmlu", type=int, default=None, help="MMLU questions (overrides --limit for MMLU)"
    )
    mcq.add_argument(
        "--n-close",
        type=int,
        default=None,
        help="of the MMLU questions, how many from the close subjects (default: half)",
    )
    mcq.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)"
    )
    mcq.add_argument(
        "--partial",
        action="store_true",
        help="score nothing: summarize the sample's questions already in results.jsonl (a run in progress or cut short)",
    )
    mcq.add_argument("--seed", type=whole_number(0), default=0)
    mcq.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="for the guard fitted when --guard is not given (default 0.01)",
    )
    mcq.add_argument(
        "--guard-param",
        action="append",
        metavar="NAME=VALUE",
        help="PromptGuard hyperparameter of the WMDP protocol guard fitted when --guard is not given (repeatable)",
    )
    mcq.add_argument(
        "--encoder",
        default=None,
        help="sentence encoder of the WMDP protocol guard fitted when --guard is not given: "
        "a sentence-transformers folder or all-mpnet-base-v2 (default: all-MiniLM-L6-v2)",
    )
    mcq.add_argument("--batch-size", type=int, default=8)
    mcq.add_argument(
        "--letters",
        default="space",
        choices=LETTER_VARIANTS,
        help="score ' A'..' D' (space) or 'A'..'D' (plain)",
    )
    mcq.add_argument("--corruption", default=None, help="override the policy's corruption name")
    mcq.add_argument("--dims", type=int, default=None)
    mcq.add_argument("--strength", type=float, default=None)
    mcq.add_argument("--json", action="store_true")
    mcq.add_argument("--quiet", action="store_true")
    mcq.set_defaults(func=cmd_eval_mcq)

    from ..tofu.cli import add_eval_tofu

    add_eval_tofu(evaluate)

    calibrate = subparsers.add_parser(
        "calibrate", help="choose ECO settings from data"
    ).add_subparsers(dest="calibrate_command", required=True)
    strength = calibrate.add_parser(
        "strength", help="zeroth-order search of the corruption strength toward a target value"
    )
    from ..strength import add_arguments

    add_arguments(strength)
    strength.set_defaults(func=cmd_calibrate_strength)
