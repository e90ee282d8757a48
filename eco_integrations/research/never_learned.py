"""How close ECO answers come to those of a model that never learned the target, with no such model.

A retrained model is out of reach for a served model, so the reference is built from the model
itself: each flagged question gets a *counterfactual* twin in which the target's terms are replaced
by invented ones of the same kind (a made-up person for a person, a made-up book title for a title,
a made-up place or organisation). The plain model has never seen the invented names, so its answer
to the twin shows how it talks about something it does not know: fluent, on the question, wrong
the way a stranger is wrong. ECO answers to the real questions are compared with those references:

``leak``
    share of ECO answers that name a target term or a *fact* (whole words, any case). The terms
    are the names, titles and places of :class:`TermSet`; the facts are its words and phrases
    that give the target away (each must occur in the forget texts), such as "wizard" or "scar".
    A fact does not count when the question itself uses it, or when the reference answer to the
    same question's counterfactual uses it: a stranger says it too, so it carries no knowledge.
``fluency``
    mean per-token negative log-likelihood of the ECO answers under the plain model, divided by the
    reference answers' mean. Both are scored after the same neutral user turn, so the question's
    own knowledge does not penalize a wrong answer: this is fluency, not correctness. 1 = as fluent.
    Names (listed or made up, :func:`name_like_words`) are left out of both means: an invented
    name is improbable by construction, whichever side invented it.
``on_topic``
    mean cosine similarity (sentence encoder) of each ECO answer to its question, divided by the
    reference answers' mean similarity to their counterfactual questions. 1 = as much on the question.
    Names are masked in questions and answers first (:func:`mask_proper_names`): a reference that
    echoes the invented name it was asked about would otherwise score for the echo alone, which
    an ECO answer, whose name was corrupted, cannot match.
``distinguishable``
    cross-validated AUROC of a logistic regression telling ECO answers from reference answers by
    their sentence embeddings, names masked alike in both sets. 0.5 = nobody can tell them apart.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .._prompting import render
from ..corruption import COMMON_CAPITALISED_WORDS
from ..exceptions import ArtifactError, InvalidInputError

Kind = Literal["person", "title", "place", "organisation", "thing"]
Candidate = TypeVar("Candidate")
NEUTRAL_TURN = "Say something."
"""The user turn that answers are scored after for fluency (the same for ECO and references)."""

_ONSETS: tuple[str, ...] = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n")
_ONSETS += ("p", "r", "s", "t", "th", "v", "w", "z", "st", "tr", "cl")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "ia")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "nd", "m")
_PLACE_SUFFIXES = ("holt", "mere", "wick", "ford", "stead", "moor", "dale", "combe")
_STREETS = ("Row", "Lane", "Street", "Court", "Way")
_GROUPS = ("Circle", "Guild", "League", "Society", "Brotherhood", "Council")
_TITLE_NOUNS: tuple[str, ...] = ("Lantern", "Orchard", "Harbour", "Ledger", "Compass", "Tower")
_TITLE_NOUNS += ("Meadow", "Ember", "Glass", "Winter", "Bridge", "Mirror")
_ENGLISH = {"The", "of", *_STREETS, *_GROUPS, *_TITLE_NOUNS}
_ENGLISH_LOWER = {w.lower() for w in _ENGLISH}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TermSet(_Strict):
    """Questions about a target, and the target's terms with their kind (for the replacements)."""

    target: str
    questions: list[str] = Field(min_length=1)
    terms: dict[str, Kind] = Field(min_length=1)
    facts: list[str] = Field(
        default_factory=list, description="Words that give the target away (see ``leak``)."
    )

    def check_facts(self, forget: Sequence[str]) -> None:
        """Refuse facts that the forget texts do not contain: a leak must trace back to them."""
        blob = "\n".join(forget).lower()
        missing = [f for f in self.facts if f.lower() not in blob]
        if missing:
            msg = f"Facts not found in the forget texts: {missing}; remove them or add the texts."
            raise InvalidInputError(msg)

    @classmethod
    def load(cls, path: str | Path) -> TermSet:
        try:
            return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            msg = f"No term set at {path}; write a JSON file with target, questions and terms."
            raise ArtifactError(msg) from None


