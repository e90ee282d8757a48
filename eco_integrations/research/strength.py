"""Offline choice of the corruption strength: the paper's zeroth-order (finite-difference) search.

The objective ``f(strength)`` is a metric of the model on *corrupted* forget prompts (e.g.
multiple-choice accuracy); the search drives it toward a target value (e.g. chance, 0.25, the
accuracy of a model that never learned the data) by descending the squared gap
``L(s) = (f(s) - target)^2``.

Differences from the reference implementation (which descends on the raw metric with a fixed
step ``eps`` in strength units and divides by ``2 * eps`` even when the lower point was clipped):

* the search runs on ``log10(strength)``: strengths that matter span 1 to 1e6, and a fixed
  relative step stays informative at every scale (a fixed absolute step does not);
* the finite difference divides by the *actual* width between the two points evaluated, so a
  lower point clipped at the bound gives a correct one-sided slope;
* every point, step and the strength itself stay inside ``[min_strength, max_strength]``, and a
  single update moves at most ``max_move`` decades;
* the best point evaluated (smallest gap) is returned, not merely the last, and the search
  stops as soon as a point is within ``tol`` of the target.

With the engine's per-text noise seeds, both points of a difference see the same noise draws
(common random numbers), so the difference measures the strength, not the resampling.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from .._console import whole_number
from .._files import appending, check_text_rows, read_json_rows, write_text_atomic
from .._validation import validation_problems
from ..config import SELECTORS, CorruptionConfig, ECOPolicy, GenerationConfig, SelectionConfig
from ..corruption import get_corruption
from ..engine import ECO
from ..exceptions import ConfigurationError, InvalidInputError
from .never_learned import (
    Kind,
    NeverLearnedReport,
    References,
    choose_without_leak,
    counterfactual,
    find_terms,
    gap,
    measure,
    plain_answers,
    references,
)
from .tofu.metrics import rouge_l_f1

log = logging.getLogger(__name__)
Objective = Callable[[float], float]


@dataclass
class SearchStep:
    """One iteration: the two points evaluated, the slope, and where the strength moved."""

    step: int
    strength: float
    lower: float
    upper: float
    f_lower: float
    f_upper: float
    slope: float
    next_strength: float


@dataclass
class SearchResult:
    strength: float
    value: float
    gap: float
    target: float
    converged: bool
    steps: list[SearchStep] = field(default_factory=list)
    evaluations: dict[float, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            "value": self.value,
            "gap": self.gap,
            "target": self.target,
            "converged": self.converged,
            "steps": [asdict(s) for s in self.steps],
            "evaluations": [
                {"strength": s, "value": v} for s, v in sorted(self.evaluations.items())
            ],
        }


def zeroth_order_search(
    objective: Objective,
    *,
    target: float,
    init: float = 100.0,
    eps: float = 0.25,
    lr: float = 20.0,
    min_strength: float = 1e-2,
    max_strength: float = 1e7,
    max_steps: int = 10,
    max_move: float = 1.0,
    tol: float = 0.01,
    on_step: Callable[[SearchStep], None] | None = None,
) -> SearchResult:
    """Finite-difference descent of ``(objective(s) - target)^2`` over ``log10(s)``.

    ``eps`` and ``max_move`` are in decades (log10 units); ``lr`` scales the slope of the
    squared gap per decade. Objective values are cached, so revisited points cost nothing.
    """
    if not 0 < min_strength < max_strength or not math.isfinite(max_strength):
        msg = f"Need 0 < min_strength < max_strength < inf, got {min_strength} and {max_strength}."
        raise ConfigurationError(msg)
    if not min_strength <= init <= max_strength:
        msg = f"The initial strength {init} lies outside [{min_strength}, {max_strength}]; pick one inside."
        raise ConfigurationError(msg)
    if eps <= 0 or lr <= 0 or max_move <= 0 or max_steps < 1 or tol < 0:
        msg = "eps, lr and max_move must be > 0, max_steps >= 1 and tol >= 0."
        raise ConfigurationError(msg)
    lo, hi = math.log10(min_strength), math.log10(max_strength)
    cache: dict[float, float] = {}

    def f(x: float) -> float:
        s = float(10.0**x)
        if s not in cache:
            value = float(objective(s))
            if not math.isfinite(value):
                msg = f"The objective returned {value} at strength {s}; it must return a finite number."
                raise InvalidInputError(msg)
            cache[s] = value
            log.info("objective(strength=%.4g) = %.4f", s, value)
        return cache[s]

    def best() -> tuple[float, float]:
        s = min(cache, key=lambda k: (abs(cache[k] - target), k))
        return s, cache[s]

    x = math.log10(init)
    steps: list[SearchStep] = []
    for step in range(1, max_steps + 1):
        x_up, x_down = min(x + eps, hi), max(x - eps, lo)
        if x_up <= x_down:
            break
        f_up, f_down = f(x_up), f(x_down)
        # The actual width: when a point is clipped at a bound the slope is one-sided, not halved.
        slope = ((f_up - target) ** 2 - (f_down - target) ** 2) / (x_up - x_down)
        move = float(np.clip(-lr * slope, -max_move, max_move))
        x_next = float(np.clip(x + move, lo, hi))
        record = SearchStep(
            step, 10.0**x, 10.0**x_down, 10.0**x_up, f_down, f_up, slope, 10.0**x_next
        )
        steps.append(record)
        log.info(
            "step %d: strength %.4g, f(%.4g)=%.4f, f(%.4g)=%.4f, slope %.4g -> %.4g",
            step,
            record.strength,
            record.lower,
            f_down,
            record.upper,
            f_up,
            slope,
            record.next_strength,
        )
        if on_step is not None:
            on_step(record)
        if abs(best()[1] - target) <= tol:
            break
        if x_next == x:
            # No slope to follow (a flat objective) or pinned at a bound: evaluate here and stop.
            f(x)
            break
        x = x_next
    s, value = best()
    return SearchResult(
        s, value, abs(value - target), target, abs(value - target) <= tol, steps, dict(cache)
    )


# -- built-in objectives ----------------------------------------------------------------------
def with_strength(eco: ECO, strength: float) -> ECO:
    """A copy of ``eco`` (same backend and guard) whose corruption has ``strength``."""
    corruption = eco.policy.corruption.model_copy(update={"strength": float(strength)})
    policy = eco.policy.model_copy(update={"corruption": corruption})
    return eco.replace(policy=policy, mode="enforce")


def mcq_accuracy_objective(
    eco: ECO, questions: Sequence[dict[str, Any]], *, letters: str = "space"
) -> Objective:
    """Accuracy on ``questions`` (WMDP-style rows) with every prompt corrupted at the given strength."""
    from .eval.mcq import letter_token_ids, mcq_prompt

    if not questions:
        msg = "The MCQ objective needs at least one calibration question."
        raise InvalidInputError(msg)
    ids = letter_token_ids(eco.backend.tokenizer, letters)
    prompts = [mcq_prompt(q) for q in questions]
    answers = np.array([q["answer"] for q in questions])

    def objective(strength: float) -> float:
        engine = with_strength(eco, strength)
        logits, _ = engine.next_token_logits(
            prompts, raw=True, decisions=engine.forced_decisions(prompts)
        )
        return float(np.mean(logits[:, ids].argmax(-1).numpy() == answers))

    return objective


def similarity_objective(
    eco: ECO, prompts: Sequence[str], references: Sequence[str], *, max_new_tokens: int = 32
) -> Objective:
    """Mean ROUGE-L F1 of greedy answers to ``prompts`` (all corrupted) against ``references``.

    With the forget set's reference answers, a target near the similarity a never-trained
    model reaches (e.g. measured on a retain-only model, or 0.0) asks for answers that no
    longer reproduce the knowledge.
    """
    if not prompts or len(prompts) != len(references):
        msg = f"The similarity objective needs one reference per prompt, got {len(prompts)} prompts and {len(references)} references."
        raise InvalidInputError(msg)
    config = GenerationConfig(max_new_tokens=max_new_tokens)

    def objective(strength: float) -> float:
        engine = with_strength(eco, strength)
        texts = [engine.classified_text(p) for p in prompts]
        outs = engine.generate(
            list(prompts), config=config, decisions=engine.forced_decisions(texts)
        )
        return float(
            np.mean([rouge_l_f1(o.text, r) for o, r in zip(outs, references, strict=True)])
        )

    return objective


DEFAULT_FIRST_N = 4
"""Content tokens the ``first_n`` selector corrupts when neither ``--first-n`` nor the folder's
policy says."""

LEAK_PENALTY = 10.0
"""Added per unit of leak rate to the never-learned objective: any leak outweighs the gap of every
plausible clean setting, so the search walks away from leaking strengths (the choice itself
rejects them outright, see :func:`choose_without_leak`)."""


def _guard_encoder(eco: ECO) -> Any:
    if eco.guard is None:
        msg = "The never-learned objective needs a guard (its encoder scores the answers)."
        raise InvalidInputError(msg)
    return eco.guard.encoder


def _scoring_model(eco: ECO) -> Any:
    """The backend's torch model: fluency is its per-token likelihood of the answers."""
    model = getattr(eco.backend, "model", None)
    if model is None:
        msg = (
            f"The never-learned objective scores answers with the backend's torch model, and "
            f"{type(eco.backend).__name__} exposes none; use the transformers backend."
        )
        raise InvalidInputError(msg)
    return model


