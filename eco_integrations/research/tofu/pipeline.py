"""The TOFU comparison end to end: fine-tune, fit the guard, search the strength, score, report.

Protocol (small scale, see docs/tofu/README_tofu.md):

1. *original* = the default model fine-tuned on the forget split + a retain subset;
   *retained* = the same recipe on the retain subset only (:mod:`.training`).
2. The guard is fit on the forget questions and answers against the retain split's questions
   (grouped by author for its cross-validated threshold).
3. The forget questions are split in halves (seed 0). The corruption's free parameter (the noise
   strength, or k for the zero/flip corruptions) is searched on the *calibration* half with
   every prompt corrupted, once per token selector asked for; the best (selector, strength) by
   the objective wins. By default the search drives the distance between ECO's and the
   retained model's log truth ratios on that half toward 0 ("indistinguishable from the
   retained model"); the KS forget qualities are alternatives, and ``retained`` asks for the
   retained model's truth ratios (both KS tests) and its answer style (ROUGE-L recall, answer
   probability) at once. All reported forget figures come from the other, *evaluation* half,
   with the guard deciding.
4. Methods: original, retained, ECO, a system-prompt baseline and a refusal guardrail; metrics
   as in TOFU (:mod:`.metrics`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import write_text_atomic
from ..._passages import frequent_terms
from ...backends.transformers import TransformersBackend
from ...config import CorruptionConfig, ECOPolicy, SelectionConfig
from ...corruption import get_corruption
from ...encoder import SentenceEncoder
from ...exceptions import ArtifactError, ConfigurationError
from ...guard import GUARD_SCHEMA_VERSION, Guard
from ..eval.datasets import TOFU_AUTHOR_ROWS as AUTHOR_ROWS
from ..finetune import FinetuneConfig
from ..strength import SearchPoints, SearchResult, zeroth_order_search
from .data import TofuSetting, load_setting
from .evaluate import score_qa_set, summarize_forget, summarize_utility
from .metrics import forget_quality, log_ratio_distance, retained_objective
from .scoring import ANSWER_ENTITIES, ECOScorer, ModelScorer, RefusalScorer
from .training import TOFU_FINETUNE, train_models

log = logging.getLogger(__name__)
METHODS = ("original", "retained", "eco", "prompt_baseline", "refusal_baseline")
SEARCH_OBJECTIVES = ("distance", "both", "folded", "unfolded", "retained")
# Objectives driven down to 0; the others (KS p-values) are driven up to 1.
MINIMISED = ("distance", "retained")
# Token selectors the search can run over (first_n needs its own n, not asked for here).
SEARCH_SELECTORS = ("content", "all", "entities")
_OBJECTIVE_TEXT = {
    "distance": "1-Wasserstein distance between the log truth ratios (minimised)",
    "both": "the smaller of the folded and unfolded forget quality (KS p-values)",
    "folded": "folded forget quality (KS p-value)",
    "unfolded": "unfolded forget quality (KS p-value)",
    "retained": "mean of 1 - folded and 1 - unfolded forget quality, the relative ROUGE-L recall "
    "gap and the relative log answer-probability gap (minimised)",
}


@dataclass
class TofuOptions:
    """Everything that sets the size and the protocol of a run."""

    split: str = "forget01"
    data_dir: str | Path | None = None
    model: str | Path | None = None
    finetune: FinetuneConfig = TOFU_FINETUNE
    finetune_out: str | Path | None = None
    retain_authors: int = 20
    retain_eval_n: int | None = 20
    general_n: int | None = 20
    seed: int = 0
    max_new_tokens: int = 32
    # Gaussian noise on every dimension of the selected tokens: in a screening on forget05's
    # calibration half (scripts/tofu_screen.py, docs/tofu/README_tofu.md) it came closest to the
    # retained model's truth ratios; top-k zeroing was next, noise on one dimension far off.
    corruption: str = "rand_noise_full"
    # For corruptions with both dims and strength (rand_noise_first_n): the dims, fixed (default 1).
    # For zero/flip corruptions: where the search over k starts (default hidden size / 12).
    dims: int | None = None
    selector: str = "content"
    # Selectors the strength search runs over (each on the calibration half); empty: ``selector``.
    selectors: tuple[str, ...] = ()
    # Where the strength search starts; None: twice the standard deviation of the model's
    # embedding table, i.e. noise on the scale of the token vectors themselves, whatever the model.
    init_strength: float | None = None
    search_steps: int = 3
    search_eps: float = 0.1  # decades either side of the current point
    # "distance": the 1-Wasserstein distance between ECO's and the retained model's log truth
    # ratios, driven to 0. The KS p-values ("folded", "unfolded", "both": the smaller) move in
    # steps of 1/n, coarse for a finite-difference search on 20 or 100 calibration questions;
    # and folding alone rewards ratios spread symmetrically around 1
    # (strong noise), which the unfolded test rejects. Matching the ratios themselves serves both.
    # "retained": the retained model's truth ratios (1 - both KS p-values) and its answer style
    # (ROUGE-L recall, answer probability on a log scale) together; it generates ECO's answers to
    # the calibration questions at every setting, so it costs more per setting.
    search_objective: str = "distance"
    # How a random corruption is drawn when answers are scored (ECOScorer's docstring): off, a
    # draw per (question, answer) as in the paper's code; on, one draw of the question shared by
    # every answer and one per word the answers share.
    shared_draws: bool = False
    # Draws of the corruption each answer is scored under (ECOScorer's docstring): 1, the paper's
    # single draw; K > 1, the log of the mean probability over K draws.
    corruption_draws: int = 1
    # Which words of an answer the entities selector corrupts when it is scored (ECOScorer's
    # docstring): "forget-terms", every term mined from the forget texts (which hold the true
    # answers); "names", the question's terms and the answer's names by their form.
    answer_entities: str = "forget-terms"
    # Write back, in ECO's generated answers, the question's words where an answer repeats the
    # invented ones the corruption put in their place (ECOPolicy.restore_prompt_words).
    restore_prompt_words: bool = False
    target_fpr: float = 0.01
    guard_cv: int = 5
    general_negatives: bool = True
    batch_size: int = 8
    encoder: SentenceEncoder | None = None
    show_progress: bool = False


def _cached_json(path: Path) -> dict[str, Any]:
    """A cached search log, or {} when there is none or it cannot be read (then it is redone)."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s cannot be read (%s); the search runs again.", path, err)
        return {}
    return value if isinstance(value, dict) else {}