class Counterfactual(_Strict):
    """A question with the target's terms replaced by invented ones."""

    original: str
    prompt: str
    replacements: dict[str, str] = Field(description="Each term found (as written) -> invention.")
    invented: list[str] = Field(
        description="The coined words in the replacements (not the English ones of a title)."
    )


# Written variants of one term: "Mad-Eye Moody", "Mad Eye Moody", "Mad\u2011Eye\u00a0Moody" and
# a line break inside it are the same name, and so are straight and curly apostrophes.
_SEPARATORS = r"[\s\-\u2010-\u2015\u2212]"
_APOSTROPHES = "'\u2018\u2019\u02bc"


def _spelled(term: str) -> str:
    """The regex for ``term`` as written any of those ways."""
    words = [w for w in re.split(_SEPARATORS + "+", term.strip()) if w]
    return (_SEPARATORS + "+").join(
        re.sub(f"[{_APOSTROPHES}]", f"[{_APOSTROPHES}]", re.escape(w)) for w in words
    )


def _term_pattern(terms: Sequence[str]) -> re.Pattern[str]:
    # Longest first, so a title wins over the name inside it.
    ordered = sorted({t.strip() for t in terms if t.strip()}, key=lambda t: (-len(t), t))
    if not ordered:
        msg = "No terms given; pass the target's names, titles and places."
        raise InvalidInputError(msg)
    alternatives = "|".join(_spelled(t) for t in ordered)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _term_written(written: str, terms: Sequence[str]) -> str:
    """The term of ``terms`` that the match ``written`` is a spelling of."""
    for term in sorted(terms, key=lambda t: (-len(t), t)):
        if term.strip() and re.fullmatch(_spelled(term), written, re.IGNORECASE):
            return term
    msg = f"{written!r} matches none of the terms; this is a bug, please report it."
    raise AssertionError(msg)


def find_terms(text: str, terms: Sequence[str]) -> list[str]:
    """The terms in ``text`` as written there (whole words, any case), longest match first."""
    return [m.group(0) for m in _term_pattern(terms).finditer(text)]


def _forbidden(terms: Sequence[str]) -> set[str]:
    return {w.lower() for t in terms for w in re.findall(r"\w+", t)}


def _invented_word(rng: random.Random, forbidden: set[str], syllables: tuple[int, int]) -> str:
    for _ in range(1000):
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
            for _ in range(rng.randint(*syllables))
        )
        if word not in forbidden and not any(len(f) > 3 and f in word for f in forbidden):
            return word.capitalize()
    msg = "Could not invent a word that avoids every term; the term list is implausibly large."
    raise InvalidInputError(msg)


def _rng(seed: int, *key: str) -> random.Random:
    # A string seed is hashed by `random` itself (SHA-512), so it is stable across processes.
    return random.Random(":".join([str(seed), *key]))


def invent(term: str, kind: Kind, *, seed: int, avoid: Sequence[str] = ()) -> str:
    """A made-up replacement for ``term`` of the same kind, the same for one seed.

    People are replaced word by word (so "Harry Potter" and "Lily Potter" keep a shared surname);
    titles become "The <noun> of <invented>", places an invented place name, organisations an
    invented name plus a group word. Nothing in ``avoid`` (nor ``term``) appears in the result.
    """
    forbidden = _forbidden([term, *avoid])
    words = term.split()
    if kind == "person":
        return " ".join(
            _invented_word(_rng(seed, "person", w.lower()), forbidden, (2, 2)) for w in words
        )
    rng = _rng(seed, kind, term.lower())

    def english(words: tuple[str, ...]) -> str:
        # The English words are checked too: "The Tower of ..." must not reuse a term's "Tower".
        return rng.choice([w for w in words if w.lower() not in forbidden] or [""]).strip()

    if kind == "title":
        noun = english(_TITLE_NOUNS)
        invented = _invented_word(rng, forbidden, (2, 2))
        return f"The {noun} of {invented}" if noun else f"The {invented}"
    if kind == "place":
        root = _invented_word(rng, forbidden, (1, 2))
        place = root + rng.choice(_PLACE_SUFFIXES)
        street = english(_STREETS) if len(words) > 1 else ""
        return f"{place} {street}" if street else place
    if kind == "organisation":
        root = _invented_word(rng, forbidden, (2, 2))
        group = english(_GROUPS) if len(words) > 1 else ""
        return f"{root} {group}" if group else root
    return " ".join(_invented_word(rng, forbidden, (2, 2)) for _ in words)