def never_learned_references(
    eco: ECO,
    prompts: Sequence[str],
    terms: dict[str, Kind],
    *,
    seed: int = 0,
    max_new_tokens: int = 32,
) -> References:
    """The plain model's answers to counterfactual twins of ``prompts`` (computed once per search)."""
    if len(prompts) < 2:
        msg = (
            f"The never-learned objective needs at least 2 flagged prompts, got {len(prompts)}; "
            "pass more forget prompts."
        )
        raise InvalidInputError(msg)
    twins = [counterfactual(p, terms, seed=seed) for p in prompts]
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    answers = plain_answers(
        eco.backend, [t.prompt for t in twins], config, batch_size=eco.batch_size
    )
    return references(
        twins,
        answers,
        model=_scoring_model(eco),
        tokenizer=eco.backend.tokenizer,
        encoder=_guard_encoder(eco),
    )


def _check_one_reference_each(prompts: Sequence[str], reference: References) -> None:
    if len(prompts) != len(reference.answers):
        msg = f"{len(prompts)} prompts for {len(reference.answers)} references; pass one each."
        raise InvalidInputError(msg)


def never_learned_report(
    eco: ECO,
    prompts: Sequence[str],
    reference: References,
    *,
    terms: Sequence[str],
    facts: Sequence[str] = (),
    max_new_tokens: int = 32,
) -> NeverLearnedReport:
    """ECO's greedy answers to ``prompts`` under ``eco``'s policy, measured against ``reference``
    (leak, fluency, on_topic, distinguishable): one setting of a grid scored from Python.

    ``prompts`` must be ones the guard flags (the references' questions, in their order): they
    are answered as served, with the guard's decisions.
    """
    _check_one_reference_each(prompts, reference)
    # The guard's own decisions, not forced ones: the entities selector corrupts the terms of
    # the target that flagged the prompt, and a forced decision names no target.
    answers = eco.generate(list(prompts), config=GenerationConfig(max_new_tokens=max_new_tokens))
    missed = [p for p, a in zip(prompts, answers, strict=True) if not a.decision.corrupted]
    if missed:
        msg = f"The guard does not flag {missed}; pass only prompts it flags (they are measured corrupted)."
        raise InvalidInputError(msg)
    return measure(
        [a.text for a in answers],
        reference,
        model=_scoring_model(eco),
        tokenizer=eco.backend.tokenizer,
        encoder=_guard_encoder(eco),
        terms=terms,
        facts=facts,
    )


