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
import importlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ECOPolicy, GenerationConfig
from ..engine import ECO
from ..exceptions import ConfigurationError, InvalidInputError

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
            "strength": self.strength, "value": self.value, "gap": self.gap, "target": self.target, "converged": self.converged,
            "steps": [asdict(s) for s in self.steps],
            "evaluations": [{"strength": s, "value": v} for s, v in sorted(self.evaluations.items())],
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
        record = SearchStep(step, 10.0**x, 10.0**x_down, 10.0**x_up, f_down, f_up, slope, 10.0**x_next)
        steps.append(record)
        log.info("step %d: strength %.4g, f(%.4g)=%.4f, f(%.4g)=%.4f, slope %.4g -> %.4g",
                 step, record.strength, record.lower, f_down, record.upper, f_up, slope, record.next_strength)
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
    return SearchResult(s, value, abs(value - target), target, abs(value - target) <= tol, steps, dict(cache))


# -- built-in objectives ----------------------------------------------------------------------
def with_strength(eco: ECO, strength: float) -> ECO:
    """A copy of ``eco`` (same backend and guard) whose corruption has ``strength``."""
    corruption = eco.policy.corruption.model_copy(update={"strength": float(strength)})
    policy = eco.policy.model_copy(update={"corruption": corruption})
    return eco.replace(policy=policy, mode="enforce")


def mcq_accuracy_objective(eco: ECO, questions: Sequence[dict[str, Any]], *, letters: str = "space") -> Objective:
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
        logits, _ = engine.next_token_logits(prompts, raw=True, decisions=engine.forced_decisions(prompts))
        return float(np.mean(logits[:, ids].argmax(-1).numpy() == answers))

    return objective


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on lowercased word tokens (longest common subsequence)."""
    a, b = candidate.lower().split(), reference.lower().split()
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for token in a:
        cur = [0]
        for j, other in enumerate(b):
            cur.append(prev[j] + 1 if token == other else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def similarity_objective(eco: ECO, prompts: Sequence[str], references: Sequence[str], *, max_new_tokens: int = 32) -> Objective:
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
        outs = engine.generate(list(prompts), config=config, decisions=engine.forced_decisions(texts))
        return float(np.mean([rouge_l_f1(o.text, r) for o, r in zip(outs, references)]))

    return objective


def save_strength(folder: str | Path, policy: ECOPolicy, result: SearchResult, note: str) -> Path:
    """Write the chosen strength into ``folder/policy.json`` (read by ``ECO.from_pretrained(guard=folder)``) and the log."""
    corruption = policy.corruption.model_copy(update={"strength": float(result.strength)})
    chosen = policy.model_copy(update={"corruption": corruption, "notes": note})
    path = chosen.save(folder)
    (Path(folder) / "strength_search.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return path


# -- CLI ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guard", required=True, help="guard folder; the chosen setting is saved there as policy.json")
    parser.add_argument("--objective", default="mcq", choices=["mcq", "similarity", "callable"])
    parser.add_argument("--callable", dest="callable_path", help="module:function taking (eco, strength) -> float (objective 'callable')")
    parser.add_argument("--target", type=float, default=None, help="target value (default: chance, 0.25, for mcq)")
    parser.add_argument("--data-dir", default=None, help="for mcq: WMDP calibration questions come from the guard protocol's 20%% fit split")
    parser.add_argument("--references", help="for similarity: JSONL with question and answer fields (the forget set)")
    parser.add_argument("--n", type=int, default=64, help="calibration questions / prompts")
    parser.add_argument("--model", default=None)
    parser.add_argument("--corruption", default=None, help="corruption name (default: the folder's policy, else rand_noise_first_n dims=1)")
    parser.add_argument("--dims", type=int, default=None)
    parser.add_argument("--init", type=float, default=100.0, help="starting strength")
    parser.add_argument("--eps", type=float, default=0.25, help="finite-difference half-width in decades")
    parser.add_argument("--lr", type=float, default=20.0)
    parser.add_argument("--min-strength", type=float, default=1e-2)
    parser.add_argument("--max-strength", type=float, default=1e7)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--tol", type=float, default=0.02, help="stop when |f - target| <= tol")
    parser.add_argument("--letters", default="space", choices=["space", "plain"])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="search and print, but do not write policy.json")
    parser.add_argument("--json", action="store_true")


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
    return fn  # type: ignore[no-any-return]


def calibrate_from_cli(args: argparse.Namespace) -> dict[str, Any]:
    """``eco calibrate strength``: build the objective, search, save ``policy.json``; returns the summary."""
    from ..backends.transformers import TransformersBackend
    from ..config import CorruptionConfig
    from ..guard import Guard

    started = time.perf_counter()
    folder = Path(args.guard)
    guard = Guard.load(folder)
    policy = ECOPolicy.load(folder) if (folder / "policy.json").is_file() else ECOPolicy(
        corruption=CorruptionConfig(name="rand_noise_first_n", dims=1, strength=args.init))
    if args.corruption or args.dims:
        name = args.corruption or policy.corruption.name
        try:
            corruption = CorruptionConfig(name=name, dims=args.dims if args.dims is not None else policy.corruption.dims, strength=args.init)
        except ValueError as err:
            raise InvalidInputError(f"Bad corruption setting: {err}") from None
        policy = policy.model_copy(update={"corruption": corruption})
    if policy.corruption.strength is None:
        msg = f"Corruption {policy.corruption.name!r} has no strength to search; pick a noise corruption with --corruption."
        raise InvalidInputError(msg)
    eco = ECO(TransformersBackend.from_pretrained(args.model), guard, policy=policy)
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
        rows = [json.loads(line) for line in Path(args.references).read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = rows[: args.n]
        objective = similarity_objective(eco, [r["question"] for r in rows], [r["answer"] for r in rows], max_new_tokens=args.max_new_tokens)
        what = f"ROUGE-L F1 of answers toward {target} on {len(rows)} reference pairs"
    else:
        if target is None:
            msg = "--objective callable needs --target."
            raise InvalidInputError(msg)
        fn = _load_callable(args.callable_path)

        def objective(strength: float) -> float:
            return float(fn(eco, strength))

        what = f"{args.callable_path} toward {target}"

    def report(step: SearchStep) -> None:
        print(f"step {step.step}: strength {step.strength:.4g}  f({step.lower:.4g})={step.f_lower:.4f}  "
              f"f({step.upper:.4g})={step.f_upper:.4f}  -> {step.next_strength:.4g}", file=sys.stderr)

    result = zeroth_order_search(objective, target=target, init=args.init, eps=args.eps, lr=args.lr, min_strength=args.min_strength,
                                 max_strength=args.max_strength, max_steps=args.max_steps, tol=args.tol, on_step=report)
    saved = None
    if not args.dry_run:
        saved = str(save_strength(folder, policy, result, f"strength by zeroth-order search: {what}"))
    return {**result.as_dict(), "objective": what, "corruption": policy.corruption.name, "dims": policy.corruption.dims,
            "saved": saved, "seconds": round(time.perf_counter() - started, 1)}
