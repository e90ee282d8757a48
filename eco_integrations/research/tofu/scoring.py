"""The methods compared on TOFU, behind one interface: answer log-probabilities and greedy answers.

* :class:`ModelScorer`: a plain model (the original, the retained, or the original with a
  system prompt, i.e. the prompt baseline).
* :class:`ECOScorer`: the original behind the guard. For a flagged question the corruption is
  applied to the *prompt and answer* tokens when scoring an answer (the paper's log-prob
  protocol, §5.4 of the method notes) and to the prompt only when generating (the engine's path).
* :class:`RefusalScorer`: the original behind the same guard, answering flagged questions with a
  fixed refusal.

Unflagged questions are delegated to the wrapped :class:`ModelScorer`, whose results are
memoised, so a method that leaves a question alone costs nothing extra and gives exactly the
original's numbers for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from ..._files import exclusive, write_text_atomic
from ..._passages import name_mentions
from ..._prompting import (
    PromptInput,
    RenderedPrompt,
    matched_terms,
    render,
    select_positions,
    word_continuations,
)
from ...backends.transformers import TransformersBackend
from ...config import CorruptionConfig, Decision, ECOPolicy, GenerationConfig
from ...corruption import COMMON_CAPITALISED_WORDS, apply_corruption
from ...engine import ECO
from ...guard import Guard
from ..finetune import answer_ids, chat_prompt

log = logging.getLogger(__name__)
# Bump when what the scorers compute changes: cached scores of other code are not reused.
SCORING_CACHE_VERSION = 1

Pair = tuple[str, str]
# Which words of an answer the entities selector corrupts when it is scored (ECOScorer).
ANSWER_ENTITIES = ("forget-terms", "names")
REFUSAL = "I'm sorry, but I can't share any information about that."


def _seed(*texts: str) -> int:
    # One fixed noise draw per (question, answer): reruns and different strengths see the same
    # draw scaled (common random numbers), so strength comparisons are not resampling noise.
    return int(hashlib.sha256("\x1f".join(texts).encode()).hexdigest()[:8], 16)


def _log_mean_exp(values: Sequence[float]) -> float:
    """log of the mean of exp(values): the probability under a mixture of equally likely draws."""
    return float(torch.logsumexp(torch.tensor(values, dtype=torch.float64), 0)) - math.log(
        len(values)
    )


@contextmanager
def progress_bar(
    total: int, desc: str, *, show: bool, unit: str
) -> Iterator[Callable[[int], None]]:
    """A function that advances a progress bar on stderr by its argument (a no-op unless ``show``).

    Scoring one method's answers on forget10 takes minutes (an ECO answer scored under several
    corruption draws, tens of minutes); the bar says how far it is and how long is left.
    """
    if not show or total == 0:
        yield lambda _done: None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
    try:
        yield bar.update
    finally:
        bar.close()


def sequence_logprobs(
    backend: TransformersBackend,
    rows: Sequence[tuple[list[int], list[int], torch.Tensor | None]],
    *,
    batch_size: int = 8,
    advance: Callable[[int], None] | None = None,
) -> list[float]:
    """Mean per-token log P(answer | prompt) for ``(prompt_ids, answer_ids, embeds_or_None)`` rows.

    ``embeds`` (``[len(prompt)+len(answer), hidden]``) replaces the embedding lookup of that row,
    which is how corrupted rows are scored. ``advance`` is called with the number of rows each
    batch scored (a progress bar's update).
    """
    out: list[float] = []
    pad = int(backend.tokenizer.pad_token_id)
    embedding = backend.model.get_input_embeddings()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(len(p) + len(a) for p, a, _ in chunk)
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for b, (p, a, _) in enumerate(chunk):
            ids[b, : len(p) + len(a)] = torch.tensor(p + a)
            mask[b, : len(p) + len(a)] = 1
        with torch.no_grad():
            embeds = embedding(ids.to(backend.device)).clone()
            for b, (_, _, e) in enumerate(chunk):
                if e is not None:
                    embeds[b, : e.shape[0]] = e.to(embeds.dtype)
            # Right padding: positions already start at 0 on every row.
            logits = backend.model(
                inputs_embeds=embeds, attention_mask=mask.to(backend.device)
            ).logits
            for b, (p, a, _) in enumerate(chunk):
                # The logit at position t predicts token t + 1.
                picked = logits[b, len(p) - 1 : len(p) + len(a) - 1].float().log_softmax(-1)
                target = torch.tensor(a, device=picked.device)
                out.append(float(picked.gather(1, target[:, None]).mean()))
        if advance is not None:
            advance(len(chunk))
    return out


class ModelScorer:
    """A plain model asked every question with ``system_prompt`` (``None``: the template's default).

    ``show_progress`` puts a progress bar on stderr while answers are scored or generated (for
    this scorer and for the guarded scorers built on it).
    """

    def __init__(
        self,
        backend: TransformersBackend,
        *,
        name: str,
        system_prompt: str | None = None,
        batch_size: int = 8,
        cache_file: Path | None = None,
        show_progress: bool = False,
    ) -> None:
        self.backend = backend
        self.name = name
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.cache_file = cache_file
        self.show_progress = show_progress
        self._lp: dict[Pair, float] = {}
        self._gen: dict[tuple[str, int], str] = {}
        self._load_cache()

    # A JSON file of results lets separate processes score different methods at the same time
    # (and a rerun skip what is done); it is only valid for one model and system prompt, which
    # the caller encodes in its name, and for one version of the scoring code (stored in it).
    def _load_cache(self) -> None:
        if self.cache_file is None or not self.cache_file.is_file():
            return
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            log.warning(
                "%s cannot be read (%s); its scores are computed again.", self.cache_file, err
            )
            return
        if not isinstance(data, dict) or data.get("version") != SCORING_CACHE_VERSION:
            log.warning(
                "%s was written by other scoring code; its scores are computed again.",
                self.cache_file,
            )
            return
        self._lp.update({(q, a): float(v) for q, a, v in data.get("logprobs", [])})
        self._gen.update({(q, int(n)): t for q, n, t in data.get("generations", [])})

    def _save_cache(self) -> None:
        if self.cache_file is None:
            return
        lock = self.cache_file.with_name(f".{self.cache_file.name}.lock")
        # Merge, then replace, under the lock: two processes scoring into one file at once would
        # otherwise each drop what the other added in between.
        with exclusive(lock, f"saving scores to {self.cache_file}"):
            self._load_cache()
            write_text_atomic(
                self.cache_file,
                json.dumps(
                    {
                        "version": SCORING_CACHE_VERSION,
                        "logprobs": [[q, a, v] for (q, a), v in self._lp.items()],
                        "generations": [[q, n, t] for (q, n), t in self._gen.items()],
                    }
                ),
            )

    def rendered(self, question: str) -> RenderedPrompt:
        return render(self.backend.tokenizer, chat_prompt(question, self.system_prompt))

    def flagged(self, questions: Sequence[str]) -> list[bool]:
        return [False] * len(questions)

    def logprobs(self, pairs: Sequence[Pair]) -> list[float | None]:
        if any(p not in self._lp for p in pairs):
            self._load_cache()  # another process may have scored them since
        todo = [p for p in dict.fromkeys(pairs) if p not in self._lp]
        if todo:
            rows = [
                (self.rendered(q).input_ids, answer_ids(self.backend.tokenizer, a), None)
                for q, a in todo
            ]
            with progress_bar(
                len(rows), f"{self.name}: answers", show=self.show_progress, unit="answer"
            ) as advance:
                values = sequence_logprobs(
                    self.backend, rows, batch_size=self.batch_size, advance=advance
                )
            for pair, value in zip(todo, values, strict=True):
                self._lp[pair] = value
            self._save_cache()
        return [self._lp[p] for p in pairs]

    def generate(self, questions: Sequence[str], *, max_new_tokens: int) -> list[str]:
        if any((q, max_new_tokens) not in self._gen for q in questions):
            self._load_cache()
        todo = [q for q in dict.fromkeys(questions) if (q, max_new_tokens) not in self._gen]
        if todo:
            engine = ECO(self.backend, None, mode="off", batch_size=self.batch_size)
            texts = batched_generation(
                engine,
                [chat_prompt(q, self.system_prompt) for q in todo],
                max_new_tokens=max_new_tokens,
                desc=f"{self.name}: generation",
                show=self.show_progress,
            )
            for q, text in zip(todo, texts, strict=True):
                self._gen[(q, max_new_tokens)] = text
            self._save_cache()
        return [self._gen[(q, max_new_tokens)] for q in questions]


def batched_generation(
    engine: ECO,
    prompts: Sequence[PromptInput],
    *,
    max_new_tokens: int,
    desc: str,
    show: bool,
    decisions: Sequence[Decision] | None = None,
) -> list[str]:
    """The engine's greedy answers to ``prompts``, a batch at a time so a progress bar can move.

    The engine batches in order by its ``batch_size``, and so do these calls: the batches, and
    so the answers, are the ones a single call would give.
    """
    step = engine.batch_size
    texts: list[str] = []
    with progress_bar(len(prompts), desc, show=show, unit="question") as advance:
        for start in range(0, len(prompts), step):
            outs = engine.generate(
                prompts[start : start + step],
                config=GenerationConfig(max_new_tokens=max_new_tokens),
                decisions=None if decisions is None else decisions[start : start + step],
            )
            texts.extend(o.text for o in outs)
            advance(len(outs))
    return texts


class _GuardedScorer:
    """Shared part of the guard-based methods: decisions on the question, delegation otherwise."""

    def __init__(self, base: ModelScorer, guard: Guard, *, name: str) -> None:
        self.base = base
        self.guard = guard
        self.name = name
        self._flags: dict[str, bool] = {}
        # Decisions come from an engine like any served request's, in shadow mode: the scorer
        # applies (or refuses) itself.
        self._decider = ECO(base.backend, guard, mode="shadow", batch_size=base.batch_size)

    def flagged(self, questions: Sequence[str]) -> list[bool]:
        todo = [q for q in dict.fromkeys(questions) if q not in self._flags]
        if todo:
            for q, d in zip(todo, self._decider.decide_texts(todo), strict=True):
                self._flags[q] = d.flagged
        return [self._flags[q] for q in questions]


class ECOScorer(_GuardedScorer):
    """The original model behind the guard, with the policy's corruption on flagged questions.

    ``force=True`` corrupts every question whatever the guard says: the strength search
    calibrates the corruption, not the guard.

    ``shared_draws`` decides how a random corruption is drawn when answers are scored. Off (the
    default, as in the paper's code): one draw per (question, answer) sequence, so
    each answer is weighed after a differently corrupted question and its words get draws of
    their own. On: every answer to a question is scored against the *same* corrupted question
    (the draw the engine's generation takes: a served model reads one corrupted prompt and
    weighs its answers under it), and a word the answers share is corrupted the same way in each
    (one draw per question, token and occurrence). The truth ratio compares the paraphrased and
    the perturbed answers; with draws of their own, part of what it measures is the draws.
    A substitution always shares the question's draw (the answers must all be about the same
    stranger).

    ``corruption_draws`` (K, default 1) scores each answer under K independent draws of the
    corruption and reports the log of the mean, over the draws, of its length-normalised
    probability (the per-token figure the truth ratio and the answer probability read): the
    corrupted model's figure rather than one draw's, whose luck the KS test would otherwise
    measure as well. The first draw is the one above, so K = 1 is the single-draw protocol.
    Greedy answers still come from the first draw, the one the engine generates from.

    ``answer_entities`` decides, for the ``entities`` selector, which words of an answer are
    corrupted when it is scored (the question's are the terms it names either way):

    * ``"forget-terms"`` (default): every term mined from the forget texts. Those texts hold the
      *true* answers, so the paraphrased answer's facts (its titles, awards, genre) are
      corrupted and the perturbed answers' invented ones mostly are not: on forget10's
      evaluation half 22 % of the paraphrased answers' tokens against 18 % of the perturbed
      ones'. Part of the truth ratio's shift is then the selector knowing which answer is right.
    * ``"names"``: the terms the question names, plus every name of the answer by its form (a
      capitalised phrase in mid-sentence, :func:`name_mentions`), right and wrong answers alike,
      as the paper's NER tagging of prompt and answer does.
    """

    def __init__(
        self,
        base: ModelScorer,
        guard: Guard,
        policy: ECOPolicy,
        *,
        name: str = "eco",
        force: bool = False,
        shared_draws: bool = False,
        corruption_draws: int = 1,
        answer_entities: str = "forget-terms",
    ) -> None:
        super().__init__(base, guard, name=name)
        if answer_entities not in ANSWER_ENTITIES:
            msg = f"answer_entities must be one of {', '.join(ANSWER_ENTITIES)}, got {answer_entities!r}."
            raise ValueError(msg)
        if isinstance(corruption_draws, bool) or not (
            isinstance(corruption_draws, int) and corruption_draws >= 1
        ):
            msg = f"corruption_draws must be a whole number >= 1 (1 = one draw, as the paper's code), got {corruption_draws!r}."
            raise ValueError(msg)
        self.policy = policy
        self.force = force
        self.shared_draws = shared_draws
        self.corruption_draws = corruption_draws
        self.answer_entities = answer_entities
        self.engine = ECO(base.backend, guard, policy=policy, batch_size=base.batch_size)

    def with_corruption(self, *, force: bool | None = None, **update: float | int) -> ECOScorer:
        """A copy with the corruption's ``strength`` and/or ``dims`` replaced (the guard's decisions are shared)."""
        corruption = CorruptionConfig(**{**self.policy.corruption.model_dump(), **update})
        return self.with_policy(
            self.policy.model_copy(update={"corruption": corruption}), force=force
        )

    def with_policy(self, policy: ECOPolicy, *, force: bool | None = None) -> ECOScorer:
        """A copy under another policy, every other setting kept (the guard's decisions are shared)."""
        scorer = ECOScorer(
            self.base,
            self.guard,
            policy,
            name=self.name,
            force=self.force if force is None else force,
            shared_draws=self.shared_draws,
            corruption_draws=self.corruption_draws,
            answer_entities=self.answer_entities,
        )
        scorer._flags = self._flags
        return scorer

    def flagged(self, questions: Sequence[str]) -> list[bool]:
        return [True] * len(questions) if self.force else super().flagged(questions)

    def _terms(self) -> list[str]:
        return [t for terms in self.guard.terms.values() for t in terms]

    def _selected(
        self, combined: RenderedPrompt, question: str, answer: str, n: int
    ) -> torch.Tensor:
        """The positions of question + answer (``n`` question tokens) the corruption touches."""
        terms = self._terms()
        mask = select_positions(combined, self.policy.selection, terms)
        if self.answer_entities == "forget-terms" or self.policy.selection.name != "entities":
            return mask
        named = matched_terms(question, terms)
        if not named:
            # No term of the question to follow into the answer: the mined-terms mask stands
            # (it falls back to the whole content when the answer names no term either).
            return mask
        # A title's first word alone ("The" of 'The Breath Between Waves') is no name.
        names = [m for m in name_mentions(answer) if m not in COMMON_CAPITALISED_WORDS]
        in_answer = select_positions(combined, self.policy.selection, [*named, *names])
        mask[n:] = in_answer[n:]
        return mask

    def corrupted_row(
        self, question: str, answer: str, *, draw: int = 0
    ) -> tuple[list[int], list[int], torch.Tensor]:
        """Prompt and answer ids with the corrupted embeddings of the whole sequence.

        ``draw`` picks one of the independent draws of the corruption (``corruption_draws``);
        draw 0 is the engine's.
        """
        tokenizer = self.base.backend.tokenizer
        prompt = self.base.rendered(question)
        ans_ids = answer_ids(tokenizer, answer)
        ans_enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        shift = len(prompt.text)
        offsets = list(prompt.offsets) + [
            (s + shift, e + shift) for s, e in ans_enc["offset_mapping"]
        ]
        offsets += [(0, 0)] * (
            len(ans_ids) - len(ans_enc["input_ids"])
        )  # the end-of-turn token: never selected
        # The answer's words count as content, so the selector covers prompt *and* answer (paper §5.4).
        combined = RenderedPrompt(
            prompt.text + answer,
            list(prompt.input_ids) + ans_ids,
            offsets,
            [*prompt.content_spans, (shift, shift + len(answer))],
            prompt.classified_text,
            known_word=prompt.known_word,
        )
        mask = self._selected(combined, question, answer, len(prompt.input_ids))
        c = self.policy.corruption
        embeds = self.base.backend.embed(combined.input_ids)
        replacements = self._decider.replacements_for(c.name)
        continuations = self._decider.continuations_for(c.name)
        continues_word = word_continuations(combined) if continuations is not None else None

        def seed_of(*texts: str) -> int:
            return _seed(*texts) if draw == 0 else _seed(*texts, f"draw{draw}")

        def corrupt(
            rows: torch.Tensor, rows_mask: torch.Tensor, seed: int, first: int = 0
        ) -> torch.Tensor:
            """``rows`` are the combined tokens from ``first`` on."""
            return apply_corruption(
                c.name,
                rows,
                rows_mask,
                dims=c.dims,
                strength=c.strength,
                generator=torch.Generator().manual_seed(seed),
                replacements=replacements,
                continuations=continuations,
                continues_word=None
                if continues_word is None
                else continues_word[first : first + len(rows)],
            )

        if replacements is None and not self.shared_draws:
            return list(prompt.input_ids), ans_ids, corrupt(embeds, mask, seed_of(question, answer))
        # The question's draw is the one the engine's generation takes from the question alone,
        # the same for every answer scored (class docstring).
        n = len(prompt.input_ids)
        if self.shared_draws:
            answer_part = embeds[n:]
            occurrences: dict[int, int] = {}
            for j in torch.nonzero(mask[n:]).flatten().tolist():
                token = ans_ids[j]
                occurrences[token] = occurrences.get(token, 0) + 1
                one = torch.zeros(len(ans_ids), dtype=torch.bool)
                one[j] = True
                seed = seed_of(question, str(token), str(occurrences[token]))
                answer_part = corrupt(answer_part, one, seed, n)
        else:
            answer_part = corrupt(embeds[n:], mask[n:], seed_of(question, answer), n)
        return (
            list(prompt.input_ids),
            ans_ids,
            torch.cat([corrupt(embeds[:n], mask[:n], seed_of(question)), answer_part]),
        )

    def logprobs(self, pairs: Sequence[Pair]) -> list[float | None]:
        flags = self.flagged([q for q, _ in pairs])
        out: list[float | None] = list(
            self.base.logprobs([p for p, f in zip(pairs, flags, strict=True) if not f])
        )
        hit = [p for p, f in zip(pairs, flags, strict=True) if f]
        draws = self.corruption_draws if hit else 0
        with progress_bar(
            len(hit) * draws,
            f"{self.name}: answers" + (f" ({draws} draws each)" if draws > 1 else ""),
            show=self.base.show_progress,
            unit="answer",
        ) as advance:
            by_draw = [
                sequence_logprobs(
                    self.base.backend,
                    [self.corrupted_row(q, a, draw=k) for q, a in hit],
                    batch_size=self.base.batch_size,
                    advance=advance,
                )
                for k in range(draws)
            ]
        values = [_log_mean_exp(draws) for draws in zip(*by_draw, strict=True)]
        clean, dirty = iter(out), iter(values)
        return [next(dirty) if f else next(clean) for f in flags]

    def generate(self, questions: Sequence[str], *, max_new_tokens: int) -> list[str]:
        flags = self.flagged(questions)
        clean = iter(
            self.base.generate(
                [q for q, f in zip(questions, flags, strict=True) if not f],
                max_new_tokens=max_new_tokens,
            )
        )
        hit = [q for q, f in zip(questions, flags, strict=True) if f]
        dirty_texts: list[str] = []
        if hit:
            # The engine seeds the noise from the question's hash, the same draw as _seed(question).
            dirty_texts = batched_generation(
                self.engine,
                [chat_prompt(q, self.base.system_prompt) for q in hit],
                max_new_tokens=max_new_tokens,
                desc=f"{self.name}: generation",
                show=self.base.show_progress,
                decisions=self.engine.forced_decisions(hit),
            )
        dirty = iter(dirty_texts)
        return [next(dirty) if f else next(clean) for f in flags]


class RefusalScorer(_GuardedScorer):
    """A refusal guardrail: flagged questions get ``refusal``, whatever was asked.

    Such a system puts all its probability on the refusal, so every real answer has the same
    (zero) probability: its log-probabilities are ``None`` and the metrics treat it as
    indifferent between right and wrong answers (truth ratio 1, see :mod:`.evaluate`).
    """

    def __init__(
        self,
        base: ModelScorer,
        guard: Guard,
        *,
        refusal: str = REFUSAL,
        name: str = "refusal_baseline",
    ) -> None:
        super().__init__(base, guard, name=name)
        self.refusal = refusal

    def logprobs(self, pairs: Sequence[Pair]) -> list[float | None]:
        flags = self.flagged([q for q, _ in pairs])
        clean = iter(self.base.logprobs([p for p, f in zip(pairs, flags, strict=True) if not f]))
        return [None if f else next(clean) for f in flags]

    def generate(self, questions: Sequence[str], *, max_new_tokens: int) -> list[str]:
        flags = self.flagged(questions)
        clean = iter(
            self.base.generate(
                [q for q, f in zip(questions, flags, strict=True) if not f],
                max_new_tokens=max_new_tokens,
            )
        )
        return [self.refusal if f else next(clean) for f in flags]