class NeverLearnedObjective:
    """``gap`` of ECO's answers at a strength to the references (0 = like a stranger's answers).

    ``prompts`` must be ones the guard flags: they are answered as served, with the guard's
    decision (and so the flagging target's terms for the ``entities`` selector).

    A strength whose answers leak scores ``gap + LEAK_PENALTY * leak``; every report is kept in
    ``reports`` (by strength) so that the choice can reject leaking strengths outright.
    """

    def __init__(
        self,
        eco: ECO,
        prompts: Sequence[str],
        reference: References,
        *,
        terms: Sequence[str],
        facts: Sequence[str] = (),
        max_new_tokens: int = 32,
    ) -> None:
        _check_one_reference_each(prompts, reference)
        self.eco = eco
        self.prompts = list(prompts)
        self.reference = reference
        self.terms = list(terms)
        self.facts = list(facts)
        self.max_new_tokens = max_new_tokens
        self.reports: dict[float, NeverLearnedReport] = {}

    def __call__(self, strength: float) -> float:
        report = never_learned_report(
            with_strength(self.eco, strength),
            self.prompts,
            self.reference,
            terms=self.terms,
            facts=self.facts,
            max_new_tokens=self.max_new_tokens,
        )
        self.reports[float(strength)] = report
        return gap(report) + LEAK_PENALTY * report.leak


def chance_curve(
    objective: Objective,
    strengths: Sequence[float],
    *,
    on_point: Callable[[float, float], None] | None = None,
) -> dict[float, float]:
    """The objective at each strength, ascending (the accuracy-against-strength curve)."""
    if not strengths or any(not (math.isfinite(s) and s > 0) for s in strengths):
        msg = f"--strengths needs positive finite values, got {list(strengths)}."
        raise ConfigurationError(msg)
    curve: dict[float, float] = {}
    for strength in sorted({float(s) for s in strengths}):
        curve[strength] = float(objective(strength))
        if on_point is not None:
            on_point(strength, curve[strength])
    return curve


def choose_chance_strength(curve: dict[float, float], *, target: float, tol: float) -> SearchResult:
    """The smallest strength from which every larger strength on the curve is within ``tol`` of ``target``.

    Requiring the whole tail (not one lucky point) keeps a noisy dip near the transition from
    being chosen; without such a tail, the point closest to the target is returned, unconverged.
    """
    if not curve:
        msg = "The strength curve is empty; evaluate at least one strength."
        raise InvalidInputError(msg)
    ordered = sorted(curve)
    chosen = None
    for strength in reversed(ordered):
        if abs(curve[strength] - target) > tol:
            break
        chosen = strength
    converged = chosen is not None
    if chosen is None:
        chosen = min(ordered, key=lambda k: (abs(curve[k] - target), k))
    value = curve[chosen]
    return SearchResult(chosen, value, abs(value - target), target, converged, [], dict(curve))


