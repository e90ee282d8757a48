"""The ``eco`` command line.

Commands that produce figures print one JSON object as their last line (with ``--json``) so
scripts can read them; progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ._console import parse_guard_params, print_json, whole_number
from ._files import numbered_json_rows, read_utf8
from ._validation import validation_problems
from .config import SELECTORS
from .exceptions import ECOError, InvalidInputError

if TYPE_CHECKING:
    from .config import ECOPolicy, SelectionConfig
    from .encoder import SentenceEncoder
    from .guard import ScoreParts


def read_examples(path: str | Path) -> list[str]:
    """Texts from a file: plain text (one per line), JSON Lines, or CSV.

    JSONL rows give their ``text`` field, or both ``question`` and ``answer`` (the guard learns
    from the knowledge as well as the questions). CSV files use a ``text`` column when there is
    one, else ``question`` and ``answer`` columns as JSONL does, else every row of a one-column
    file without a header; several columns without those names are refused.
    """
    file = Path(path)
    expected = "a file of examples (txt, jsonl or csv)"
    content = read_utf8(file, expected=expected)
    suffix = file.suffix.lower()
    texts: list[str] = []
    if suffix in (".jsonl", ".json"):
        # JSON Lines, or one JSON array, as the other readers take
        for n, row in numbered_json_rows(content, file, expected=expected):
            if isinstance(row, str):
                texts.append(row)
            elif isinstance(row, dict) and isinstance(row.get("text"), str):
                texts.append(row["text"])
            elif isinstance(row, dict) and any(
                isinstance(row.get(k), str) for k in ("question", "answer")
            ):
                texts.extend(row[k] for k in ("question", "answer") if isinstance(row.get(k), str))
            else:
                msg = f"{file}:{n} has no 'text' (or 'question'/'answer') string field."
                raise InvalidInputError(msg)
    elif suffix == ".csv":
        rows = list(csv.reader(io.StringIO(content, newline="")))
        header = rows[0] if rows else []
        if "text" in header:
            col = header.index("text")
            texts = [r[col] for r in rows[1:] if len(r) > col]
        elif "question" in header or "answer" in header:
            cols = [header.index(k) for k in ("question", "answer") if k in header]
            texts = [r[c] for r in rows[1:] for c in cols if len(r) > c]
        elif max((len(r) for r in rows), default=0) > 1:
            # Which column holds the examples is a guess, and a wrong one fits the guard on
            # labels or ids (with the header row as one more example).
            msg = (
                f"{file} has several columns and none is named 'text', 'question' or 'answer' "
                f"(first row: {', '.join(repr(c) for c in header[:5])}); name the column of "
                "examples 'text' in a header row."
            )
            raise InvalidInputError(msg)
        else:
            texts = [r[0] for r in rows if r]
    else:
        texts = content.splitlines()
    texts = [t.strip() for t in texts if t.strip()]
    if suffix not in (".jsonl", ".json", ".csv"):
        _check_plain_lines(file, texts)
    if not texts:
        msg = f"{file} holds no examples."
        raise InvalidInputError(msg)
    return texts


# -- commands ------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from ._table import wrapped_table
    from .demo import run_demo

    rows = run_demo(
        max_new_tokens=args.max_new_tokens,
        show_progress=not args.quiet,
        restore_prompt_words=args.restore_prompt_words,
    )
    seconds = rows.pop()["seconds"]
    table = [
        [r["prompt"], "yes" if r["flagged"] else "no", f"{r['score']:.3f}", r["plain"], r["eco"]]
        for r in rows
    ]
    print(
        wrapped_table(
            ["prompt", "flagged", "score", "plain model", "ECO"], table, [26, 7, 5, 40, 40]
        )
    )
    flagged = [r for r in rows if r["flagged"]]
    summary = {
        "prompts": len(rows),
        "flagged": len(flagged),
        "benign_identical": all(r["plain"] == r["eco"] for r in rows if not r["flagged"]),
        "flagged_changed": sum(r["plain"] != r["eco"] for r in flagged),
        "seconds": round(seconds, 1),
    }
    print_json(summary) if args.json else print(
        f"\n{summary['flagged']} of {summary['prompts']} prompts flagged; demo took {summary['seconds']} s"
    )
    return 0


def cmd_guard_fit(args: argparse.Namespace) -> int:
    from .encoder import SentenceEncoder
    from .guard import Guard, saved_encoder_precision

    # Set by their own options: --target-fpr, --knowledge.
    params = parse_guard_params(
        args.guard_param, reserved={"target_fpr", "knowledge", "near_misses"}
    )
    if args.only_terms and not args.terms:
        msg = "--only-terms uses --terms alone, but no --terms were given; pass --terms NAME ... or drop --only-terms."
        raise InvalidInputError(msg)
    forget, retain = read_examples(args.forget), read_examples(args.retain)
    general = read_examples(args.general) if args.general else []
    out = Path(args.out)
    existing = (out / "manifest.json").is_file()
    # A folder being extended keeps the precision it was fit with unless told otherwise (and
    # Guard.load refuses a different one by name); a new one is float32 unless told otherwise.
    precision = args.encoder_precision or saved_encoder_precision(out)
    encoder = (
        SentenceEncoder(args.encoder, precision=precision)
        if args.encoder or args.encoder_precision
        else None
    )
    guard = Guard.load(out, encoder=encoder) if existing else Guard(encoder, guard_id=args.guard_id)
    if existing and args.guard_id is not None and args.guard_id != guard.guard_id:
        msg = (
            f"{out} is guard {guard.guard_id!r}; --guard-id names a new guard only (decision "
            "records carry the id). Drop --guard-id, or pass a new --out folder."
        )
        raise InvalidInputError(msg)
    if args.target in guard.targets and not args.replace:
        msg = f"{out} already has target {args.target!r}; pass --replace to re-fit it."
        raise InvalidInputError(msg)
    logging.getLogger(__name__).info(
        "fitting %s on %d forget / %d retain / %d general texts",
        args.target,
        len(forget),
        len(retain),
        len(general),
    )
    guard.add_target(
        args.target,
        forget,
        retain,
        general=general,
        terms=args.terms or (),
        mine_terms=not args.only_terms,
        target_fpr=args.target_fpr,
        show_progress=True,
        knowledge=args.knowledge,
        near_misses=args.knowledge,
        **params,
    )
    guard.save(out)
    summary = {
        "out": str(out),
        "guard_id": guard.guard_id,
        "version": guard.version,
        "targets": guard.summary(),
    }
    print_json(summary)
    return 0


def _check_plain_lines(file: Path, lines: list[str]) -> None:
    """A text file is one example per line: refuse one that holds JSON rows or a CSV table,
    which would be fit raw (the braces and field names, or the header row, as examples)."""
    if not lines:
        return
    if all(line.startswith("{") and line.endswith("}") for line in lines):
        msg = f"{file} holds JSON objects, one per line; name it .jsonl to read their 'text' (or 'question'/'answer') fields."
        raise InvalidInputError(msg)
    header = [c.strip().strip('"').lower() for c in lines[0].split(",")]
    # A header is column names only ("id,text"): a sentence that starts "Text, in short, ..."
    # has words with spaces between its commas.
    names_only = all(re.fullmatch(r"[a-z_][a-z0-9_]*", c) for c in header)
    named = "text" in header or bool({"question", "answer"} & set(header))
    if len(lines) > 1 and names_only and named and (header == ["text"] or len(header) > 1):
        msg = f"{file} starts with a CSV header ({lines[0][:60]!r}); name it .csv to read that column."
        raise InvalidInputError(msg)


def _score_input(text: str | bytes) -> tuple[str | None, str | None]:
    """One input as (text, None) when it can be scored, or (None, why not)."""
    from ._prompting import check_encodable

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, f"not valid UTF-8 (byte {err.start}); send UTF-8 text"
    if "\x00" in text:
        return None, "holds NUL bytes (UTF-16 input?); send UTF-8 text"
    if not text.strip():
        return None, "blank line: nothing to score"
    try:
        check_encodable(text, "This input")  # e.g. an argument that was not valid UTF-8
    except InvalidInputError as err:
        return None, str(err)
    return text, None


def cmd_guard_score(args: argparse.Namespace) -> int:
    """One record per input (argument or stdin line), numbered from 1; blank or invalid ones get an error record."""
    from .guard import Guard

    if args.guard_option is not None:
        # With --guard, the first positional word is a text, not the folder.
        args.text = [args.guard, *args.text] if args.guard is not None else list(args.text)
        args.guard = args.guard_option
    if args.guard is None:
        msg = (
            "No guard folder: pass it first (eco guard score GUARD [TEXT ...]) or as --guard GUARD."
        )
        raise InvalidInputError(msg)
    guard = Guard.load(args.guard)
    # stdin as bytes, each line decoded on its own: one undecodable line does not lose the others.
    raw: list[str | bytes] = (
        list(args.text) if args.text else [line.rstrip(b"\r\n") for line in sys.stdin.buffer]
    )
    if not raw:
        msg = "No text to score: pass TEXT arguments or pipe one text per line on stdin."
        raise InvalidInputError(msg)
    inputs = [_score_input(item) for item in raw]
    scorable = [t for t, _ in inputs if t is not None]
    decisions = iter(guard.decide_many(scorable) if scorable else [])
    errors = 0
    for line, (text, problem) in enumerate(inputs, 1):
        if problem is not None:
            errors += 1
            print_json({"line": line, "error": problem}) if args.json else print(
                f"{line:>5}  error    {problem}"
            )
            continue
        decision = next(decisions)
        if args.json:
            print_json(
                {
                    "line": line,
                    "flagged": decision.flagged,
                    "score": decision.score,
                    "threshold": decision.threshold,
                    "target": decision.target,
                    "guard_id": decision.guard_id,
                    "guard_version": decision.guard_version,
                }
            )
        else:
            print(
                f"{line:>5}  {'FLAGGED' if decision.flagged else 'ok':7}  {decision.score:.4f}  {decision.target or '-':20}  {text}"
            )
    return 1 if errors else 0


def cmd_guard_add_target(args: argparse.Namespace) -> int:
    args.out = args.folder
    return cmd_guard_fit(args)


def _encoder_for_folder(path: str | None, folder: Path) -> SentenceEncoder | None:
    """The ``--encoder`` folder as an encoder in the precision the guard folder was fit with,
    or None (the guard's own) when no folder was given."""
    from .encoder import SentenceEncoder  # the runtime import of the typing name
    from .guard import saved_encoder_precision

    return SentenceEncoder(path, precision=saved_encoder_precision(folder)) if path else None


def cmd_guard_remove_target(args: argparse.Namespace) -> int:
    from .guard import Guard

    folder = Path(args.folder)
    guard = Guard.load(folder, encoder=_encoder_for_folder(args.encoder, folder))
    guard.remove_target(args.target)
    guard.save(folder)  # renumbers the rest and deletes the removed target's files
    print_json(
        {
            "out": str(folder),
            "guard_id": guard.guard_id,
            "version": guard.version,
            "removed": args.target,
            "targets": guard.summary(),
        }
    )
    return 0


def cmd_guard_eval(args: argparse.Namespace) -> int:
    from .research.eval.guard_eval import tofu_guard_protocol

    task = args.task
    if not task.startswith("tofu-"):
        msg = f"`eco guard eval` runs the TOFU protocol (tofu-forget01/05/10); for {task!r} use `eco eval guard --task {task}`."
        raise InvalidInputError(msg)
    metrics, _, _ = tofu_guard_protocol(
        task.removeprefix("tofu-"),
        args.data_dir,
        seed=args.seed,
        target_fpr=args.target_fpr,
        show_progress=True,
        params=parse_guard_params(args.guard_param, reserved={"target_fpr"}),
    )
    if not args.json:
        for key in (
            "tpr",
            "paraphrase_tpr",
            "fpr",
            "fpr_real_authors",
            "fpr_world_facts",
            "auroc",
            "threshold",
        ):
            print(f"{key:18} {metrics[key]:.4f}")
    print_json(metrics)
    return 0


def _explain_selection(policy: ECOPolicy, selector: str | None, n: int | None) -> SelectionConfig:
    """The policy's selector, or the one named on the command line (keeping the policy's terms)."""
    from pydantic import ValidationError

    from .config import SelectionConfig

    if selector is None and n is None:
        return policy.selection
    name = selector or policy.selection.name
    try:
        return SelectionConfig(name=name, n=n, terms=policy.selection.terms)
    except ValidationError as err:
        msg = f"Bad --selector/--n: {validation_problems(err)}"
        raise InvalidInputError(msg) from None


_PART_LABELS = {
    "bias": "bias",
    "embedding": "sentence embedding",
    "word_ngrams": "word n-grams",
    "char_ngrams": "character n-grams",
    "nearest_example": "nearest example",
}


def _describe_score_parts(parts: ScoreParts) -> str:
    """The score's log-odds, block by block, as an operator reads them."""
    total = sum(parts.log_odds.values())
    terms = ", ".join(f"{_PART_LABELS.get(k, k)} {v:+.2f}" for k, v in parts.log_odds.items())
    head = f"learned score of target {parts.target}: {parts.learned:.4f} (threshold {parts.threshold:.4f})"
    lines = [f"{head}; its log-odds: {terms}; sum {total:+.2f}"]
    if parts.score != parts.learned:
        lines.append(f"the knowledge rules made it {parts.score:.4f}")
    if parts.nearest_forget_cosine is not None and parts.nearest_retain_cosine is not None:
        lines.append(
            f"nearest fit texts: cosine {parts.nearest_forget_cosine:.3f} to a forget one, "
            f"{parts.nearest_retain_cosine:.3f} to a retain one"
        )
    if parts.passage is not None:
        lines.append(f"scored on the passage: {parts.passage!r}")
    return "\n".join(lines)


def cmd_guard_explain(args: argparse.Namespace) -> int:
    """The guard's decision on one prompt, and the prompt's tokens with the corrupted ones marked."""
    from .config import ECOPolicy
    from .demo import fit_demo_guard
    from .engine import ECO
    from .guard import Guard

    if args.guard:
        folder = Path(args.guard)
        guard = Guard.load(folder, encoder=_encoder_for_folder(args.encoder, folder))
        policy = ECOPolicy.load(folder) if (folder / "policy.json").is_file() else ECOPolicy()
    else:
        if args.encoder:
            msg = "--encoder says how a --guard folder's guard embeds; the demo guard (no --guard) has its own. Give --guard DIR or drop --encoder."
            raise InvalidInputError(msg)
        guard, policy = fit_demo_guard(), ECOPolicy()
    selection = _explain_selection(policy, args.selector, args.n)
    eco = ECO.from_pretrained(args.model, guard=guard, policy=policy)
    explanation = eco.explain(args.prompt, selection=selection, raw=args.raw)
    decision = explanation.decision
    corrupted = [
        {"index": t.index, "token": t.text, "start": t.start, "end": t.end}
        for t in explanation.corrupted_tokens
    ]
    if not args.json:
        score = "-" if decision.score is None else f"{decision.score:.4f}"
        threshold = "-" if decision.threshold is None else f"{decision.threshold:.4f}"
        print(
            f"decision: flagged={decision.flagged} score={score} threshold={threshold} "
            f"target={decision.target or '-'} corrupted={decision.corrupted} mode={decision.mode}"
        )
        if decision.flagged:
            print(
                f"knowledge match: {explanation.knowledge_match or 'none (the classifier alone)'}"
            )
        elif explanation.knowledge_match is not None:  # a namesake, capped below the threshold
            print(f"knowledge match: {explanation.knowledge_match}")
        if explanation.score_parts is not None:
            print(_describe_score_parts(explanation.score_parts))
        print(f"selector: {selection.name}" + (f" (n={selection.n})" if selection.n else ""))
        if explanation.terms:
            print(f"terms ({len(explanation.terms)}): {'; '.join(explanation.terms)}")
        print(f"{len(corrupted)} of {len(explanation.tokens)} prompt tokens corrupted, in [[ ]]:")
        print(explanation.marked_text())
    print_json(
        {
            "decision": decision.event_payload(),
            "knowledge_match": explanation.knowledge_match,
            "score_parts": None
            if explanation.score_parts is None
            else explanation.score_parts.model_dump(),
            "selector": selection.name,
            "terms": list(explanation.terms),
            "prompt_tokens": len(explanation.tokens),
            "corrupted_tokens": corrupted,
        }
    )
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .config import GenerationConfig
    from .demo import fit_demo_guard
    from .engine import ECO

    eco = ECO.from_pretrained(args.model, guard=args.guard or fit_demo_guard(), mode=args.mode)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    history: list[dict[str, str]] = []
    print("ECO chat: type a message, or 'exit' to quit.", file=sys.stderr)
    for line in _input_lines():
        text = line.strip()
        if text in ("exit", "quit"):
            break
        if not text:
            continue
        history.append({"role": "user", "content": text})
        try:
            stream = eco.stream(history, config=config)
        except InvalidInputError as err:
            # One bad line (e.g. bytes that are not UTF-8) should not end the conversation.
            history.pop()
            print(f"[skipped this message: {err}]", file=sys.stderr)
            continue
        d = stream.decision
        print(
            f"[decision: flagged={d.flagged} score={d.score if d.score is None else round(d.score, 4)} target={d.target} mode={d.mode}]"
        )
        reply = ""
        for chunk in stream:
            reply += chunk
            print(chunk, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": reply})
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ._models import available_models

    rows = available_models()
    if not args.json:
        for row in rows:
            state = "installed" if row["installed"] else f"not installed ({row['install']})"
            print(f"{row['name']:24} {state}\n{'':24} {row['description']}")
            if "sha256" in row:
                print(f"{'':24} sha256 {row['sha256']}; licence: {row['license']}")
    print_json({"models": rows})
    return 0


def _input_lines() -> Iterator[str]:
    """Lines typed at a prompt (interactive) or piped on stdin, until EOF."""
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:
            return


def _fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--forget", required=True, help="texts about what to forget: questions, answers, facts"
    )
    parser.add_argument("--retain", required=True, help="texts the model must keep answering")
    parser.add_argument(
        "--general",
        help="benign texts of any subject (an FAQ): they train the guard, but the false-positive "
        "rate the threshold is set at is counted on --retain alone",
    )
    parser.add_argument("--target", required=True, help="name of the forget target")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument(
        "--terms", nargs="*", help="names/titles to corrupt with the entities selector"
    )
    parser.add_argument(
        "--only-terms",
        action="store_true",
        help="use --terms alone: mine no terms from the texts",
    )
    parser.add_argument(
        "--knowledge",
        action="store_true",
        help="also index forget-only phrases (titles, awards, recurring names) and fit on "
        "near-miss names (README: What the guard knows)",
    )
    parser.add_argument(
        "--guard-param",
        action="append",
        metavar="NAME=VALUE",
        help="PromptGuard hyperparameter (repeatable), e.g. C=100 or embedding_weight=0.3 for a technical topic",
    )
    parser.add_argument(
        "--encoder", help="a sentence-transformers folder (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument(
        "--encoder-precision",
        choices=["float32", "bfloat16"],
        default=None,
        help="the encoder's matmul precision for a new guard (default float32; a folder being "
        "extended keeps its own). On a CPU with bfloat16 support it scores batches about twice "
        "as fast (README: Measured); its threshold is fit in bfloat16 too",
    )
    parser.add_argument("--guard-id", help="id for a new guard (default: random)")
    parser.add_argument(
        "--replace", action="store_true", help="re-fit a target that already exists"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eco", description="ECO unlearning: guard, corrupt, generate."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="forget Harry Potter on the embedded model and show plain vs ECO"
    )
    demo.add_argument("--max-new-tokens", type=whole_number(1), default=48)
    demo.add_argument("--json", action="store_true", help="end with a JSON summary line")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument(
        "--restore-prompt-words",
        action="store_true",
        help="write the prompt's names back where an answer repeats the invented ones the model "
        "read in their place (ECOPolicy(restore_prompt_words=True))",
    )
    demo.set_defaults(func=cmd_demo)

    guard = sub.add_parser("guard", help="fit, score and evaluate guards").add_subparsers(
        dest="guard_command", required=True
    )
    fit = guard.add_parser("fit", help="fit a forget target from example files (txt, jsonl or csv)")
    fit.add_argument(
        "--out", required=True, help="guard folder (created, or extended with a new target)"
    )
    _fit_arguments(fit)
    fit.set_defaults(func=cmd_guard_fit)

    score = guard.add_parser(
        "score",
        help="score texts (arguments, or one per line on stdin); exit 1 if any input had an error record",
    )
    score.add_argument(
        "guard",
        nargs="?",
        default=None,
        help="guard folder (written by eco guard fit); or give it with --guard, as explain takes it",
    )
    score.add_argument("text", nargs="*", help="texts to score (none: one per line on stdin)")
    score.add_argument(
        "--guard",
        dest="guard_option",
        default=None,
        metavar="GUARD",
        help="guard folder, in place of the first argument",
    )
    score.add_argument(
        "--json", action="store_true", help="one JSON object per input, with its line number"
    )
    score.set_defaults(func=cmd_guard_score, extra_args_are_texts=True)

    add = guard.add_parser(
        "add-target",
        help="fit one more target into a guard folder; the other targets' files stay byte-identical",
    )
    add.add_argument("folder", help="guard folder (created if missing)")
    _fit_arguments(add)
    add.set_defaults(func=cmd_guard_add_target)

    remove = guard.add_parser("remove-target", help="remove a target from a guard folder")
    remove.add_argument("folder", help="guard folder")
    remove.add_argument("--target", required=True, help="name of the target to remove")
    remove.add_argument(
        "--encoder",
        help="the sentence-transformers folder the guard was fit with (default: all-MiniLM-L6-v2)",
    )
    remove.set_defaults(func=cmd_guard_remove_target)

    explain = guard.add_parser(
        "explain",
        help="show a prompt's decision and its tokens, the ones corruption touches in [[ ]]",
    )
    explain.add_argument("prompt", help="the user's message (or, with --raw, the model input)")
    explain.add_argument(
        "--guard", default=None, help="guard folder (default: the demo's Harry Potter guard)"
    )
    explain.add_argument(
        "--model", default=None, help="model folder or name (default: embedded SmolLM2)"
    )
    explain.add_argument(
        "--selector",
        choices=SELECTORS,
        default=None,
        help="token selector to show (default: the guard folder's policy, else the default policy)",
    )
    explain.add_argument("--n", type=int, default=None, help="for --selector first_n: how many")
    explain.add_argument(
        "--raw", action="store_true", help="the prompt is the literal model input (no template)"
    )
    explain.add_argument(
        "--encoder",
        help="the sentence-transformers folder the guard was fit with (default: all-MiniLM-L6-v2)",
    )
    explain.add_argument("--json", action="store_true", help="print only the JSON line")
    explain.set_defaults(func=cmd_guard_explain)

    evaluate = guard.add_parser("eval", help="the TOFU guard protocol on local data")
    evaluate.add_argument(
        "--task",
        default="tofu-forget10",
        choices=["tofu-forget01", "tofu-forget05", "tofu-forget10"],
    )
    evaluate.add_argument(
        "--data-dir", default=None, help="folder with tofu/ (default: the Hugging Face hub)"
    )
    evaluate.add_argument("--seed", type=whole_number(0), default=0)
    evaluate.add_argument("--target-fpr", type=float, default=0.01)
    evaluate.add_argument(
        "--guard-param",
        action="append",
        metavar="NAME=VALUE",
        help="update the protocol's PromptGuard parameters (repeatable), e.g. knowledge=false",
    )
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_guard_eval)

    chat = sub.add_parser("chat", help="interactive chat showing each turn's decision")
    chat.add_argument(
        "--model", default=None, help="model folder or hub id (default: embedded SmolLM2)"
    )
    chat.add_argument(
        "--guard", default=None, help="guard folder (default: the demo's Harry Potter guard)"
    )
    chat.add_argument("--mode", default="enforce", choices=["enforce", "shadow", "off"])
    chat.add_argument("--max-new-tokens", type=whole_number(1), default=128)
    chat.set_defaults(func=cmd_chat)

    models = sub.add_parser(
        "models", help="list the models loadable by name (ECO.from_pretrained(NAME), --model NAME)"
    )
    models.add_argument("--json", action="store_true", help="print only the JSON line")
    models.set_defaults(func=cmd_models)

    from .research.eval import cli as eval_cli
    from .research.tofu.cli import register_finetune
    from .serving import cli as serving_cli

    eval_cli.register(sub)
    register_finetune(sub)
    serving_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(argv) if argv is not None else sys.argv[1:]
    parser = build_parser()
    args, extra = parser.parse_known_args(words)
    if (
        extra
        and getattr(args, "extra_args_are_texts", False)
        and not any(e.startswith("-") for e in extra)
    ):
        args.text = [*args.text, *extra]  # `eco guard score DIR --json TEXT`: texts after the flags
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Commands that publish results record how they were run (quoted: a path may hold a space).
    args.command_line = shlex.join(["eco", *words])
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        # Every command's --out is a folder; finding a file there only at the end would lose the run.
        print(
            f"eco: error: --out {out} is a file; --out takes a folder (created if missing).",
            file=sys.stderr,
        )
        return 2
    try:
        return int(args.func(args))
    except ECOError as err:
        print(f"eco: error: {err}", file=sys.stderr)
        return 2
    except ValidationError as err:
        # A value that reached a settings model unchecked: name its field and rule, not a traceback.
        print(
            f"eco: error: invalid {err.title} setting: {validation_problems(err)}.", file=sys.stderr
        )
        return 2
    except OSError as err:
        # The file system refused (a read-only folder, a full disk): what and where, not a
        # traceback. What was written before it stays (every save is atomic).
        where = f" ({err.filename})" if err.filename else ""
        print(f"eco: error: {err.strerror or err}{where}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Runs that take long write as they go (results.jsonl, strength points, checkpoints):
        # the same command resumes.
        print(
            "eco: interrupted (a long run resumes from what it saved when the same command is run again).",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