def counterfactual(prompt: str, terms: Mapping[str, Kind], *, seed: int = 0) -> Counterfactual:
    """``prompt`` with every term replaced by an invented one of its kind (deterministic in seed)."""
    names = list(terms)
    replacements: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        written = match.group(0)
        # By the term it spells: a match may differ from every term's lower() ("Hogwartſ",
        # "Mad Eye Moody" for "Mad-Eye Moody").
        invented = invent(written, terms[_term_written(written, names)], seed=seed, avoid=names)
        if written.islower():
            invented = invented.lower()
        replacements[written] = invented
        return invented

    out = _term_pattern(names).sub(replace, prompt)
    coined = {
        w
        for r in replacements.values()
        for w in re.findall(r"[\w-]+", r)
        if w.lower() not in _ENGLISH_LOWER  # "the" of a lower-case title is no invented name
    }
    return Counterfactual(
        original=prompt, prompt=out, replacements=replacements, invented=sorted(coined)
    )


def mask_names(text: str, names: Sequence[str], placeholder: str = "X") -> str:
    """``text`` with every whole-word occurrence of ``names`` (any case) replaced by ``placeholder``."""
    return _term_pattern(names).sub(placeholder, text) if any(n.strip() for n in names) else text


_CAPITALISED = re.compile(r"(?<![\w-])[A-Z][\w-]*")


def _is_name(word: str) -> bool:
    return word not in COMMON_CAPITALISED_WORDS


def name_like_words(text: str) -> list[str]:
    """The capitalised words of ``text`` outside
    :data:`~eco_integrations.corruption.COMMON_CAPITALISED_WORDS`: the names an answer uses,
    listed or made up."""
    return [m.group(0) for m in _CAPITALISED.finditer(text) if _is_name(m.group(0))]


def mask_proper_names(text: str, names: Sequence[str] = (), placeholder: str = "X") -> str:
    """``text`` with ``names`` and every other name-like word masked, a run of them as one
    ``placeholder``.

    A name-like word is a capitalised one outside
    :data:`~eco_integrations.corruption.COMMON_CAPITALISED_WORDS` ("The", "He", "In"...). ECO
    and reference answers are masked alike: a reference echoes the invented name it was asked
    about, an ECO answer cannot echo the corrupted one and makes up another; masking only the
    listed names would leave that made-up name in one set and a placeholder in the other, which
    tells the sets apart by spelling, not by how they talk.
    """
    masked = mask_names(text, names, placeholder)
    masked = _CAPITALISED.sub(lambda m: placeholder if _is_name(m.group(0)) else m.group(0), masked)
    run = re.escape(placeholder)
    return re.sub(rf"{run}(?:[\s.-]+{run}(?!\w))+", placeholder, masked)


class LeakHit(_Strict):
    index: int
    terms: list[str]
    facts: list[str]


class LeakReport(_Strict):
    rate: float = Field(description="Share of answers with at least one term or fact word.")
    hits: list[LeakHit]