def plot_chance_curve(
    curve: dict[float, float],
    path: str | Path,
    *,
    plain: float | None,
    result: SearchResult,
    title: str,
) -> Path:
    """Accuracy of the corrupted calibration questions against strength (log axis), with chance and the plain model."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(curve)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(xs, [curve[x] for x in xs], marker="o", label="ECO (corrupted prompts)")
    ax.axhline(result.target, color="grey", linestyle="--", label=f"chance ({result.target:g})")
    if plain is not None:
        ax.axhline(plain, color="tab:green", linestyle=":", label=f"plain model ({plain:.3f})")
    ax.scatter(
        [result.strength],
        [result.value],
        s=120,
        facecolors="none",
        edgecolors="tab:red",
        label=f"chosen ({result.strength:g})",
    )
    ax.set_xscale("log")
    ax.set_xlabel("corruption strength (noise std)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(textwrap.fill(title, 95), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def save_strength(folder: str | Path, policy: ECOPolicy, result: SearchResult, note: str) -> Path:
    """Write the chosen strength into ``folder/policy.json`` (read by ``ECO.from_pretrained(guard=folder)``) and the log."""
    corruption = policy.corruption.model_copy(update={"strength": float(result.strength)})
    chosen = policy.model_copy(update={"corruption": corruption, "notes": note})
    path = chosen.save(folder)
    write_text_atomic(
        Path(folder) / "strength_search.json", json.dumps(result.as_dict(), indent=2) + "\n"
    )
    return path


# -- CLI ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--guard",
        required=True,
        help="guard folder; the chosen setting is saved there as policy.json",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="for chance: sentence encoder of the WMDP protocol guard fitted into --guard when the "
        "folder holds none (a sentence-transformers folder or all-mpnet-base-v2; default: all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--objective",
        default="mcq",
        choices=["mcq", "chance", "similarity", "never-learned", "callable"],
        help="chance: WMDP accuracy on a grid of --strengths; the smallest strength from which accuracy stays within --tol of chance. never-learned: the gap of ECO's answers to --references questions (the ones the guard flags) to the plain model's answers to counterfactual twins (target 0); a setting whose answers name a guard term never wins",
    )
    parser.add_argument(
        "--selectors",
        nargs="+",
        default=None,
        metavar="SELECTOR",
        help=f"for never-learned: token selectors to search ({', '.join(SELECTORS)}; default: the folder's policy)",
    )
    parser.add_argument(
        "--corruptions",
        nargs="+",
        default=None,
        metavar="CORRUPTION",
        help="for never-learned: noise corruptions to search, each with its own strength search (default: --corruption)",
    )
    parser.add_argument(
        "--first-n",
        type=int,
        default=None,
        help="for never-learned with --selectors first_n: how many content tokens "
        f"(default: the folder policy's, when it selects first_n; else {DEFAULT_FIRST_N})",
    )
    parser.add_argument(
        "--callable",
        dest="callable_path",
        help="module:function taking (eco, strength) -> float (objective 'callable')",
    )
    parser.add_argument(
        "--target", type=float, default=None, help="target value (default: chance, 0.25, for mcq)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="for mcq: WMDP calibration questions come from the guard protocol's 20%% fit split",
    )
    parser.add_argument(
        "--references",
        help="for similarity: JSONL with question and answer fields (the forget set); for never-learned: the question fields are the forget prompts",
    )
    parser.add_argument("--n", type=int, default=64, help="calibration questions / prompts")
    parser.add_argument("--model", default=None)
    parser.add_argument(
        "--corruption",
        default=None,
        help="corruption name (default: the folder's policy, else rand_noise_first_n dims=1)",
    )
    parser.add_argument("--dims", type=int, default=None)
    parser.add_argument("--init", type=float, default=100.0, help="starting strength")
    parser.add_argument(
        "--eps", type=float, default=0.25, help="finite-difference half-width in decades"
    )
    parser.add_argument("--lr", type=float, default=20.0)
    parser.add_argument("--min-strength", type=float, default=1e-2)
    parser.add_argument("--max-strength", type=float, default=1e7)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--tol", type=float, default=0.02, help="stop when |f - target| <= tol")
    parser.add_argument("--letters", default="space", choices=["space", "plain"])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=whole_number(0), default=0)
    parser.add_argument(
        "--strengths",
        default="0.1,0.3,1,3,10,100,1e6",
        help="for chance: comma-separated strengths to evaluate",
    )
    parser.add_argument(
        "--calibrate-on",
        default="known",
        choices=["known", "flagged"],
        help="for chance: the flagged questions the plain model answers correctly (known), or all flagged ones",
    )
    parser.add_argument(
        "--plot",
        default=None,
        help="for chance: PNG of accuracy against strength (default: GUARD/strength_curve.png)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="prompts per forward pass; 1 avoids padding prompts of very different lengths (WMDP: 30 to 2,800 tokens)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="search and print, but do not write policy.json"
    )
    parser.add_argument("--json", action="store_true")


def _reference_rows(path: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """``--references`` rows, each checked to hold ``fields`` as non-empty text."""
    expected = f"a JSON Lines file of objects with {' and '.join(repr(f) for f in fields)}"
    rows = read_json_rows(path, expected=expected)
    return check_text_rows(rows, fields, where=path, fix=f"pass {expected}")


def _load_callable(path: str | None) -> Callable[[ECO, float], float]:
    if not path or ":" not in path:
        msg = "--objective callable needs --callable module:function (a function (eco, strength) -> float)."
        raise InvalidInputError(msg)
    module, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        msg = f"Cannot load {path!r} ({err}); check the module is importable and defines {name}."
        raise InvalidInputError(msg) from None
    return fn


_SEARCHED = frozenset({"mcq", "similarity", "callable", "never-learned"})
_READ_BY: dict[str, frozenset[str]] = {
    "strengths": frozenset({"chance"}),
    "encoder": frozenset({"chance"}),
    "calibrate_on": frozenset({"chance"}),
    "plot": frozenset({"chance"}),
    "selectors": frozenset({"never-learned"}),
    "corruptions": frozenset({"never-learned"}),
    "first_n": frozenset({"never-learned"}),
    "callable_path": frozenset({"callable"}),
    "references": frozenset({"similarity", "never-learned"}),
    "data_dir": frozenset({"mcq", "chance"}),
    "letters": frozenset({"mcq", "chance"}),
    "max_new_tokens": frozenset({"similarity", "never-learned"}),
    "eps": _SEARCHED,
    "lr": _SEARCHED,
    "min_strength": _SEARCHED,
    "max_strength": _SEARCHED,
    "max_steps": _SEARCHED,
}
"""The objectives that read each objective-specific option of ``eco calibrate strength``."""


def check_cli_options(args: argparse.Namespace) -> None:
    """Refuse, before any model or guard work, an option the objective would ignore or a value
    out of range: an ignored ``--strengths`` used to start a search the user did not ask for."""
    defaults = argparse.ArgumentParser(add_help=False)
    add_arguments(defaults)
    ignored = [
        name
        for name, readers in _READ_BY.items()
        if args.objective not in readers and getattr(args, name) != defaults.get_default(name)
    ]
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-").replace("-path", "") for name in ignored)
        readers = sorted(set().union(*(_READ_BY[name] for name in ignored)))
        msg = f"{flags}: not read by --objective {args.objective} (only by {', '.join(readers)}); drop it or change --objective."
        raise InvalidInputError(msg)
    for name, least in (("n", 1), ("threads", 1), ("batch_size", 1), ("max_steps", 1)):
        if getattr(args, name) < least:
            msg = f"--{name.replace('_', '-')} must be >= {least}, got {getattr(args, name)}."
            raise InvalidInputError(msg)
    if args.max_new_tokens < 1:
        msg = f"--max-new-tokens must be >= 1, got {args.max_new_tokens}."
        raise InvalidInputError(msg)
    for name in ("init", "eps", "lr", "min_strength", "max_strength"):
        if not (getattr(args, name) > 0 and math.isfinite(getattr(args, name))):
            msg = f"--{name.replace('_', '-')} must be a finite number > 0, got {getattr(args, name)}."
            raise InvalidInputError(msg)
    if not args.min_strength < args.max_strength:
        msg = f"--min-strength ({args.min_strength}) must be below --max-strength ({args.max_strength})."
        raise InvalidInputError(msg)
    if not args.tol >= 0:  # NaN too
        msg = f"--tol must be >= 0, got {args.tol}."
        raise InvalidInputError(msg)
    if args.target is not None and not math.isfinite(args.target):
        msg = (
            f"--target must be a finite number (the objective's value to reach), got {args.target}."
        )
        raise InvalidInputError(msg)
    if args.dims is not None and args.dims < 1:
        msg = f"--dims must be >= 1 (embedding dimensions the corruption touches), got {args.dims}."
        raise InvalidInputError(msg)
    if args.objective == "chance":
        strengths = _parse_strengths(args.strengths)
        if not strengths or min(strengths) <= 0:
            msg = f"--strengths takes positive numbers (e.g. 1,10,100), got {args.strengths!r}."
            raise InvalidInputError(msg)


def calibrate_from_cli(args: argparse.Namespace) -> dict[str, Any]:
    """``eco calibrate strength``: build the objective, search, save ``policy.json``; returns the summary."""
    from ..backends.transformers import TransformersBackend
    from ..config import CorruptionConfig
    from ..guard import Guard
    from ._threads import set_threads

    check_cli_options(args)
    set_threads(args.threads)
    started = time.perf_counter()
    folder = Path(args.guard)
    # Checked before minutes of fitting and scoring: the points and the policy go into it.
    if folder.exists() and not folder.is_dir():
        msg = f"--guard {folder} is a file; pass a guard folder (or a new folder's path for --objective chance)."
        raise InvalidInputError(msg)
    writable = folder if folder.is_dir() else folder.parent
    if not args.dry_run and writable.is_dir() and not os.access(writable, os.W_OK):
        msg = f"--guard {folder}: {writable} is not writable, and the scored strengths and the chosen policy are saved there; pass --dry-run or a writable folder."
        raise InvalidInputError(msg)
    if args.objective == "chance" and not (folder / "manifest.json").is_file():
        # The guard `eco eval mcq` fits: the WMDP protocol's, fit on the split the questions come from.
        from .eval.guard_eval import fit_wmdp_guard, wmdp_protocol_encoder

        print(
            f"fitting the WMDP guard (20% of WMDP vs MMLU val, dev and half the close subjects' "
            f"test questions) into {folder}...",
            file=sys.stderr,
        )
        fitted, _ = fit_wmdp_guard(
            args.data_dir,
            seed=args.seed,
            target_fpr=0.01,
            encoder=wmdp_protocol_encoder(args.encoder),
        )
        fitted.save(folder)
    guard = Guard.load(folder)
    if args.encoder is not None:
        from .eval.mcq import check_guard_encoder

        check_guard_encoder(guard, args.encoder, folder)
    if (folder / "policy.json").is_file():
        policy = ECOPolicy.load(folder)
    elif args.objective == "chance":
        from .eval.mcq import PAPER_MCQ_POLICY

        policy = PAPER_MCQ_POLICY
    else:
        policy = ECOPolicy(
            corruption=CorruptionConfig(name="rand_noise_first_n", dims=1, strength=args.init)
        )
    if args.corruption or args.dims is not None:
        name = args.corruption or policy.corruption.name
        try:
            corruption = CorruptionConfig(
                name=name,
                dims=args.dims if args.dims is not None else policy.corruption.dims,
                strength=args.init,
            )
        except ValidationError as err:
            msg = f"Bad corruption setting: {validation_problems(err)}"
            raise InvalidInputError(msg) from None
        policy = policy.model_copy(update={"corruption": corruption})
    space = _search_space(args, policy)
    if policy.corruption.strength is None and args.objective != "never-learned":
        msg = f"Corruption {policy.corruption.name!r} has no strength to search; pick a noise corruption with --corruption."
        raise InvalidInputError(msg)
    eco = ECO(
        TransformersBackend.from_pretrained(args.model),
        guard,
        policy=policy,
        batch_size=args.batch_size,
    )
    if args.objective == "chance":
        return _calibrate_chance(args, eco, folder, policy, started)
    if args.objective == "never-learned":
        return _calibrate_never_learned(args, eco, folder, space, started)
    target = args.target
    if args.objective == "mcq":
        from .eval.guard_eval import wmdp_fit_test_split

        fit_rows, _ = wmdp_fit_test_split(args.data_dir, seed=args.seed)
        rng = np.random.default_rng(args.seed)
        questions = [fit_rows[i] for i in sorted(rng.permutation(len(fit_rows))[: args.n].tolist())]
        objective = mcq_accuracy_objective(eco, questions, letters=args.letters)
        target = 0.25 if target is None else target
        what = f"WMDP accuracy toward {target} on {len(questions)} questions of the guard protocol's fit split"
    elif args.objective == "similarity":
        if not args.references or target is None:
            msg = "--objective similarity needs --references FILE.jsonl (question/answer rows) and --target (the similarity to reach)."
            raise InvalidInputError(msg)
        rows = _reference_rows(args.references, ("question", "answer"))[: args.n]
        objective = similarity_objective(
            eco,
            [r["question"] for r in rows],
            [r["answer"] for r in rows],
            max_new_tokens=args.max_new_tokens,
        )
        what = f"ROUGE-L F1 of answers toward {target} on {len(rows)} reference pairs"
    else:
        if target is None:
            msg = "--objective callable needs --target."
            raise InvalidInputError(msg)
        fn = _load_callable(args.callable_path)

        def objective(strength: float) -> float:
            return float(fn(eco, strength))

        what = f"{args.callable_path} toward {target}"

    # Each strength scored is kept as it is scored: an interrupted search resumes from them.
    key = _points_key(
        args.objective,
        what,
        args.model,
        eco,
        args.seed,
        args.letters,
        args.max_new_tokens,
        args.callable_path,
        args.batch_size,  # padding in a batch can tip a greedy near-tie
    )
    if not args.dry_run:
        objective = _kept(objective, SearchPoints(folder / "strength_points.jsonl", key))
    result = _search_from_cli(args, objective, target, policy.corruption.name)
    saved = None
    if not args.dry_run:
        saved = str(
            save_strength(folder, policy, result, f"strength by zeroth-order search: {what}")
        )
    return {
        **result.as_dict(),
        "objective": what,
        "corruption": policy.corruption.name,
        "dims": policy.corruption.dims,
        "saved": saved,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _points_key(objective: str, *inputs: Any) -> str:
    """What a search's scored points were computed from (an engine stands for its policy, guard
    and model), hashed: a point is read back only by a search with the same inputs."""
    described = [i.identifying_params() if isinstance(i, ECO) else i for i in inputs]
    payload = json.dumps([objective, *described], default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _kept(objective: Objective, points: SearchPoints) -> Objective:
    """``objective`` reading back the values ``points`` holds and adding the ones it computes."""

    def kept(strength: float) -> float:
        known = points.get("", strength)
        if known is None:
            known = float(objective(strength))
            points.add("", strength, known)
        return float(known)

    return kept


def _resumable(
    objective: NeverLearnedObjective, points: SearchPoints | None, label: str
) -> Objective:
    """``objective`` reading back the reports ``points`` holds under ``label`` and adding the
    ones it computes, so that its ``reports`` hold every strength the search visits."""
    if points is None:
        return objective

    def resumed(strength: float) -> float:
        report = _read_back(NeverLearnedReport, points, label, strength)
        if report is None:
            value = objective(strength)
            points.add(label, strength, objective.reports[float(strength)].model_dump(mode="json"))
            return value
        objective.reports[float(strength)] = report
        return gap(report) + LEAK_PENALTY * report.leak

    return resumed


_Read = TypeVar("_Read", References, NeverLearnedReport)


def _read_back(
    model: type[_Read], points: SearchPoints | None, label: str, value: float
) -> _Read | None:
    """The ``model`` that ``points`` holds under ``label`` and ``value``; None when it holds none
    or one this release reads otherwise (it is computed again)."""
    known = points.get(label, value) if points is not None else None
    if known is None:
        return None
    try:
        return model.model_validate(known)
    except ValidationError:
        return None


class SearchPoints:
    """Every setting a search scored, appended to a JSON Lines file as it is scored, so a search
    cut short (a TOFU setting costs minutes to an hour, an MCQ one minutes) resumes where it
    stopped: the search is deterministic, so a rerun walks the same path and reads back what was
    already scored. ``label`` tells settings of several searches in one file apart (the TOFU
    selectors); lines are keyed by the search's inputs (``key``), other keys' lines left alone."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self._known: dict[tuple[str, float], Any] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    if row["key"] == key:
                        self._known[(row["selector"], float(row["value"]))] = row["scores"]
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line cut short by a crash: that setting is scored again

    def get(self, selector: str, value: float) -> Any:
        return self._known.get((selector, value))

    def add(self, selector: str, value: float, scores: Any) -> None:
        self._known[(selector, value)] = scores
        row = {"key": self.key, "selector": selector, "value": value, "scores": scores}
        with appending(self.path) as handle:
            handle.write(json.dumps(row, default=float) + "\n")