def _sample(rows: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    if n is None or n >= len(rows):
        return rows
    picked = sorted(np.random.default_rng(seed).choice(len(rows), size=n, replace=False).tolist())
    return [rows[i] for i in picked]


def forget_halves(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Calibration and evaluation indices of the forget rows (seeded, disjoint, sizes n//2 and the rest)."""
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[: n // 2].tolist()), sorted(order[n // 2 :].tolist())


def general_negatives(options: TofuOptions) -> list[str]:
    """Generic questions the guard must leave alone: MMLU's validation questions.

    The TOFU retain split holds only questions about fictitious authors, so a guard fit on it
    alone has never seen an everyday question and flags many (a third of world_facts in a
    first run). MMLU validation questions are general knowledge disjoint from every set scored
    here (real_authors and world_facts stay unseen).

    Unlike the guard protocol's (:func:`~eco_integrations.research.eval.guard_eval.tofu_general_negatives`),
    they join the retain texts and count in the threshold's false-positive rate. Passed as
    ``general=`` instead (with forget folds by question), the threshold rose on every split and
    forget10's guard left two more of its 400 forget questions unflagged, while the 20 retain
    rows scored by default and the real_authors and world_facts questions kept their decisions
    (scoring every retain row of forget01's setting instead, 3 are flagged where 5 were). The
    guard here is fit on the very questions it is scored on; the protocol's held-out questions
    are what the rate outside the general negatives is for.
    """
    from ..eval.datasets import load_mmlu

    return [r["question"] for r in load_mmlu("all", "val", options.data_dir)]


def fit_guard(setting: TofuSetting, options: TofuOptions, folder: Path) -> Guard:
    """Fit (or reload) the guard: forget questions + answers vs the retain split's questions (+ MMLU val)."""
    forget = [r["question"] for r in setting.forget] + [r["answer"] for r in setting.forget]
    forget_groups = [i // AUTHOR_ROWS for i in range(len(setting.forget))] * 2
    retain = [r["question"] for r in setting.retain_guard]
    retain_groups: list[Any] = [i // AUTHOR_ROWS for i in range(len(retain))]
    if options.general_negatives:
        extra = general_negatives(options)
        retain += extra
        retain_groups += [f"general-{i % 50}" for i in range(len(extra))]
    encoder = options.encoder or SentenceEncoder()
    # The encoder and the guard schema are part of what was fit: a release or an encoder that
    # reads the cached guard differently re-fits it instead of refusing it.
    key = hashlib.sha256(
        json.dumps(
            [
                forget,
                retain,
                options.target_fpr,
                options.guard_cv,
                encoder.identity(),
                GUARD_SCHEMA_VERSION,
            ]
        ).encode()
    ).hexdigest()[:16]
    target = f"tofu-{setting.split}"
    if (
        (folder / "manifest.json").is_file()
        and (folder / "fit_key.txt").is_file()
        and (folder / "fit_key.txt").read_text().strip() == key
    ):
        try:
            return Guard.load(folder, encoder=encoder)
        except ArtifactError as err:
            log.warning("Re-fitting the guard cached in %s: %s", folder, err)
    guard = Guard(encoder, guard_id=f"tofu-{setting.split}-{key[:8]}")
    guard.add_target(
        target,
        forget,
        retain,
        forget_groups=forget_groups,
        retain_groups=retain_groups,
        target_fpr=options.target_fpr,
        cv=options.guard_cv,
    )
    guard.save(folder)  # swapped in whole: the key below is written only for a complete guard
    write_text_atomic(folder / "fit_key.txt", key + "\n")
    return guard


def baseline_system_prompt(setting: TofuSetting, limit: int = 8) -> str:
    """The prompt baseline's instruction, naming the forget set's frequent names and titles.

    The names are the forget rows' most frequent ones absent from the TOFU retain rows
    (``frequent_terms``), as the paper's prompting baseline lists the forget authors.
    """
    forget = [r["question"] for r in setting.forget] + [r["answer"] for r in setting.forget]
    retain = [r["question"] for r in setting.retain_guard]
    terms = frequent_terms(forget, retain)[:limit]
    named = "; ".join(terms) if terms else "the authors you are asked to forget"
    return (
        f"You know nothing about the following people or their works: {named}. "
        "If a question is about them, say that you do not know."
    )


def _ratios(records: list[dict[str, Any]]) -> list[float]:
    return [r["ratio"] for r in records]


def searched_parameter(corruption: str) -> str:
    """``"strength"`` for the noise corruptions, ``"dims"`` (k) for those without a strength."""
    return "strength" if get_corruption(corruption).uses_strength else "dims"


def initial_corruption(options: TofuOptions, backend: TransformersBackend) -> CorruptionConfig:
    """The corruption the search starts from, with the defaults of :class:`TofuOptions` filled in."""
    _check_options(options)
    spec = get_corruption(options.corruption)
    if searched_parameter(options.corruption) == "dims":
        return CorruptionConfig(
            name=options.corruption, dims=options.dims or max(1, backend.hidden_size // 12)
        )
    dims = (options.dims or 1) if spec.uses_dims else None
    init = options.init_strength
    if init is None and spec.max_strength is not None:
        # A share (substitute_tokens, invent_words): start from the whole replacement, as the
        # engine's default does.
        init = spec.max_strength
    elif init is None:
        weight = backend.model.get_input_embeddings().weight
        init = round(2.0 * float(weight.detach().float().std()), 4)
    return CorruptionConfig(name=options.corruption, dims=dims, strength=init)


def _check_options(options: TofuOptions) -> None:
    """The checks that need no model, so a bad option fails before any fine-tune or scoring."""
    for flag, value, least in (
        ("--search-steps", options.search_steps, 1),
        ("--corruption-draws", options.corruption_draws, 1),
        ("--eval-batch-size", options.batch_size, 1),
        ("--max-new-tokens", options.max_new_tokens, 1),
        ("--retain-authors", options.retain_authors, 1),
        ("guard_cv (folds)", options.guard_cv, 2),
    ):
        if value < least:
            msg = f"{flag} must be >= {least}, got {value}."
            raise ConfigurationError(msg)
    if not (options.search_eps > 0 and math.isfinite(options.search_eps)):
        msg = f"--search-eps must be > 0 and finite (decades either side of the current strength), got {options.search_eps}."
        raise ConfigurationError(msg)
    if not 0.0 < options.target_fpr < 1.0:
        msg = f"--target-fpr must be in (0, 1), got {options.target_fpr}; 0.01 means 1% false positives."
        raise ConfigurationError(msg)
    if options.search_objective not in SEARCH_OBJECTIVES:
        msg = f"Unknown search objective {options.search_objective!r}; choose one of: {', '.join(SEARCH_OBJECTIVES)}."
        raise ConfigurationError(msg)
    if options.answer_entities not in ANSWER_ENTITIES:
        msg = f"Unknown --answer-entities {options.answer_entities!r}; choose one of: {', '.join(ANSWER_ENTITIES)}."
        raise ConfigurationError(msg)
    if options.answer_entities != "forget-terms" and "entities" not in search_selectors(options):
        msg = f"--answer-entities {options.answer_entities} changes only the entities selector, which this run does not search; add --selectors entities or drop --answer-entities."
        raise ConfigurationError(msg)
    if options.restore_prompt_words and not get_corruption(options.corruption).uses_replacements:
        msg = f"--restore-prompt-words writes back the words a corruption put in place, and {options.corruption!r} puts none; use --corruption invent_words or substitute_tokens, or drop --restore-prompt-words."
        raise ConfigurationError(msg)
    unknown = [n for n in search_selectors(options) if n not in SEARCH_SELECTORS]
    if unknown:
        msg = f"Unknown selector(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(SEARCH_SELECTORS)}."
        raise ConfigurationError(msg)
    spec = get_corruption(options.corruption)  # names the known corruptions if this one is not
    if searched_parameter(options.corruption) == "dims" and options.init_strength is not None:
        msg = f"Corruption {options.corruption!r} has no strength: its search runs over dims (k); pass --dims to set where it starts, not --init-strength."
        raise ConfigurationError(msg)
    if not spec.uses_dims and options.dims is not None:
        msg = f"Corruption {options.corruption!r} touches every dimension; leave --dims unset."
        raise ConfigurationError(msg)
    if options.dims is not None and options.dims < 1:
        msg = f"--dims must be a positive integer, got {options.dims}."
        raise ConfigurationError(msg)
    if options.init_strength is not None and not (
        options.init_strength > 0 and math.isfinite(options.init_strength)
    ):
        msg = f"--init-strength must be > 0 and finite (the search works on its logarithm), got {options.init_strength}."
        raise ConfigurationError(msg)
    if (
        options.init_strength is not None
        and spec.max_strength is not None
        and options.init_strength > spec.max_strength
    ):
        msg = f"Corruption {options.corruption!r} takes a strength of at most {spec.max_strength:g} (a share of the replacement), got --init-strength {options.init_strength}; pass one in (0, {spec.max_strength:g}]."
        raise ConfigurationError(msg)


def search_selectors(options: TofuOptions) -> tuple[str, ...]:
    """The selectors the strength search runs over, in order (duplicates dropped)."""
    return tuple(dict.fromkeys(options.selectors or (options.selector,)))


def needs_style(options: TofuOptions) -> bool:
    """Whether the search objective needs answers and answer probabilities, not only truth ratios."""
    return options.search_objective == "retained"


def calibration_records(
    scorer: Any, rows: list[dict[str, Any]], options: TofuOptions, *, style: bool = False
) -> list[dict[str, Any]]:
    """Records of ``scorer`` on forget ``rows``: truth ratios, plus greedy answers (at the run's
    ``max_new_tokens``) and answer probabilities when ``style``."""
    return score_qa_set(
        scorer,
        rows,
        paraphrase_field="paraphrased_answer",
        max_new_tokens=options.max_new_tokens,
        generate=style,
        answer_prob=style,
    )


def calibration_ratios(
    scorer: Any, rows: list[dict[str, Any]], options: TofuOptions
) -> list[float]:
    """Truth ratios of ``scorer`` on forget ``rows``: log-probabilities only (what the search compares)."""
    return _ratios(calibration_records(scorer, rows, options))


def answer_style(records: list[dict[str, Any]]) -> tuple[float, float]:
    """(ROUGE-L recall, answer probability) of forget records, as the report computes them."""
    summary = summarize_forget(records)
    return summary["forget_rouge"], summary["forget_prob"]


def match_scores(
    ratios: list[float],
    reference: list[float],
    *,
    style: tuple[float, float] | None = None,
    reference_style: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Every criterion of how well ``ratios`` match the retained model's: the values of ``SEARCH_OBJECTIVES``.

    With ``style`` and ``reference_style`` ((ROUGE-L recall, answer probability) of the method
    and of the retained model) the ``retained`` objective and its parts are added.
    """
    scores = {
        "folded": forget_quality(ratios, reference, fold=True),
        "unfolded": forget_quality(ratios, reference, fold=False),
        "distance": log_ratio_distance(ratios, reference),
    }
    scores["both"] = min(scores["folded"], scores["unfolded"])
    if style is not None and reference_style is not None:
        scores["rouge"], scores["answer_prob"] = style
        scores.update(
            retained_objective(
                scores["folded"],
                scores["unfolded"],
                rouge=style[0],
                reference_rouge=reference_style[0],
                prob=style[1],
                reference_prob=reference_style[1],
            )
        )
    return scores


def corruption_update(parameter: str, value: float, hidden_size: int) -> dict[str, float | int]:
    """The ``with_corruption`` update for a searched ``value``: k is rounded into ``[1, hidden_size]``."""
    if parameter == "dims":
        return {"dims": min(hidden_size, max(1, round(value)))}
    return {"strength": float(value)}


def search_progress_line(
    selector: str,
    parameter: str,
    value: float,
    scores: dict[str, float],
    objective: str,
    *,
    seconds: float,
) -> str:
    """One scored search setting, as the command prints it while the search runs."""
    return (
        f"[search] {selector} {parameter} {value:.4g}: {objective} {scores[objective]:.4g} "
        f"(folded {scores['folded']:.3g}, unfolded {scores['unfolded']:.3g}) {seconds:.0f} s"
    )


def search_strength(
    eco: ECOScorer,
    reference: list[float],
    rows: list[dict[str, Any]],
    options: TofuOptions,
    *,
    details: dict[float, dict[str, float]] | None = None,
    reference_style: tuple[float, float] | None = None,
    points: SearchPoints | None = None,
) -> SearchResult:
    """Pick the corruption setting whose truth ratios best match ``reference`` (the retained model's on ``rows``).

    "Best" is ``options.search_objective``: the log-ratio distance or the ``retained`` objective
    (minimised) or a KS forget quality (maximised). ``retained`` also needs ``reference_style``:
    the retained model's (ROUGE-L recall, answer probability) on ``rows``.

    The search runs over the strength, or over k (rounded to an integer in ``[1, hidden]``)
    for corruptions without a strength; ``SearchResult.strength`` holds that value. ``details``,
    if given, receives every criterion (both forget qualities, the smaller of them, the distance)
    of every setting scored. ``points``, if given, stores each setting as it is scored and
    supplies the ones an interrupted run already scored.
    """
    _check_options(options)
    style = needs_style(options)
    if style and reference_style is None:
        msg = "The 'retained' search objective needs the retained model's ROUGE-L recall and answer probability (reference_style)."
        raise ConfigurationError(msg)
    corruption = eco.policy.corruption
    parameter = searched_parameter(corruption.name)
    hidden = eco.base.backend.hidden_size
    scored: dict[float, dict[str, float]] = {} if details is None else details

    def objective(x: float) -> float:
        update = corruption_update(parameter, x, hidden)
        value = float(update[parameter])
        selector = eco.policy.selection.name
        if value not in scored:
            stored = points.get(selector, value) if points is not None else None
            if stored is not None:
                scored[value] = stored
            else:
                started = time.perf_counter()
                records = calibration_records(
                    eco.with_corruption(force=True, **update), rows, options, style=style
                )
                scored[value] = match_scores(
                    _ratios(records),
                    reference,
                    style=answer_style(records) if style else None,
                    reference_style=reference_style,
                )
                if points is not None:
                    points.add(selector, value, scored[value])
                if options.show_progress:
                    # A setting takes minutes and the search shows nothing else until it ends.
                    print(
                        search_progress_line(
                            selector,
                            parameter,
                            value,
                            scored[value],
                            options.search_objective,
                            seconds=time.perf_counter() - started,
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
        return scored[value][options.search_objective]

    if parameter == "dims":
        init, low, high = float(corruption.dims or 1), 1.0, float(hidden)
    else:
        cap = get_corruption(corruption.name).max_strength
        init, low, high = float(corruption.strength or 0.0), 1e-4, 1e5 if cap is None else cap
    # p-values are driven up to 1 (stop within 0.05), the distances down to 0 (all steps run).
    target, tol = (0.0, 0.0) if options.search_objective in MINIMISED else (1.0, 0.05)
    result = zeroth_order_search(
        objective,
        target=target,
        init=init,
        eps=options.search_eps,
        lr=2.0,
        max_move=0.5,
        min_strength=low,
        max_strength=high,
        max_steps=options.search_steps,
        tol=tol,
    )
    if parameter == "dims":
        # The search moves on a continuous log scale; the log shows the k values actually scored.
        result.strength = float(corruption_update(parameter, result.strength, hidden)["dims"])
        result.evaluations = {
            float(corruption_update(parameter, x, hidden)["dims"]): v
            for x, v in result.evaluations.items()
        }
    return result


@dataclass
class SelectorSearch:
    """One selector's strength search: its result and every criterion of every setting scored."""

    selector: str
    result: SearchResult
    details: dict[float, dict[str, float]]


def search_over_selectors(
    eco: ECOScorer,
    reference: list[float],
    rows: list[dict[str, Any]],
    options: TofuOptions,
    *,
    reference_style: tuple[float, float] | None = None,
    points: SearchPoints | None = None,
) -> tuple[SelectorSearch, list[SelectorSearch]]:
    """:func:`search_strength` once per selector of ``options`` (from ``eco``'s corruption); the
    best by the objective (smallest gap to its target, the first listed on a tie) and all of them.
    """
    _check_options(options)
    searches = []
    for name in search_selectors(options):
        policy = eco.policy.model_copy(update={"selection": SelectionConfig(name=name)})
        scorer = eco.with_policy(policy)
        details: dict[float, dict[str, float]] = {}
        result = search_strength(
            scorer,
            reference,
            rows,
            options,
            details=details,
            reference_style=reference_style,
            points=points,
        )
        log.info("selector %s: best at %.4g, objective %.4g", name, result.strength, result.value)
        searches.append(SelectorSearch(name, result, details))
    best = min(searches, key=lambda x: x.result.gap)
    return best, searches


def _model_scorer(
    folder: Path,
    name: str,
    system: str | None,
    options: TofuOptions,
    out: Path,
    backend: TransformersBackend | None = None,
) -> ModelScorer:
    # The cache file is named by the model's run folder and the system prompt: the two things
    # that decide a plain model's answers.
    tag = hashlib.sha256(json.dumps([str(folder), system]).encode()).hexdigest()[:12]
    return ModelScorer(
        backend or TransformersBackend.from_pretrained(folder),
        name=name,
        system_prompt=system,
        batch_size=options.batch_size,
        cache_file=out / "cache" / f"{name}-{tag}.json",
        show_progress=options.show_progress,
    )


def _prepare(
    options: TofuOptions,
) -> tuple[
    TofuSetting,
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
]:
    setting = load_setting(
        options.split,
        options.data_dir,
        n_retain_authors=options.retain_authors,
        seed=options.seed,
        retain_eval_n=options.retain_eval_n,
    )
    real = _sample(setting.real_authors, options.general_n, options.seed)
    world = _sample(setting.world_facts, options.general_n, options.seed)
    cal_idx, eval_idx = forget_halves(len(setting.forget), options.seed)
    return (
        setting,
        real,
        world,
        [setting.forget[i] for i in cal_idx],
        [setting.forget[i] for i in eval_idx],
    )


def _score_all(
    scorer: Any,
    setting: TofuSetting,
    eval_rows: list[dict[str, Any]],
    real: list[dict[str, Any]],
    world: list[dict[str, Any]],
    options: TofuOptions,
) -> dict[str, Any]:
    n = options.max_new_tokens
    return {
        "forget": score_qa_set(
            scorer, eval_rows, paraphrase_field="paraphrased_answer", max_new_tokens=n
        ),
        "retain": score_qa_set(
            scorer, setting.retain_eval, paraphrase_field="paraphrased_answer", max_new_tokens=n
        ),
        "real_authors": score_qa_set(scorer, real, paraphrase_field=None, max_new_tokens=n),
        "world_facts": score_qa_set(scorer, world, paraphrase_field=None, max_new_tokens=n),
    }


# What a strength search runs: the engine, its backends and the research code (not the framework
# skins, the servers or the command line). A change here may change what a search finds.
_SEARCH_CODE_FOLDERS = ("", "backends", "research", "research/tofu")
_NOT_SEARCH_CODE = frozenset({"cli.py", "demo.py", "__main__.py", "report.py"})


def search_code_version() -> str:
    """A digest of the code a strength search runs, part of the key of its saved log.

    A saved search is reused only by the code that produced it: after a fix to the scoring, the
    corruption or the selection, a rerun searches again instead of keeping a choice the old code
    made (the log's key cannot be told apart by the options alone).
    """
    package = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for folder in _SEARCH_CODE_FOLDERS:
        for source in sorted((package / folder).glob("*.py")):
            if source.name in _NOT_SEARCH_CODE:
                continue
            digest.update(source.relative_to(package).as_posix().encode() + b"\0")
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def precompute(options: TofuOptions, out: str | Path, method: str) -> None:
    """Score one plain method (``retained`` or ``prompt_baseline``) into the shared cache under ``out``.

    Run in a separate process next to :func:`run_tofu` (same options and ``out``), it takes that
    method's share of the work; :func:`run_tofu` then finds the results in the cache. The
    ``retained`` model can be scored as soon as its own fine-tune is done; ``prompt_baseline``
    needs the original model and the guard.
    """
    out = Path(out)
    setting, real, world, cal_rows, eval_rows = _prepare(options)
    only = "retained" if method == "retained" else "original"
    runs = train_models(
        setting, model=options.model, config=options.finetune, out=options.finetune_out, only=only
    )
    if method == "retained":
        scorer = _model_scorer(
            runs["retained"].model_folder, "retained", options.finetune.system_prompt, options, out
        )
        calibration_ratios(scorer, cal_rows, options)
    elif method == "prompt_baseline":
        # Fitted here only so the main run finds it saved in out/guard and reloads it.
        fit_guard(setting, options, out / "guard")
        scorer = _model_scorer(
            runs["original"].model_folder,
            "prompt_baseline",
            baseline_system_prompt(setting),
            options,
            out,
        )
    else:
        msg = f"Only 'retained' and 'prompt_baseline' are scored ahead; got {method!r}."
        raise ValueError(msg)
    _score_all(scorer, setting, eval_rows, real, world, options)


def run_tofu(
    options: TofuOptions, out: str | Path, *, on_stage: Callable[[str, float], None] | None = None
) -> dict[str, Any]:
    """Run the whole comparison; writes records, table, plots and the search log to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        timings[name] = round(time.perf_counter() - started, 1)
        log.info("%s took %.1f s", name, timings[name])
        if on_stage is not None:
            on_stage(name, timings[name])

    _check_options(options)
    t = time.perf_counter()
    setting, real, world, cal_rows, eval_rows = _prepare(options)

    runs = train_models(
        setting,
        model=options.model,
        config=options.finetune,
        out=options.finetune_out,
        show_progress=options.show_progress,
    )
    stage("finetune", t)

    t = time.perf_counter()
    guard = fit_guard(setting, options, out / "guard")
    stage("guard_fit", t)

    original = _model_scorer(
        runs["original"].model_folder, "original", options.finetune.system_prompt, options, out
    )
    retained = _model_scorer(
        runs["retained"].model_folder, "retained", options.finetune.system_prompt, options, out
    )
    prompt_text = baseline_system_prompt(setting)
    prompted = _model_scorer(
        runs["original"].model_folder,
        "prompt_baseline",
        prompt_text,
        options,
        out,
        backend=original.backend,
    )
    selectors = search_selectors(options)
    policy = ECOPolicy(
        corruption=initial_corruption(options, original.backend),
        selection=SelectionConfig(name=selectors[0]),
        restore_prompt_words=options.restore_prompt_words,
    )
    parameter = searched_parameter(policy.corruption.name)
    eco = ECOScorer(
        original,
        guard,
        policy,
        shared_draws=options.shared_draws,
        corruption_draws=options.corruption_draws,
        answer_entities=options.answer_entities,
    )
    refusal = RefusalScorer(original, guard)

    t = time.perf_counter()
    # The search does not depend on the guard (every calibration prompt is corrupted), so a rerun
    # with the same models, corruption settings and code reuses its log.
    code_version = search_code_version()
    search_key = hashlib.sha256(
        json.dumps(
            [
                code_version,
                str(runs["original"].folder),
                str(runs["retained"].folder),
                policy.model_dump(mode="json"),
                options.search_steps,
                options.search_eps,
                options.search_objective,
                options.seed,
                options.split,
                options.max_new_tokens,
                selectors,
                *(["shared_draws"] if options.shared_draws else []),
                *([f"draws={options.corruption_draws}"] if options.corruption_draws > 1 else []),
                *(
                    [f"answer_entities={options.answer_entities}"]
                    if options.answer_entities != "forget-terms"
                    else []
                ),
            ]
        ).encode()
    ).hexdigest()[:16]
    log_path = out / "strength_search.json"
    previous = _cached_json(log_path)
    if previous.get("key") == search_key:
        found = float(previous["strength"])
        search_log = previous
    else:
        style = needs_style(options)
        reference_records = calibration_records(retained, cal_rows, options, style=style)
        reference_style = answer_style(reference_records) if style else None
        best, searches = search_over_selectors(
            eco,
            _ratios(reference_records),
            cal_rows,
            options,
            reference_style=reference_style,
            points=SearchPoints(out / "strength_points.jsonl", search_key),
        )
        found = best.result.strength
        search_log = {
            "key": search_key,
            "code_version": code_version,
            "parameter": parameter,
            "corruption": policy.corruption.name,
            "objective": f"{_OBJECTIVE_TEXT[options.search_objective]} vs the retained model on the calibration half, every prompt corrupted",
            "search_objective": options.search_objective,
            "shared_draws": options.shared_draws,
            "corruption_draws": options.corruption_draws,
            "answer_entities": options.answer_entities,
            "restore_prompt_words": options.restore_prompt_words,
            "calibration_rows": forget_halves(len(setting.forget), options.seed)[0],
            "split": options.split,
            "selector": best.selector,
            **best.result.as_dict(),
            "retained_calibration": (
                {"rouge": reference_style[0], "answer_prob": reference_style[1]}
                if reference_style
                else None
            ),
            "by_selector": [{"selector": x.selector, **x.result.as_dict()} for x in searches],
            # Every setting of every selector, with every criterion (both forget qualities, the
            # distance and, for the retained objective, each of its parts).
            "forget_quality_by_setting": [
                {"selector": x.selector, parameter: k, **v}
                for x in searches
                for k, v in sorted(x.details.items())
            ],
        }
        write_text_atomic(log_path, json.dumps(search_log, indent=2) + "\n")
    chosen = search_log.get("selector", selectors[0])
    eco = eco.with_policy(
        policy.model_copy(update={"selection": SelectionConfig(name=chosen)})
    ).with_corruption(
        force=False, **corruption_update(parameter, found, original.backend.hidden_size)
    )
    stage("strength_search", t)

    results: dict[str, Any] = {}
    records: dict[str, Any] = {}
    for scorer in (original, retained, eco, prompted, refusal):
        t = time.perf_counter()
        sets = _score_all(scorer, setting, eval_rows, real, world, options)
        records[scorer.name] = sets
        results[scorer.name] = {
            **summarize_forget(sets["forget"]),
            **summarize_utility(sets["retain"], sets["real_authors"], sets["world_facts"]),
        }
        stage(f"score_{scorer.name}", t)

    reference = _ratios(records["retained"]["forget"])
    for name in METHODS:
        ratios = _ratios(records[name]["forget"])
        results[name]["forget_quality"] = forget_quality(ratios, reference, fold=True)
        results[name]["forget_quality_unfolded"] = forget_quality(ratios, reference, fold=False)

    summary = {
        "split": options.split,
        "retain_authors": setting.retain_authors,
        "n_forget_calibration": len(cal_rows),
        "n_forget_eval": len(eval_rows),
        "n_retain_eval": len(setting.retain_eval),
        "n_real_authors": len(real),
        "n_world_facts": len(world),
        "finetune": {
            name: {
                "folder": str(r.folder),
                "cached": r.cached,
                "seconds": r.manifest.get("seconds"),
                "steps": r.steps,
                "epoch_losses": r.manifest.get("epoch_losses"),
            }
            for name, r in runs.items()
        },
        "finetune_config": options.finetune.model_dump(mode="json"),
        "policy": eco.policy.model_dump(mode="json"),
        "searched_parameter": parameter,
        "search_objective": options.search_objective,
        "shared_draws": options.shared_draws,
        "corruption_draws": options.corruption_draws,
        "answer_entities": options.answer_entities,
        "restore_prompt_words": options.restore_prompt_words,
        "selectors_searched": list(selectors),
        "selector": chosen,
        "strength": eco.policy.corruption.strength,
        "search_value": search_log["value"],
        "guard_threshold": float(guard.targets[f"tofu-{options.split}"].threshold_),
        "prompt_baseline_system_prompt": prompt_text,
        "refusal": refusal.refusal,
        "timings_seconds": timings,
        "methods": results,
    }
    # Records first, the summary last: a crash between never pairs a new summary with old records.
    write_text_atomic(
        out / "records.jsonl",
        "".join(
            json.dumps({"method": method, "set": set_name, **row}, default=float) + "\n"
            for method, sets in records.items()
            for set_name, rows in sets.items()
            for row in rows
        ),
    )
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2, default=float) + "\n")
    from .report import write_report

    write_report(summary, records, out)
    return summary


def headline(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The one-line JSON: per method, the four figures the issue checks (plus TOFU's unfolded forget quality)."""
    keys = (
        "forget_quality",
        "model_utility",
        "forget_rouge",
        "retain_rouge",
        "forget_quality_unfolded",
    )
    # Six significant digits, not six decimals: a forget quality of 1e-11 must not print as 0.
    return {m: {k: float(f"{float(summary['methods'][m][k]):.6g}") for k in keys} for m in METHODS}