def leak(
    answers: Sequence[str],
    questions: Sequence[str],
    *,
    terms: Sequence[str],
    facts: Sequence[str] = (),
    stranger_answers: Sequence[str] | None = None,
) -> LeakReport:
    """Which answers name a term or a fact (see the module docstring for what counts).

    A term the question itself uses does not count: repeating the name asked about is what a
    stranger does too (the references repeat their invented names). ``stranger_answers`` are the reference answers, one per question in the same order: a fact
    the question or that question's reference answer uses does not count.
    """
    if len(answers) != len(questions):
        msg = (
            f"{len(answers)} answers for {len(questions)} questions; pass one answer per question."
        )
        raise InvalidInputError(msg)
    if stranger_answers is not None and len(stranger_answers) != len(answers):
        msg = (
            f"{len(stranger_answers)} reference answers for {len(answers)} answers; pass one each."
        )
        raise InvalidInputError(msg)
    hits = []
    for i, (answer, question) in enumerate(zip(answers, questions, strict=True)):
        named = sorted(
            {t.lower() for t in find_terms(answer, terms) if not find_terms(question, [t])}
        )
        used: list[str] = []
        if facts:
            stranger = stranger_answers[i] if stranger_answers is not None else ""
            # Each fact on its own: a longer one the question uses ("lightning scar") must not
            # hide a shorter one inside it ("scar") from the excuse.
            said = f"{question}\n{stranger}"
            excused = {f.strip().lower() for f in facts if find_terms(said, [f])}
            used = sorted(
                {_term_written(f, facts).strip().lower() for f in find_terms(answer, facts)}
                - excused
            )
        if named or used:
            hits.append(LeakHit(index=i, terms=named, facts=used))
    return LeakReport(rate=len(hits) / len(answers) if answers else 0.0, hits=hits)


def answer_nll(
    model: Any,
    tokenizer: Any,
    answers: Sequence[str],
    *,
    skip: Sequence[Sequence[str]] | None = None,
) -> list[float]:
    """Per-token negative log-likelihood of each answer after the neutral user turn.

    ``skip`` holds, per answer, names whose tokens are left out of the mean: an invented name is
    improbable by construction, and fluency is about the words the model chose around it (when
    every token is a skipped name, all are kept). An empty answer is scored as the end-of-sequence
    token alone, so it is never infinite.
    """
    if skip is not None and len(skip) != len(answers):
        msg = f"{len(skip)} skip lists for {len(answers)} answers; pass one per answer (or None)."
        raise InvalidInputError(msg)
    prefix = render(tokenizer, [{"role": "user", "content": NEUTRAL_TURN}]).input_ids
    out = []
    for i, answer in enumerate(answers):
        enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        keep = [True] * len(ids)
        names = [n for n in (skip[i] if skip is not None else ()) if n.strip()]
        if names and ids:
            spans = [m.span() for m in _term_pattern(names).finditer(answer)]
            keep = [
                not any(start < end_s and end > start_s for start_s, end_s in spans)
                for start, end in enc["offset_mapping"]
            ]
            if not any(keep):
                keep = [True] * len(ids)
        if not ids:
            ids, keep = [int(tokenizer.eos_token_id)], [True]
        full = torch.tensor([prefix + ids])
        with torch.inference_mode():
            logits = model(input_ids=full).logits[0, len(prefix) - 1 : -1].float()
        losses = torch.nn.functional.cross_entropy(logits, torch.tensor(ids), reduction="none")
        out.append(float(losses[torch.tensor(keep)].mean()))
    return out


class Encodes(Protocol):
    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray: ...


def question_similarity(
    encoder: Encodes, questions: Sequence[str], answers: Sequence[str]
) -> list[float]:
    """Cosine similarity of each answer to its question."""
    if len(answers) != len(questions):
        msg = (
            f"{len(answers)} answers for {len(questions)} questions; pass one answer per question."
        )
        raise InvalidInputError(msg)
    q = _unit(encoder.encode(list(questions)))
    a = _unit(encoder.encode(list(answers)))
    return [float(x) for x in (q * a).sum(axis=1)]


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None))