def _search_from_cli(
    args: argparse.Namespace, objective: Objective, target: float, corruption: str
) -> SearchResult:
    """The zeroth-order search with the command's settings, printing each step to stderr.

    A corruption whose strength is a share (``substitute_tokens``: at most 1) caps the search's
    range and initial strength at its largest valid strength, and says so.
    """
    init, max_strength = _strength_range(args, corruption)
    if (init, max_strength) != (args.init, args.max_strength):
        cap = get_corruption(corruption).max_strength
        print(
            f"{corruption}: strength is at most {cap:g}; searching up to {max_strength:g} from {init:g}",
            file=sys.stderr,
        )

    def report(step: SearchStep) -> None:
        print(
            f"step {step.step}: strength {step.strength:.4g}  f({step.lower:.4g})={step.f_lower:.4f}  "
            f"f({step.upper:.4g})={step.f_upper:.4f}  -> {step.next_strength:.4g}",
            file=sys.stderr,
        )

    return zeroth_order_search(
        objective,
        target=target,
        init=init,
        eps=args.eps,
        lr=args.lr,
        min_strength=args.min_strength,
        max_strength=max_strength,
        max_steps=args.max_steps,
        tol=args.tol,
        on_step=report,
    )


def _clean_choice(
    policy: ECOPolicy, result: SearchResult, objective: NeverLearnedObjective, target: float
) -> tuple[tuple[ECOPolicy, SearchResult, float], NeverLearnedReport] | None:
    """The strength :func:`choose_without_leak` picks among those ``objective`` scored."""
    scored = objective.reports.items()
    return choose_without_leak([((policy, result, s), r) for s, r in scored], target=target)


def _strength_range(args: argparse.Namespace, corruption: str) -> tuple[float, float]:
    """``--init`` and ``--max-strength`` within what ``corruption`` accepts: a share
    (``substitute_tokens``) is at most 1, where the defaults are noise scales."""
    cap = get_corruption(corruption).max_strength
    if cap is None:
        return args.init, args.max_strength
    return min(args.init, cap), min(args.max_strength, cap)


def _climb_out_of_leaks(
    args: argparse.Namespace,
    scored: Objective,
    objective: NeverLearnedObjective,
    result: SearchResult,
    corruption: str,
) -> SearchResult:
    """When every strength the search tried leaks, try stronger ones, a decade at a time up to
    ``--max-strength``, until one does not.

    The leak penalty is a step, not a slope: where the leak rate is flat (one prompt leaking at
    every moderate strength) it gives the search no direction, and the gap alone pulls it toward
    weaker corruption, so a clean stronger setting would otherwise never be tried.
    """
    _, ceiling = _strength_range(args, corruption)
    strength = max(objective.reports)
    evaluations = dict(result.evaluations)
    while strength < ceiling:
        strength = min(strength * 10.0, ceiling)
        evaluations[strength] = float(scored(strength))
        report = objective.reports[strength]
        print(
            f"every strength searched leaks; trying {strength:.4g}: leak {report.leak:.3f}",
            file=sys.stderr,
        )
        if report.leak == 0:
            break
    return replace(result, evaluations=evaluations)