def distinguishable(
    first: np.ndarray, second: np.ndarray, *, folds: int = 5, seed: int = 0
) -> float:
    """Cross-validated AUROC of a logistic regression telling ``first`` rows from ``second`` rows.

    Every row is scored by a model fit without it; 0.5 means the two sets cannot be told apart,
    1.0 that they always can. Below 0.5 is chance too, not "less than indistinguishable": on
    small sets that cannot be told apart, fitting without each row leans its score toward the
    other set (identical sets of 10 rows read about 0.04). :func:`gap` counts only the excess
    over 0.5, and comparisons should too.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    smallest = min(len(first), len(second))
    if smallest < 2:
        msg = f"distinguishable needs at least 2 rows per set, got {len(first)} and {len(second)}."
        raise InvalidInputError(msg)
    x = np.concatenate([np.asarray(first), np.asarray(second)]).astype(np.float64)
    y = np.array([1] * len(first) + [0] * len(second))
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    scores = cross_val_predict(
        LogisticRegression(max_iter=2000), x, y, cv=splitter, method="predict_proba"
    )[:, 1]
    return float(roc_auc_score(y, scores))


class References(_Strict):
    """The reference side, computed once and reused across corruption settings."""

    counterfactuals: list[Counterfactual]
    answers: list[str]
    nll: list[float]
    similarity: list[float]


class NeverLearnedReport(_Strict):
    """The four figures for one corruption setting, and what they were computed from."""

    leak: float
    fluency: float = Field(description="ECO mean per-token NLL / reference mean (1 = as fluent).")
    on_topic: float = Field(description="ECO mean question similarity / reference mean.")
    distinguishable: float = Field(description="Cross-validated AUROC, ECO vs reference answers.")
    eco_nll: float
    reference_nll: float
    eco_similarity: float
    reference_similarity: float
    answers: int
    leaks: list[LeakHit]


def references(
    counterfactuals: Sequence[Counterfactual],
    answers: Sequence[str],
    *,
    model: Any,
    tokenizer: Any,
    encoder: Encodes,
) -> References:
    """Score the plain model's answers to the counterfactual questions."""
    unchanged = [c.original for c in counterfactuals if not c.replacements]
    if unchanged:
        msg = (
            f"{len(unchanged)} question(s) name no target term, so their counterfactual twin is the "
            f"question itself and the plain model's answer to it is not a stranger's: {unchanged[:3]}. "
            "Drop them (keep the questions find_terms finds a term in), or add their names to the terms."
        )
        raise InvalidInputError(msg)
    return References(
        counterfactuals=list(counterfactuals),
        answers=list(answers),
        nll=answer_nll(
            model,
            tokenizer,
            answers,
            skip=[
                [*c.invented, *name_like_words(a)]
                for a, c in zip(answers, counterfactuals, strict=True)
            ],
        ),
        similarity=question_similarity(
            encoder,
            [mask_proper_names(c.prompt, c.invented) for c in counterfactuals],
            [
                mask_proper_names(a, c.invented)
                for a, c in zip(answers, counterfactuals, strict=True)
            ],
        ),
    )


def plain_answers(
    backend: Any, prompts: Sequence[str], config: Any, *, batch_size: int = 16
) -> list[str]:
    """The plain model's answers (no guard, no corruption) to ``prompts``, ``batch_size`` at a time.

    ``backend`` is an engine backend (``generate(rows, config)``); ``config`` a GenerationConfig.
    """
    from ..backends import PreparedRow

    tokenizer = backend.tokenizer
    rows = [PreparedRow(render(tokenizer, p).input_ids) for p in prompts]
    return [
        g.text
        for start in range(0, len(rows), batch_size)
        for g in backend.generate(rows[start : start + batch_size], config)
    ]


def measure(
    eco_answers: Sequence[str],
    reference: References,
    *,
    model: Any,
    tokenizer: Any,
    encoder: Encodes,
    terms: Sequence[str],
    facts: Sequence[str] = (),
) -> NeverLearnedReport:
    """Compare ECO's answers to the real questions with the references (see the module docstring)."""
    questions = [c.original for c in reference.counterfactuals]
    if len(eco_answers) != len(questions):
        msg = f"{len(eco_answers)} ECO answers for {len(questions)} questions; answer each once."
        raise InvalidInputError(msg)
    leaks = leak(
        eco_answers, questions, terms=terms, facts=facts, stranger_answers=reference.answers
    )
    nll = answer_nll(
        model, tokenizer, eco_answers, skip=[[*terms, *name_like_words(a)] for a in eco_answers]
    )
    # Names are masked, alike on both sides, before the similarity and the classifier (see
    # mask_proper_names): spelling alone would tell the sets apart, not how they talk.
    eco_masked = [mask_proper_names(a, terms) for a in eco_answers]
    similarity = question_similarity(
        encoder, [mask_proper_names(q, terms) for q in questions], eco_masked
    )
    eco_nll, ref_nll = float(np.mean(nll)), float(np.mean(reference.nll))
    eco_sim, ref_sim = float(np.mean(similarity)), float(np.mean(reference.similarity))
    eco_rows, reference_rows = _masked_embeddings(eco_masked, reference, encoder)
    return NeverLearnedReport(
        leak=leaks.rate,
        fluency=_ratio(eco_nll, ref_nll, "per-token NLL"),
        on_topic=_ratio(eco_sim, ref_sim, "question similarity"),
        distinguishable=distinguishable(eco_rows, reference_rows),
        eco_nll=eco_nll,
        reference_nll=ref_nll,
        eco_similarity=eco_sim,
        reference_similarity=ref_sim,
        answers=len(eco_answers),
        leaks=leaks.hits,
    )