def _search_space(args: argparse.Namespace, policy: ECOPolicy) -> list[ECOPolicy]:
    """The (selector, corruption) policies that ``--objective never-learned`` searches, checked
    before any model is loaded; the other objectives take neither flag."""
    if args.objective != "never-learned":  # its flags were refused by check_cli_options
        return [policy]
    selector_names = args.selectors or [policy.selection.name]
    unknown = [name for name in selector_names if name not in SELECTORS]
    if unknown:
        msg = f"Unknown token selector(s) {', '.join(map(repr, unknown))} in --selectors; choose from: {', '.join(SELECTORS)}."
        raise InvalidInputError(msg)
    if args.first_n is not None and "first_n" not in selector_names:
        msg = f"--first-n is read only with the first_n selector, which is not searched here ({', '.join(selector_names)}); add --selectors first_n or drop --first-n."
        raise InvalidInputError(msg)
    if args.first_n is not None and args.first_n < 1:
        msg = f"--first-n must be >= 1 (how many content tokens first_n corrupts), got {args.first_n}."
        raise InvalidInputError(msg)
    # n: --first-n, else the folder policy's (a search must not rewrite it unasked), else 4.
    first_n = args.first_n or policy.selection.n or DEFAULT_FIRST_N
    selections = [
        SelectionConfig(
            name=name,
            n=first_n if name == "first_n" else None,
            terms=policy.selection.terms,
        )
        for name in dict.fromkeys(selector_names)
    ]
    corruptions = []
    for name in dict.fromkeys(args.corruptions or [policy.corruption.name]):
        # dims: --dims, else the folder policy's for the same corruption, else the paper's 1.
        dims = args.dims
        if dims is None and name == policy.corruption.name:
            dims = policy.corruption.dims
        try:
            spec = get_corruption(name)
        except ConfigurationError as err:
            msg = f"Bad corruption in --corruptions: {err}"
            raise InvalidInputError(msg) from None
        if not spec.uses_strength:
            msg = f"Corruption {name!r} has no strength to search; pass noise corruptions to --corruptions."
            raise InvalidInputError(msg)
        # A share (substitute_tokens: at most 1) starts where the search will.
        init, _ = _strength_range(args, name)
        try:
            corruptions.append(
                CorruptionConfig(
                    name=name,
                    dims=(1 if dims is None else dims) if spec.uses_dims else dims,
                    strength=init,
                )
            )
        except ValidationError as err:
            msg = f"Bad corruption in --corruptions: {validation_problems(err)}"
            raise InvalidInputError(msg) from None
    return [
        policy.model_copy(update={"selection": sel, "corruption": corr})
        for sel in selections
        for corr in corruptions
    ]