def _masked_embeddings(
    eco_masked: Sequence[str], reference: References, encoder: Encodes
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of ECO's answers (names already masked) and of the references (their invented
    names masked), the rows :func:`distinguishable` compares."""
    masked = [*eco_masked] + [
        mask_proper_names(a, c.invented)
        for a, c in zip(reference.answers, reference.counterfactuals, strict=True)
    ]
    embeddings = np.asarray(encoder.encode(masked))
    return embeddings[: len(eco_masked)], embeddings[len(eco_masked) :]


def distinguishable_splits(
    eco_answers: Sequence[str],
    reference: References,
    *,
    encoder: Encodes,
    terms: Sequence[str],
    splits: int = 20,
) -> list[float]:
    """:func:`distinguishable` of the same answers over ``splits`` cross-validation splits
    (seeds 0, 1, ...; seed 0 is :func:`measure`'s): on a few dozen answers the figure moves with
    the split, and this says by how much."""
    if splits < 1:
        msg = f"splits must be at least 1, got {splits}."
        raise InvalidInputError(msg)
    if len(eco_answers) != len(reference.answers):
        msg = f"{len(eco_answers)} ECO answers for {len(reference.answers)} references; answer each question once."
        raise InvalidInputError(msg)
    eco_rows, reference_rows = _masked_embeddings(
        [mask_proper_names(a, terms) for a in eco_answers], reference, encoder
    )
    return [distinguishable(eco_rows, reference_rows, seed=seed) for seed in range(splits)]


def _ratio(value: float, reference: float, what: str) -> float:
    # A ratio to a reference at or below 0 has no meaning (its sign flips, or it is infinite,
    # which no JSON line can hold): say what is wrong instead of reporting it.
    if not reference > 0:
        msg = (
            f"The reference answers' mean {what} is {reference:.4g}; fluency and on_topic are ratios "
            "to it and need it above 0. Check the reference answers (empty, or unrelated to their "
            "questions) and the encoder."
        )
        raise InvalidInputError(msg)
    return value / reference


def gap(report: NeverLearnedReport) -> float:
    """Distance from the references' answers: 0 when the answers are like a stranger's.

    ``mean(|fluency - 1|, |on_topic - 1|, 2 * max(distinguishable - 0.5, 0))``: each term is 0
    for answers like the references' and about 1 for answers nothing like them.
    """
    return (
        abs(report.fluency - 1)
        + abs(report.on_topic - 1)
        + 2 * max(report.distinguishable - 0.5, 0.0)
    ) / 3


def choose_without_leak(
    candidates: Sequence[tuple[Candidate, NeverLearnedReport]], *, target: float = 0.0
) -> tuple[Candidate, NeverLearnedReport] | None:
    """The candidate whose :func:`gap` is closest to ``target`` (0: the smallest gap) among those
    whose ``leak`` is 0; None when every candidate leaks.

    A leaking setting is never chosen, however small its gap: an answer naming the target is not
    one a model that never learned it would give. Ties keep the first candidate.
    """
    clean = [c for c in candidates if c[1].leak == 0]
    return min(clean, key=lambda c: abs(gap(c[1]) - target)) if clean else None