def _calibrate_never_learned(
    args: argparse.Namespace, eco: ECO, folder: Path, space: list[ECOPolicy], started: float
) -> dict[str, Any]:
    """``--objective never-learned``: a strength search per (selector, corruption), the best
    non-leaking strength of all saved.

    Prompts are the questions of ``--references`` that the guard flags; the leak terms are the
    guard's target terms (the names the ``entities`` selector corrupts), each replaced by an
    invented word in the counterfactual twins.
    """
    if not args.references:
        msg = "--objective never-learned needs --references FILE.jsonl (rows with a question field: the forget prompts)."
        raise InvalidInputError(msg)
    target = 0.0 if args.target is None else args.target
    rows = _reference_rows(args.references, ("question",))
    questions = [r["question"] for r in rows[: args.n]]
    prompts = [q for q in questions if eco.decide(q).flagged]
    assert eco.guard is not None  # the CLI always loads one
    terms = list(dict.fromkeys(t for ts in eco.guard.terms.values() for t in ts))
    if not terms:
        msg = f"The guard in {folder} has no target terms; refit it (terms are mined from the forget texts)."
        raise InvalidInputError(msg)
    # A flagged question naming no term (a paraphrase the guard caught) has no stranger twin:
    # its reference would be the plain model answering the real question.
    nameless = [p for p in prompts if not find_terms(p, terms)]
    if nameless:
        prompts = [p for p in prompts if p not in nameless]
        print(
            f"never-learned: {len(nameless)} flagged prompt(s) name no guard term and are left "
            f"out of the measure (no counterfactual twin), e.g. {nameless[0]!r}",
            file=sys.stderr,
        )
    print(
        f"never-learned: {len(prompts)} of {len(questions)} prompts flagged, {len(terms)} guard "
        f"terms; answering the counterfactual twins...",
        file=sys.stderr,
    )
    # The guard's terms carry no kind; "thing" invents a word per word of the term.
    kinds: dict[str, Kind] = dict.fromkeys(terms, "thing")
    # The references and each scored strength are kept as they are computed (a setting costs a
    # generation pass over every prompt): an interrupted search resumes from them.
    key = _points_key(
        "never-learned",
        prompts,
        terms,
        eco,
        args.model,
        args.seed,
        args.max_new_tokens,
        args.batch_size,
    )
    points = None if args.dry_run else SearchPoints(folder / "strength_points.jsonl", key)
    reference = _read_back(References, points, "references", 0.0)
    if reference is None:
        reference = never_learned_references(
            eco, prompts, kinds, seed=args.seed, max_new_tokens=args.max_new_tokens
        )
        if points is not None:
            points.add("references", 0.0, reference.model_dump(mode="json"))
    found: list[tuple[tuple[ECOPolicy, SearchResult, float], NeverLearnedReport]] = []
    for i, policy in enumerate(space, 1):
        objective = NeverLearnedObjective(
            eco.replace(policy=policy),
            prompts,
            reference,
            terms=terms,
            max_new_tokens=args.max_new_tokens,
        )
        scored = _resumable(objective, points, policy.version_hash)
        result = _search_from_cli(args, scored, target, policy.corruption.name)
        picked = _clean_choice(policy, result, objective, target)
        if picked is None:
            result = _climb_out_of_leaks(args, scored, objective, result, policy.corruption.name)
            picked = _clean_choice(policy, result, objective, target)
        c = policy.corruption
        label = f"{policy.selection.name} x {c.name}" + (f" dims {c.dims}" if c.dims else "")
        leaking = ", ".join(
            f"{s:.4g} (leak {r.leak:.3f})" for s, r in sorted(objective.reports.items()) if r.leak
        )
        rejected = f"; rejected as leaking: {leaking}" if leaking else ""
        if picked is None:
            print(f"[{i}/{len(space)}] {label}: every strength leaks{rejected}", file=sys.stderr)
            continue
        found.append(picked)
        (_, _, strength), report = picked
        print(
            f"[{i}/{len(space)}] {label}: strength {strength:.4g}, gap {gap(report):.4f}, "
            f"leak 0{rejected} ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    best = choose_without_leak(found, target=target)
    if best is None:
        msg = (
            "Every searched setting leaks a guard term at every strength tried; nothing saved. "
            "Try other --selectors / --corruptions or a wider --min-strength/--max-strength."
        )
        raise InvalidInputError(msg)
    (policy, result, strength), report = best
    value = result.evaluations[strength]
    chosen = replace(
        result,
        strength=strength,
        value=value,
        gap=abs(value - target),
        converged=abs(value - target) <= args.tol,
    )
    c = policy.corruption
    what = (
        f"never-learned gap toward {target} on {len(prompts)} flagged prompts of "
        f"{args.references} ({policy.selection.name} x {c.name}, dims={c.dims}; leaking strengths "
        f"rejected)"
    )
    saved = None
    if not args.dry_run:
        saved = str(save_strength(folder, policy, chosen, f"strength by {what}"))
    return {
        **chosen.as_dict(),
        "objective": what,
        "corruption": c.name,
        "dims": c.dims,
        "saved": saved,
        "seconds": round(time.perf_counter() - started, 1),
        "selector": policy.selection.name,
        "leak": report.leak,
        "fluency": report.fluency,
        "on_topic": report.on_topic,
        "distinguishable": report.distinguishable,
    }


def _calibrate_chance(
    args: argparse.Namespace, eco: ECO, folder: Path, policy: ECOPolicy, started: float
) -> dict[str, Any]:
    """``--objective chance``: accuracy of the flagged calibration questions on a strength grid.

    The calibration questions come from the guard protocol's fit split, which the evaluation
    (``eco eval mcq``) never samples, so the chosen strength is not tuned on the questions scored.
    With ``--calibrate-on known`` (the default) the curve is measured on the flagged questions
    the plain model answers correctly: questions it never knew sit near chance at every strength
    (measured: 45 flagged fit-split questions scored 0.222 plain and 0.222 at strength 0.3), so
    they make any strength look like it reaches chance. Erasing what it knows is the aim.
    """
    from .eval.guard_eval import mcq_guard_text, wmdp_fit_test_split
    from .eval.mcq import CHANCE, letter_token_ids, mcq_prompt

    strengths = _parse_strengths(args.strengths)
    target = CHANCE if args.target is None else args.target
    fit_rows, _ = wmdp_fit_test_split(args.data_dir, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    sample = [fit_rows[i] for i in sorted(rng.permutation(len(fit_rows))[: args.n].tolist())]
    decisions = eco.decide_texts([mcq_guard_text(q) for q in sample])
    questions = [q for q, d in zip(sample, decisions, strict=True) if d.corrupted]
    if not questions:
        msg = f"The guard in {folder} flags none of the {len(sample)} calibration questions; check the guard fits WMDP."
        raise InvalidInputError(msg)
    ids = letter_token_ids(eco.backend.tokenizer, args.letters)
    print(
        f"calibration: {len(questions)} of {len(sample)} WMDP fit-split questions flagged; scoring plain...",
        file=sys.stderr,
    )
    plain_logits, _ = eco.next_token_logits(
        [mcq_prompt(q) for q in questions], raw=True, mode="off"
    )
    correct = plain_logits[:, ids].argmax(-1).numpy() == np.array([q["answer"] for q in questions])
    plain = float(np.mean(correct))
    flagged = len(questions)
    if args.calibrate_on == "known":
        questions = [q for q, ok in zip(questions, correct, strict=True) if ok]
        if not questions:
            msg = f"The model answers none of the {flagged} flagged calibration questions; use --calibrate-on flagged or a larger --n."
            raise InvalidInputError(msg)
        plain = 1.0
    print(
        f"plain accuracy {float(np.mean(correct)):.4f}; calibrating on {len(questions)} questions ({args.calibrate_on})",
        file=sys.stderr,
    )

    def report(strength: float, value: float) -> None:
        print(
            f"strength {strength:g}: accuracy {value:.4f} ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )

    objective = mcq_accuracy_objective(eco, questions, letters=args.letters)
    # Each strength of the grid is kept as it is scored: an interrupted run resumes from them.
    key = _points_key(
        "chance",
        [q["question"] for q in questions],
        args.letters,
        eco,
        args.model,
        args.seed,
        args.batch_size,
    )
    if not args.dry_run:
        objective = _kept(objective, SearchPoints(folder / "strength_points.jsonl", key))
    curve = chance_curve(objective, strengths, on_point=report)
    result = choose_chance_strength(curve, target=target, tol=args.tol)
    c = policy.corruption
    which = (
        "flagged questions the plain model answers correctly"
        if args.calibrate_on == "known"
        else "flagged questions"
    )
    what = (
        f"WMDP accuracy toward chance ({target}) within {args.tol} on {len(questions)} {which}, from the guard "
        f"protocol's fit split ({c.name}, dims={c.dims}, selector {policy.selection.name})"
    )
    plot = plot_chance_curve(
        curve,
        args.plot or folder / "strength_curve.png",
        plain=plain,
        result=result,
        title=f"{eco.backend.model_name}: {what}",
    )
    saved = None
    if not args.dry_run:
        saved = str(
            save_strength(folder, policy, result, f"strength by --objective chance: {what}")
        )
    return {
        "strength": result.strength,
        "value": result.value,
        "gap": result.gap,
        "target": target,
        "tol": args.tol,
        "converged": result.converged,
        "plain_accuracy": plain,
        "plain_accuracy_flagged": float(np.mean(correct)),
        "calibrate_on": args.calibrate_on,
        "curve": [{"strength": s, "accuracy": v} for s, v in sorted(curve.items())],
        "n_calibration": len(sample),
        "n_flagged": flagged,
        "n_curve": len(questions),
        "subjects": {
            s: sum(q["subject"] == s for q in questions)
            for s in sorted({q["subject"] for q in questions})
        },
        "objective": what,
        "corruption": c.name,
        "dims": c.dims,
        "model": eco.backend.model_name,
        "plot": str(plot),
        "saved": saved,
        "threads": args.threads,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _parse_strengths(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        msg = f"--strengths takes comma-separated numbers (e.g. 1,10,100), got {text!r}."
        raise InvalidInputError(msg) from None
