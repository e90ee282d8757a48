"""The guard: ECO's prompt classifier, one scikit-learn estimator per forget target.

A :class:`PromptGuard` is a class-balanced logistic regression on sentence embeddings plus
TF-IDF word and character n-grams (character n-grams catch names, typos and transliterations
the encoder blurs). Its threshold is picked from *cross-validated* retain scores, so the false
positive rate it stores was measured on texts the classifier had not seen. A :class:`Guard` holds
several named targets over one shared encoder and saves to a folder of JSON + safetensors.

Every text is normalized (:func:`~eco_integrations._normalize.normalize_text`: NFKC, invisible
and control characters, look-alike letters, case, spaced letters) before it is embedded or
counted, when fitting and when scoring alike, and a decision's ``text_sha256`` is of that text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ._files import interrupted_save, staged_folder
from ._integrity import (
    INTEGRITY_FILE,
    check_manifest_values,
    saved_target_folders,
    seal,
    usable_threshold,
    verify,
)
from ._knowledge import ForgetPhrases, near_miss_texts
from ._normalize import normalize_text
from ._passages import LONG_TEXT_CHARS, passages
from ._passages import mine_terms as _mine_terms
from .config import Decision
from .encoder import (
    SentenceEncoder,
    encoder_fingerprint,
    encoder_identity,
    encoder_name,
    text_sha256,
)
from .exceptions import ArtifactError, ConfigurationError, GuardNotFittedError, InvalidInputError

# 2: passage_chars and the encoder precision in the manifest; 3: features of normalized texts;
# 4: forget-only phrases and near-miss negatives; 5: phrases matched through two typos in long
# words (a schema-4 threshold was picked with the stricter matcher's scores) and dated facts;
# 6: forget persons' names and the fit texts' ordinary words, for namesakes (the threshold was
# picked from scores with namesakes capped); 7: the forget texts' other words, so a phrase written
# beside somebody else's name does not count, and long quoted titles of common words do;
# 8: the fit texts' embeddings, for the nearest-example term (neighbour_weight). A version-7
# folder has no such term and scores the same under version 8, so it is still read.
GUARD_SCHEMA_VERSION = 8
_READABLE_SCHEMA_VERSIONS = (7, 8)
_LOG = logging.getLogger(__name__)

_WORD = {
    "analyzer": "word",
    "ngram_range": (1, 2),
    "lowercase": True,
    "token_pattern": r"(?u)\b\w+\b",
}
_CHAR = {"analyzer": "char_wb", "ngram_range": (2, 5), "lowercase": True}


def check_texts(texts: object, what: str = "texts") -> list[str]:
    """A list of non-empty strings, or a clear error naming the bad item."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        hint = "; wrap a single text as [text]" if isinstance(texts, (str, bytes)) else ""
        msg = f"{what} must be a list of strings, got {type(texts).__name__}{hint}."
        raise InvalidInputError(msg)
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            msg = f"{what}[{i}] is {type(text).__name__}, not a string."
            raise InvalidInputError(msg)
        if not text.strip():
            msg = f"{what}[{i}] is empty; remove empty lines from the input."
            raise InvalidInputError(msg)
    return out


def _as_encoder(encoder: object) -> SentenceEncoder | None:
    """An encoder argument: None, an encoder, or a sentence-transformers folder's path."""
    if encoder is None or (hasattr(encoder, "encode") and not isinstance(encoder, (str, bytes))):
        return encoder  # type: ignore[return-value]  # duck-typed encoders are welcome
    if isinstance(encoder, (str, os.PathLike)):
        return SentenceEncoder(encoder)
    msg = f"encoder must be a SentenceEncoder or a sentence-transformers folder, got {type(encoder).__name__}."
    raise ConfigurationError(msg)


def check_threshold(threshold: float | None) -> float | None:
    """A per-call threshold: None (each target's own), or a probability in [0, 1)."""
    if threshold is None:
        return None
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or not 0.0 <= threshold < 1.0
    ):
        msg = f"A threshold is a probability in [0, 1), got {threshold!r}."
        raise InvalidInputError(msg)
    return float(threshold)


def unusable_score(decisions: Sequence[Decision]) -> str | None:
    """What is wrong with the first decision whose score is missing or not finite ("a score of
    nan"), None when every score can be compared with a threshold. A guard in that state must
    fail closed: such a score is never above any threshold."""
    return next(
        (
            f"a score of {d.score}"
            for d in decisions
            if d.score is None or not math.isfinite(d.score)
        ),
        None,
    )


def normalized_texts(texts: object, what: str = "texts") -> list[str]:
    """:func:`check_texts`, then each text normalized; a text that normalizes to nothing is an error."""
    out = [normalize_text(t) for t in check_texts(texts, what)]
    for i, text in enumerate(out):
        if not text:
            msg = f"{what}[{i}] holds only invisible or control characters; nothing is left to classify."
            raise InvalidInputError(msg)
    return out


class _Tfidf:
    """TF-IDF with a fixed vocabulary, rebuilt from arrays (no pickled vectorizer)."""

    def __init__(
        self,
        options: dict[str, Any],
        vocabulary: list[str],
        idf: np.ndarray,
        ratio: np.ndarray | None = None,
    ) -> None:
        self.options, self.vocabulary, self.idf = options, vocabulary, idf.astype(np.float32)
        # Naive-Bayes log-count ratios (forget vs retain) scale each n-gram: rare names that occur
        # only in forget texts get a large weight before the logistic regression sees them.
        self.ratio = ratio
        self._index = {t: i for i, t in enumerate(vocabulary)}
        self._analyze = CountVectorizer(**options).build_analyzer()

    @classmethod
    def fit(
        cls, texts: list[str], labels: np.ndarray, options: dict[str, Any], max_features: int
    ) -> _Tfidf:
        vec = TfidfVectorizer(
            sublinear_tf=True, max_features=max_features, dtype=np.float32, **options
        )
        vec.fit(texts)
        lex = cls(options, list(vec.get_feature_names_out()), vec.idf_)
        tfidf = lex.transform(texts)
        pos = np.asarray(tfidf[labels == 1].sum(0)).ravel() + 1.0
        neg = np.asarray(tfidf[labels == 0].sum(0)).ravel() + 1.0
        lex.ratio = np.log((pos / pos.sum()) / (neg / neg.sum())).astype(np.float32)
        return lex

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Sublinear TF-IDF, L2-normalised per text, times the NB ratios: sklearn's arithmetic.

        Built row by row from the analyzer: sklearn's ``CountVectorizer.transform`` spends most
        of a single short prompt's half millisecond on validation and sparse bookkeeping.
        """
        values, cols, bounds, _ = self._rows(texts)
        return sp.csr_matrix((values, cols, bounds), shape=(len(texts), len(self.vocabulary)))

    def dot(self, texts: list[str], coef: np.ndarray) -> np.ndarray:
        """``transform(texts) @ coef`` in float64, without building the sparse matrix (a
        quarter of a millisecond of a single prompt's scoring went to scipy's bookkeeping)."""
        values, cols, _, row_of = self._rows(texts)
        products = values.astype(np.float64) * np.asarray(coef, dtype=np.float64)[cols]
        dots: np.ndarray = np.bincount(row_of, weights=products, minlength=len(texts))
        return dots

    def _rows(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """CSR parts of :meth:`transform`: float32 values, column indices, row bounds, and
        each value's row."""
        index, indptr = self._index, [0]
        columns: list[int] = []
        counts: list[int] = []
        for text in texts:
            found = Counter(j for j in map(index.get, self._analyze(text)) if j is not None)
            row = sorted(found)
            columns.extend(row)
            counts.extend(found[j] for j in row)
            indptr.append(len(columns))
        cols = np.asarray(columns, dtype=np.int64)
        values = (1.0 + np.log(np.asarray(counts, dtype=np.float32))) * self.idf[cols]
        bounds = np.asarray(indptr)
        row_of = np.repeat(np.arange(len(texts)), np.diff(bounds))
        norms = np.sqrt(
            np.bincount(row_of, weights=values.astype(np.float64) ** 2, minlength=len(texts))
        ).astype(np.float32)
        values = values / np.where(norms > 0, norms, 1.0)[row_of]
        if self.ratio is not None:
            values = values * self.ratio[cols]
        return values.astype(np.float32), cols, bounds, row_of


@dataclass(frozen=True)
class _Neighbours:
    """The fit texts' embeddings at unit length, forget and retain, for the nearest-example term."""

    forget: np.ndarray
    retain: np.ndarray

    @classmethod
    def of(cls, emb: np.ndarray, labels: np.ndarray) -> _Neighbours:
        unit = _unit_rows(emb)
        return cls(unit[labels == 1], unit[labels == 0])

    def nearest(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cosine of each row to its nearest forget example and to its nearest retain example."""
        unit = _unit_rows(emb)
        return (unit @ self.forget.T).max(axis=1), (unit @ self.retain.T).max(axis=1)

    def margin(self, emb: np.ndarray) -> np.ndarray:
        """Cosine to the nearest forget example minus cosine to the nearest retain example."""
        nearest_forget, nearest_retain = self.nearest(emb)
        margin: np.ndarray = (nearest_forget - nearest_retain).astype(np.float64)
        return margin


def _unit_rows(emb: np.ndarray) -> np.ndarray:
    # Encoders that do not normalize their output are compared by cosine all the same.
    rows = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: np.ndarray = rows / np.maximum(norms, 1e-12)
    return unit


class PromptGuard(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # sklearn ships no stubs
    """Binary forget-vs-retain classifier with a cross-validated threshold.

    A logistic regression (inverse penalty ``C``) over the sentence embedding, scaled by
    ``embedding_weight``, and TF-IDF word and character n-grams weighted by their forget/retain
    ratios; ``knowledge``, ``near_misses`` and ``neighbour_weight`` are described in :meth:`fit`.

    >>> guard = PromptGuard(target_fpr=0.01).fit(texts, labels)      # doctest: +SKIP
    >>> guard.predict_proba(["Who wrote Harry Potter?"])[:, 1]      # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: SentenceEncoder | None = None,
        *,
        target_fpr: float = 0.01,
        lexical: bool = True,
        C: float = 1.0,
        embedding_weight: float = 1.0,
        cv: int = 5,
        cv_repeats: int = 1,
        max_word_features: int = 30000,
        max_char_features: int = 60000,
        knowledge: bool = False,
        phrase_score: float = 0.99,
        typo_phrase_score: float = 0.9,
        dated_fact_score: float = 0.9,
        namesake_score: float = 0.0,
        near_misses: bool = False,
        near_miss_weight: float = 0.3,
        neighbour_weight: float = 0.0,
        random_state: int = 0,
    ) -> None:
        self.encoder = encoder
        self.target_fpr = target_fpr
        self.lexical = lexical
        self.C = C
        self.embedding_weight = embedding_weight
        self.cv = cv
        self.cv_repeats = cv_repeats
        self.max_word_features = max_word_features
        self.max_char_features = max_char_features
        self.knowledge = knowledge
        self.phrase_score = phrase_score
        self.typo_phrase_score = typo_phrase_score
        self.dated_fact_score = dated_fact_score
        self.namesake_score = namesake_score
        self.near_misses = near_misses
        self.near_miss_weight = near_miss_weight
        self.neighbour_weight = neighbour_weight
        self.random_state = random_state

    # -- fitting ---------------------------------------------------------------------------
    def _encoder(self) -> SentenceEncoder:
        if self.encoder is not None:
            return self.encoder
        # The default is resolved once and kept apart from the parameter, which stays None:
        # scikit-learn's get_params and clone report what the caller passed.
        default: SentenceEncoder | None = getattr(self, "_default_encoder", None)
        if default is None:
            default = self._default_encoder = SentenceEncoder()
        return default

    def _check_params(self) -> None:
        # Parameters arrive from code and from --guard-param strings: each is checked here, by
        # name, so a bad one never reaches scikit-learn as a traceback about its own internals.
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                msg = f"{name} must be a number, got {value!r}; on the command line write e.g. --guard-param {name}=0.5."
                raise ConfigurationError(msg)
            if not np.isfinite(value):
                msg = f"{name} must be a finite number, got {value!r}."
                raise ConfigurationError(msg)
            return float(value)

        def count(name: str, least: int, why: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
                msg = f"{name} must be a whole number >= {least} ({why}), got {value!r}."
                raise ConfigurationError(msg)

        if not 0.0 < number("target_fpr") < 1.0:
            msg = f"target_fpr must be in (0, 1), got {self.target_fpr!r}; 0.01 means 1% false positives."
            raise ConfigurationError(msg)
        for name in ("lexical", "knowledge", "near_misses"):
            # "False" from a command line would be truthy: refuse anything but a real bool.
            if not isinstance(getattr(self, name), bool | np.bool_):
                msg = f"{name} must be true or false, got {getattr(self, name)!r}; on the command line write --guard-param {name}=false (lower case)."
                raise ConfigurationError(msg)
        count("cv", 2, "folds, to measure the threshold out of sample")
        count(
            "cv_repeats", 1, "cross-validations, each with its own folds, pooled for the threshold"
        )
        count("max_word_features", 1, "word n-grams kept")
        count("max_char_features", 1, "character n-grams kept")
        count("random_state", 0, "the seed of folds and near misses")
        if not number("C") > 0.0:
            msg = f"C must be > 0, got {self.C!r}; it is the inverse regularisation strength (1 by default, larger values penalise less)."
            raise ConfigurationError(msg)
        if not number("neighbour_weight") >= 0.0:
            msg = f"neighbour_weight must be >= 0, got {self.neighbour_weight!r}; 0 turns the nearest-example term off, w moves a score's log-odds by w times a difference of two cosines (WMDP's protocol uses 10)."
            raise ConfigurationError(msg)
        if not number("embedding_weight") > 0.0:
            msg = f"embedding_weight must be > 0, got {self.embedding_weight!r}; 1 weighs the sentence embedding as the n-grams, lower values lean on the n-grams."
            raise ConfigurationError(msg)
        for name in (
            "phrase_score",
            "typo_phrase_score",
            "dated_fact_score",
            "namesake_score",
            "near_miss_weight",
        ):
            if not 0.0 <= number(name) <= 1.0:
                # A namesake's score is a cap, so its "off" is the other end.
                off = "1 turns the cap off" if name == "namesake_score" else "0 turns it off"
                msg = f"{name} must be a probability in [0, 1], got {getattr(self, name)!r}; {off}."
                raise ConfigurationError(msg)

    def _with_knowledge(
        self,
        phrases: ForgetPhrases,
        learned: np.ndarray,
        texts: list[str],
        raw: Sequence[str] | None = None,
    ) -> np.ndarray:
        """The learned scores capped for namesakes, then raised to the phrase scores; ``raw``
        (each text as written) lets the writer's capitals tell a name from a word."""
        capped = np.array(learned, dtype=np.float64)
        for i, text in enumerate(texts):
            if (
                capped[i] > self.namesake_score
                and phrases.namesake(text, None if raw is None else raw[i]) is not None
            ):
                capped[i] = self.namesake_score
        matched = phrases.scores(
            texts,
            exact=self.phrase_score,
            typo=self.typo_phrase_score,
            fact=self.dated_fact_score,
            raw=raw,
        )
        combined: np.ndarray = np.maximum(capped, matched)
        return combined

    def _fit_parts(
        self, texts: list[str], y: np.ndarray, emb: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[list[_Tfidf], LogisticRegression]:
        lexicons = []
        if self.lexical:
            # Near misses count in the n-gram ratios too: a name part shared with a namesake
            # loses its forget-only weight there (measured: kept out of the ratios, near-miss
            # false positives on tofu-forget10-robust rose from 0.14 to 0.71).
            lexicons = [
                _Tfidf.fit(texts, y, _WORD, self.max_word_features),
                _Tfidf.fit(texts, y, _CHAR, self.max_char_features),
            ]
        # Scaling a feature block scales its share of the L2 penalty: below 1, the embedding's
        # coefficients pay more for their size than the n-grams' (measured on WMDP, where the
        # n-grams of technical terms carry the signal: cross-validated recall 0.75 -> 0.86).
        weight = float(self.embedding_weight)
        features = _stack(emb * weight, [lex.transform(texts) for lex in lexicons])
        clf = LogisticRegression(
            C=self.C,
            class_weight="balanced",
            solver="liblinear",
            max_iter=2000,
            random_state=self.random_state,
        )
        clf.fit(features, y, sample_weight=weights)
        # Folded into the coefficients, so scoring (and a saved guard) reads the raw embedding.
        clf.coef_[0, : emb.shape[1]] *= weight
        return lexicons, clf

    def fit(
        self,
        X: Sequence[str],
        y: Sequence[int],
        groups: Sequence[Any] | None = None,
        *,
        embeddings: np.ndarray | None = None,
        in_fpr: Sequence[bool] | None = None,
    ) -> PromptGuard:
        """Fit on texts ``X`` with labels ``y`` (1 = forget, 0 = retain).

        ``groups`` keeps related texts (e.g. one author's questions) in one CV fold, so the
        threshold is measured the way unseen topics will meet it. ``embeddings``, if given, must
        be of the normalized texts (:func:`normalized_texts`), as :meth:`Guard.add_target` passes.
        ``in_fpr`` (one flag per text, default all) says which retain texts the threshold's
        false-positive rate is counted on: general negatives (:meth:`Guard.add_target`'s
        ``general``) train the classifier but are left out of it, since a thousand easy
        negatives scoring near 0 would let 1% of the texts that matter pass.
        Pass the texts as written: the phrase index reads capitals and quotes before normalizing.

        With ``knowledge``, a text that contains a phrase found only in forget texts (a title, an
        award, a full name, a rare one-word name the encoder's tokenizer splits) scores at least
        ``phrase_score`` (``typo_phrase_score`` through a typo), and one that holds a year with
        a name a forget text holds with it (a birth date and place) at least
        ``dated_fact_score``; one that writes another person's name part
        beside a forget person's ("Oren Ameen" for "Hina Ameen") and matches nothing scores at
        most ``namesake_score`` (1 turns that off); with ``near_misses``, forget texts with a name
        swapped for a namesake's join the retain examples of every fit (never the held-out scores
        the threshold is picked from). With ``neighbour_weight`` w > 0, the learned log-odds gain w
        times (cosine to the nearest forget fit text - cosine to the nearest retain fit text), on
        the embeddings: a prompt close to one forget example counts even where the linear
        classifier's single direction misses it (the fit texts' embeddings are saved with the
        guard, not the texts).
        The threshold is picked from out-of-fold scores of both parts, each fold's phrases mined
        without its held-out texts.
        """
        self._check_params()
        raw = check_texts(X, "X")
        texts = normalized_texts(raw, "X")
        # Read as given, then checked: an int cast would take 0.4 as 0 and fail on NaN.
        given = np.asarray(y, dtype=object).ravel() if not isinstance(y, str) else np.array([y])
        if given.shape != (len(texts),) or not all(
            not isinstance(v, str) and v in (0, 1) for v in given
        ):
            msg = "y must hold one label per text, 1 for forget and 0 for retain."
            raise InvalidInputError(msg)
        labels = given.astype(int)
        n_pos, n_neg = int(labels.sum()), int((labels == 0).sum())
        if n_pos < self.cv or n_neg < self.cv:
            msg = (
                f"Need at least cv={self.cv} forget and retain examples each, got {n_pos} forget and {n_neg} retain: "
                f"add examples, or lower the cross-validation folds (cv=2 at least; --guard-param cv=2 on the command line)."
            )
            raise InvalidInputError(msg)
        counted = np.ones(len(texts), dtype=bool) if in_fpr is None else np.asarray(in_fpr)
        if counted.shape != (len(texts),) or counted.dtype != bool:
            msg = "in_fpr must hold one true/false flag per text (true: the text counts in the threshold's false-positive rate)."
            raise InvalidInputError(msg)
        if not np.any(counted & (labels == 0)):
            msg = "in_fpr leaves no retain text to measure the false-positive rate on; give retain texts besides the general ones."
            raise InvalidInputError(msg)
        if embeddings is not None and np.shape(embeddings)[:1] != (len(texts),):
            msg = f"embeddings has {np.shape(embeddings)[0] if np.ndim(embeddings) else 0} rows for {len(texts)} texts; pass one row per text (the encoder's output for normalized_texts(X)), or none."
            raise InvalidInputError(msg)
        emb = embeddings if embeddings is not None else self._encoder().encode(texts)
        # One row of out-of-fold scores per repeat of the cross-validation, each with its own
        # folds: the threshold is a tail quantile, and one split's folds move it by more than
        # the scores of the questions near it differ.
        oof = np.zeros((self.cv_repeats, len(texts)), dtype=np.float64)
        splits: list[tuple[int, np.ndarray, np.ndarray]] = []
        for repeat in range(self.cv_repeats):
            seed = self.random_state + repeat
            if groups is not None:
                splitter: Any = StratifiedGroupKFold(
                    n_splits=self.cv, shuffle=True, random_state=seed
                )
                folds = splitter.split(texts, labels, np.asarray(groups))
            else:
                folds = StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=seed).split(
                    texts, labels
                )
            splits += [(repeat, train, test) for train, test in folds]
        forget_raw = [t for t, label in zip(raw, labels, strict=True) if label == 1]
        retain_raw = [t for t, label in zip(raw, labels, strict=True) if label == 0]
        self.phrases_ = (
            ForgetPhrases.mine(
                forget_raw,
                retain_raw,
                # An encoder without a tokenizer to ask gives no one-word names.
                known_word=getattr(self._encoder(), "known_word", None),
            )
            if self.knowledge
            else None
        )
        near: list[str] = []
        if self.near_misses:
            swapped = near_miss_texts(
                forget_raw, retain_raw, max_texts=n_pos, random_state=self.random_state
            )
            # A swapped text that still holds a forget-only phrase (a title) is not benign.
            candidates = normalized_texts(swapped, "near misses") if swapped else []
            near = [t for t in candidates if self.phrases_ is None or self.phrases_.find(t) is None]
        near_emb = self._encoder().encode(near) if near else np.zeros((0, emb.shape[1]))
        self.n_near_misses_ = len(near)

        def fit_with_near_misses(index: np.ndarray) -> tuple[list[_Tfidf], LogisticRegression]:
            return self._fit_parts(
                [texts[i] for i in index] + near,
                np.concatenate([labels[index], np.zeros(len(near), dtype=int)]),
                np.concatenate([emb[index], near_emb]).astype(emb.dtype),
                np.concatenate([np.ones(len(index)), np.full(len(near), self.near_miss_weight)]),
            )

        def neighbours_of(index: np.ndarray) -> _Neighbours | None:
            if not self.neighbour_weight:
                return None
            return _Neighbours.of(
                np.concatenate([emb[index], near_emb]),
                np.concatenate([labels[index], np.zeros(len(near), dtype=int)]),
            )

        for repeat, train, test in splits:
            lex, clf = fit_with_near_misses(train)
            held_out = [texts[i] for i in test]
            oof[repeat, test] = _sigmoid_of_sum(
                _log_odds_parts(
                    clf, emb[test], lex, held_out, neighbours_of(train), self.neighbour_weight
                )
            )
            if self.knowledge:
                fold_phrases = ForgetPhrases.mine(
                    [raw[i] for i in train if labels[i] == 1],
                    [raw[i] for i in train if labels[i] == 0],
                )
                oof[repeat, test] = self._with_knowledge(
                    fold_phrases, oof[repeat, test], held_out, [raw[i] for i in test]
                )
        self.lexicons_, self.classifier_ = fit_with_near_misses(np.arange(len(texts)))
        self.neighbours_ = neighbours_of(np.arange(len(texts)))
        self.classes_ = np.array([0, 1])
        negatives = oof[:, (labels == 0) & counted].ravel()
        self.threshold_ = threshold_for_fpr(negatives, self.target_fpr)
        self.cv_fpr_ = float(np.mean(negatives > self.threshold_))
        self.cv_tpr_ = float(np.mean(oof[:, labels == 1] > self.threshold_))
        self.n_forget_, self.n_retain_ = n_pos, n_neg
        return self

    # -- scoring ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            msg = "This PromptGuard is not fitted yet. Call 'fit' with appropriate arguments before using this estimator."
            raise GuardNotFittedError(msg)

    def forget_proba(self, texts: list[str], *, embeddings: np.ndarray | None = None) -> np.ndarray:
        """P(forget) of each text, normalized first; ``embeddings``, if given, of the normalized texts."""
        return self._proba_of_normalized([normalize_text(t) for t in texts], embeddings, texts)

    def _proba_of_normalized(
        self,
        texts: list[str],
        embeddings: np.ndarray | None = None,
        raw: Sequence[str] | None = None,
    ) -> np.ndarray:
        """:meth:`forget_proba` of texts the caller has normalized already (once, for every
        target); ``raw``, the texts as written, if the caller has them."""
        self._check_fitted()
        emb = embeddings if embeddings is not None else self._encoder().encode(texts)
        learned = _sigmoid_of_sum(
            _log_odds_parts(
                self.classifier_,
                emb,
                self.lexicons_,
                texts,
                self.neighbours_,
                self.neighbour_weight,
            )
        )
        if self.phrases_ is None:  # the default: the learned classifier alone, nothing to add
            return learned
        return self._with_knowledge(self.phrases_, learned, texts, raw)

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        raw = check_texts(X, "X")
        p = self._proba_of_normalized(normalized_texts(raw, "X"), raw=raw)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Sequence[str]) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > self.threshold_).astype(int)

    def _parts_of_normalized(
        self, texts: list[str], embeddings: np.ndarray, row: int, target: str, raw: str
    ) -> ScoreParts:
        """:class:`ScoreParts` of ``texts[row]``, normalized texts whose embeddings the caller has
        (cut from ``raw``, the text as written).

        Computed for all ``texts`` as scoring computes them, then read at ``row``: a matrix
        product of one row can differ from the same row of a batch in the last float digits.
        """
        self._check_fitted()
        parts = _log_odds_parts(
            self.classifier_,
            embeddings,
            self.lexicons_,
            texts,
            self.neighbours_,
            self.neighbour_weight,
        )
        learned = _sigmoid_of_sum(parts)
        score = float(learned[row])
        if self.phrases_ is not None:
            score = float(
                self._with_knowledge(self.phrases_, learned[row : row + 1], [texts[row]], [raw])[0]
            )
        nearest = self.neighbours_.nearest(embeddings) if self.neighbours_ is not None else None
        return ScoreParts(
            target=target,
            log_odds={name: float(values[row]) for name, values in parts.items()},
            nearest_forget_cosine=None if nearest is None else float(nearest[0][row]),
            nearest_retain_cosine=None if nearest is None else float(nearest[1][row]),
            learned=float(learned[row]),
            score=score,
            threshold=float(self.threshold_),
        )

    # -- arrays for saving -----------------------------------------------------------------
    def _arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted()
        arrays = {
            "coef": self.classifier_.coef_.astype(np.float64),
            "intercept": self.classifier_.intercept_.astype(np.float64),
        }
        vocab: dict[str, Any] = {}
        for name, lex in zip(("word", "char"), self.lexicons_, strict=True):
            arrays[f"idf_{name}"] = lex.idf
            arrays[f"ratio_{name}"] = (
                lex.ratio if lex.ratio is not None else np.zeros(0, np.float32)
            )
            vocab[name] = lex.vocabulary
        vocab["phrases"] = self.phrases_.phrases if self.phrases_ is not None else []
        vocab["dated_facts"] = self.phrases_.dated_facts if self.phrases_ is not None else []
        vocab["person_names"] = self.phrases_.person_names if self.phrases_ is not None else []
        vocab["ordinary_words"] = self.phrases_.ordinary_words if self.phrases_ is not None else []
        vocab["forget_words"] = self.phrases_.forget_words if self.phrases_ is not None else []
        vocab["n_near_misses"] = self.n_near_misses_
        if self.neighbours_ is not None:
            arrays["neighbours_forget"] = self.neighbours_.forget
            arrays["neighbours_retain"] = self.neighbours_.retain
        return arrays, vocab

    @classmethod
    def _from_arrays(
        cls,
        encoder: SentenceEncoder,
        params: dict[str, Any],
        arrays: dict[str, np.ndarray],
        vocab: dict[str, Any],
        stats: dict[str, Any],
    ) -> PromptGuard:
        # A manifest's parameters are checked as a fit checks them: a folder written by another
        # release, or a sealed but hand-made one, is refused by name instead of failing mid-score.
        known = set(cls().get_params(deep=False)) - {"encoder"}
        unknown = sorted(set(params) - known)
        if unknown:
            msg = f"A target's parameters include {', '.join(map(repr, unknown))}, which this release does not know (a newer release wrote the folder?); re-fit the guard with this release."
            raise ArtifactError(msg)
        guard = cls(encoder, **params)
        try:
            guard._check_params()
        except ConfigurationError as err:
            msg = f"A target's saved parameters are invalid: {err} Re-fit the guard or restore the folder."
            raise ArtifactError(msg) from None
        guard.lexicons_ = [
            _Tfidf(
                opts,
                vocab[name],
                arrays[f"idf_{name}"],
                arrays[f"ratio_{name}"] if arrays[f"ratio_{name}"].size else None,
            )
            for name, opts in (("word", _WORD), ("char", _CHAR))
            if name in vocab
        ]
        clf = LogisticRegression(C=guard.C, class_weight="balanced", solver="liblinear")
        clf.coef_, clf.intercept_, clf.classes_ = (
            arrays["coef"],
            arrays["intercept"],
            np.array([0, 1]),
        )
        guard.classifier_, guard.classes_ = clf, np.array([0, 1])
        guard.threshold_, guard.cv_fpr_, guard.cv_tpr_ = (
            stats["threshold"],
            stats["cv_fpr"],
            stats["cv_tpr"],
        )
        guard.n_forget_, guard.n_retain_ = stats["n_forget"], stats["n_retain"]
        guard.phrases_ = (
            ForgetPhrases(
                vocab["phrases"],
                vocab["dated_facts"],
                vocab["person_names"],
                vocab["ordinary_words"],
                vocab["forget_words"],
                getattr(guard._encoder(), "known_word", None),
            )
            if guard.knowledge
            else None
        )
        guard.n_near_misses_ = int(vocab["n_near_misses"])
        guard.neighbours_ = None
        if guard.neighbour_weight:
            if "neighbours_forget" not in arrays or "neighbours_retain" not in arrays:
                msg = "A target saved with neighbour_weight > 0 holds no fit-text embeddings; re-fit the guard."
                raise ArtifactError(msg)
            guard.neighbours_ = _Neighbours(
                arrays["neighbours_forget"], arrays["neighbours_retain"]
            )
        return guard


def _stack(emb: np.ndarray, lexical: list[sp.csr_matrix]) -> sp.csr_matrix:
    return sp.hstack([sp.csr_matrix(emb.astype(np.float32)), *lexical], format="csr")


LEXICON_NAMES = ("word_ngrams", "char_ngrams")
"""The lexical blocks of a fitted PromptGuard, in the order of its coefficients."""


def _log_odds_parts(
    clf: LogisticRegression,
    emb: np.ndarray,
    lexicons: list[_Tfidf],
    texts: list[str],
    neighbours: _Neighbours | None = None,
    neighbour_weight: float = 0.0,
) -> dict[str, np.ndarray]:
    """Each feature block's share of the learned log-odds, one array per block (with
    ``neighbour_weight`` times the nearest-example margin when ``neighbours`` are given).

    Their sum's sigmoid is ``clf.predict_proba(_stack(emb, [lex.transform(texts) ...]))[:, 1]``:
    a binary logistic regression is a sigmoid of one dot product, so each feature block is
    multiplied by its slice of the coefficients without building the stacked matrix; the same
    number, a millisecond sooner per prompt, and an explanation for free.
    """
    coef = clf.coef_[0]
    parts = {
        "bias": np.full(len(texts), float(clf.intercept_[0])),
        "embedding": emb.astype(np.float64) @ coef[: emb.shape[1]],
    }
    start = emb.shape[1]
    for name, lex in zip(LEXICON_NAMES, lexicons, strict=False):
        width = len(lex.vocabulary)
        parts[name] = np.asarray(lex.dot(texts, coef[start : start + width]), dtype=np.float64)
        start += width
    if neighbours is not None:
        parts["nearest_example"] = float(neighbour_weight) * neighbours.margin(emb)
    return parts


def _sigmoid_of_sum(parts: dict[str, np.ndarray]) -> np.ndarray:
    # Added in the order scoring always used, so scores do not move in the last digit.
    logit = parts["embedding"] + parts["bias"]
    for name in (*LEXICON_NAMES, "nearest_example"):
        if name in parts:
            logit = logit + parts[name]
    return 1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64)))


def saved_encoder_precision(folder: str | Path) -> str:
    """The encoder precision a saved guard folder was fit with ("float32" when it does not say,
    or when there is no readable manifest: :meth:`Guard.load` then names that problem)."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        return str(manifest.get("encoder", {}).get("precision", "float32"))
    except (OSError, ValueError, AttributeError):
        return "float32"


def threshold_for_fpr(negative_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold with at most ``floor(target_fpr * n)`` negatives strictly above it."""
    scores = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if scores.size == 0:
        msg = "No retain scores to pick a threshold from."
        raise InvalidInputError(msg)
    # 0.036 * 750 is 26.999999999999996 in floating point; the epsilon lets the 27th through.
    allowed = int(np.floor(target_fpr * scores.size + 1e-9))
    return float(scores[min(allowed, scores.size - 1)])


class ScoreParts(BaseModel):
    """Where one target's score of one text comes from.

    The learned score is the sigmoid of a sum of log-odds, one per feature block: ``bias`` (the
    intercept), ``embedding`` (the sentence embedding), ``word_ngrams`` and ``char_ngrams`` (absent
    when the target was fit with ``lexical=False``) and ``nearest_example`` (``neighbour_weight``
    times the cosine to the nearest forget fit text minus the cosine to the nearest retain fit
    text; absent when the term is off). ``score`` is what the decision compares with the
    threshold: the learned score after the knowledge rules (a phrase match raises it, a namesake
    caps it), equal to ``learned`` when no rule applied. ``passage`` is the part of a long text
    that scored highest (normalized, as it was scored), None when the whole text did.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: str
    log_odds: dict[str, float]
    nearest_forget_cosine: float | None = None
    nearest_retain_cosine: float | None = None
    learned: float
    score: float
    threshold: float
    passage: str | None = None


@dataclass(frozen=True)
class _Verdict:
    score: float
    threshold: float
    flagged: bool
    target: str | None


class TargetInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    folder: str
    params: dict[str, Any]
    threshold: float
    target_fpr: float
    cv_fpr: float
    cv_tpr: float
    n_forget: int
    n_retain: int
    terms: list[str] = Field(default_factory=list)


class GuardManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = GUARD_SCHEMA_VERSION
    kind: str = "eco-guard"
    guard_id: str
    version: int
    encoder: dict[str, Any]
    passage_chars: int | None  # always written: None means passages off, not "unknown"
    targets: list[TargetInfo]
    content_sha256: str = ""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


class Guard:
    """Named forget targets over one sentence encoder.

    >>> guard = Guard()                                                          # doctest: +SKIP
    >>> guard.add_target("harry-potter", forget_texts, retain_texts)             # doctest: +SKIP
    >>> guard.decide("Who teaches potions at Hogwarts?").flagged                 # doctest: +SKIP
    True
    """

    def __init__(
        self,
        encoder: SentenceEncoder | None = None,
        *,
        guard_id: str | None = None,
        passage_chars: int | None = LONG_TEXT_CHARS,
    ) -> None:
        """``passage_chars``: texts longer than this are also scored passage by passage (see :meth:`score`);
        ``None`` scores every text whole, one encoder pass each (for prompts that are one item, such
        as a multiple-choice question, where passages cost encoder time and find nothing new).
        """
        if passage_chars is not None and (not isinstance(passage_chars, int) or passage_chars < 1):
            msg = f"passage_chars must be a positive number of characters or None, got {passage_chars!r}."
            raise ConfigurationError(msg)
        self.encoder = _as_encoder(encoder) or SentenceEncoder()
        self.passage_chars = passage_chars
        if guard_id is not None and (
            not isinstance(guard_id, str)
            or not guard_id.strip()
            or not guard_id.isprintable()
            or any(c in guard_id for c in "/\\@")
        ):
            # It names decision records, metrics and cache keys ("<id>@<version>"): no blank,
            # no path parts, no '@'.
            msg = f"guard_id {guard_id!r} must be non-empty printable text without '/', '\\' or '@', e.g. 'hp-2026-12' (or None for a random one)."
            raise ConfigurationError(msg)
        self.guard_id = guard_id or uuid.uuid4().hex[:12]
        self.version = 0
        self.targets: dict[str, PromptGuard] = {}
        self.terms: dict[str, list[str]] = {}
        self.content_sha256: str | None = None
        """Digest of the saved folder's contents; None until saved or loaded, and after a change.

        Two fits under one ``guard_id`` and version differ here, so caches keyed by the engine's
        identifying params never mix their answers."""
        # The folder this guard was last loaded from or saved to, and its content digest then:
        # a save back there refuses to overwrite what another process saved in between.
        self._origin: tuple[Path, str] | None = None

    @property
    def target_names(self) -> list[str]:
        return list(self.targets)

    @property
    def policy_id(self) -> str:
        return f"{self.guard_id}@{self.version}"

    def add_target(
        self,
        name: str,
        forget: Sequence[str],
        retain: Sequence[str],
        *,
        retain_groups: Sequence[Any] | None = None,
        forget_groups: Sequence[Any] | None = None,
        general: Sequence[str] = (),
        terms: Sequence[str] = (),
        mine_terms: bool = True,
        target_fpr: float = 0.01,
        show_progress: bool = False,
        **params: Any,
    ) -> PromptGuard:
        """Fit one target from its forget texts (questions, answers, facts, documents) and retain texts.

        ``general`` are benign texts of any subject (a general-knowledge FAQ, MMLU questions):
        they train the classifier as retain examples (each its own cross-validation group), but
        the threshold's false-positive rate is counted on ``retain`` alone, the texts nearest
        the forget topic. Other targets are untouched. ``terms`` (names, titles) are added to the ones mined from
        the texts for the ``entities`` token selector; ``mine_terms=False`` keeps ``terms`` alone
        (an operator's exact list). ``eco guard explain --selector entities`` shows them.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            msg = f"Target name {name!r} must be 1-64 ASCII letters, digits, spaces, '.', '_' or '-', starting with a letter or digit."
            raise ConfigurationError(msg)
        forget_texts = check_texts(forget, f"forget texts of target {name!r}")
        retain_texts = check_texts(retain, f"retain texts of target {name!r}")
        terms = list(terms) if isinstance(terms, Iterable) and not isinstance(terms, str) else terms
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            msg = (
                f"terms of target {name!r} must be a list of strings (names, titles), got "
                f"{terms!r}; wrap a single term as [term]."
            )
            raise InvalidInputError(msg)
        if not forget_texts:
            msg = f"Target {name!r} has no forget examples; give at least {params.get('cv', 5)} texts about what to forget."
            raise InvalidInputError(msg)
        if not retain_texts:
            msg = (
                f"Target {name!r} has no retain examples; give texts the model must keep answering."
            )
            raise InvalidInputError(msg)
        general_texts = check_texts(general, f"general texts of target {name!r}")
        texts = normalized_texts(
            forget_texts + retain_texts + general_texts, f"texts of target {name!r}"
        )
        forget_side = set(texts[: len(forget_texts)])
        both = [t for t in dict.fromkeys(texts[len(forget_texts) :]) if t in forget_side]
        # A short answer may be both ("Dobby" answers a forget and a retain question), but when
        # most forget texts are also retain texts (one file passed twice) the fit flags nothing.
        if 2 * len(both) >= len(forget_side):
            msg = (
                f"Target {name!r}: {len(both)} of the {len(forget_side)} distinct forget texts are "
                f"also retain/general examples (first: {both[0][:80]!r}); the guard could not tell "
                "them apart. Pass different forget and retain texts (on the command line, "
                "different --forget and --retain files)."
            )
            raise InvalidInputError(msg)
        if both:
            _LOG.warning(
                "Target %r: %d text(s) are both forget and retain/general examples (first: %r); "
                "each counts on both sides.",
                name,
                len(both),
                both[0][:80],
            )
        labels = [1] * len(forget_texts) + [0] * (len(retain_texts) + len(general_texts))
        groups = None
        if retain_groups is not None or forget_groups is not None or general_texts:
            fg = (
                list(forget_groups)
                if forget_groups is not None
                else [f"forget-{i}" for i in range(len(forget_texts))]
            )
            rg = (
                list(retain_groups)
                if retain_groups is not None
                else [f"retain-{i}" for i in range(len(retain_texts))]
            )
            if len(fg) != len(forget_texts) or len(rg) != len(retain_texts):
                msg = "forget_groups/retain_groups must have one entry per text."
                raise InvalidInputError(msg)
            keys = (
                [("f", g) for g in fg]
                + [("r", g) for g in rg]
                + [("g", i) for i in range(len(general_texts))]
            )
            index: dict[Any, int] = {}
            groups = [index.setdefault(k, len(index)) for k in keys]
        estimator = PromptGuard(self.encoder, target_fpr=target_fpr, **params)
        estimator._check_params()  # before the encoder pass: a bad value costs no minutes
        estimator.fit(
            # as written: the phrase index reads capitals and quotes
            forget_texts + retain_texts + general_texts,
            labels,
            groups,
            embeddings=self.encoder.encode(texts, show_progress=show_progress),
            in_fpr=[True] * (len(forget_texts) + len(retain_texts)) + [False] * len(general_texts),
        )
        self.targets[name] = estimator
        given = [t.strip() for t in terms if isinstance(t, str) and t.strip()]
        # Mined from the raw texts: the miner needs capitals, and the entities selector looks
        # for the terms in the raw prompt.
        mined = _mine_terms(forget_texts, retain_texts + general_texts) if mine_terms else []
        self.terms[name] = list(dict.fromkeys(given + mined))
        self.version += 1
        self.content_sha256 = None
        return estimator

    def remove_target(self, name: str) -> None:
        if name not in self.targets:
            msg = f"No target {name!r}; the guard has: {', '.join(self.targets) or 'none'}."
            raise ConfigurationError(msg)
        del self.targets[name]
        self.terms.pop(name, None)
        self.version += 1
        self.content_sha256 = None

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Forget probabilities, ``[len(texts), len(target_names)]``; one encoder pass for all targets.

        Each text is normalized first. A long text is also scored passage by passage (a few
        sentences or lines at a time) and keeps its highest score, so a forget question buried in
        a long benign message is not averaged away.
        """
        self._check_targets()
        raw = check_texts(texts)
        checked = normalized_texts(raw)
        if not checked:
            return np.zeros((0, len(self.targets)))
        return self._score_normalized(checked, raw)

    def _check_targets(self) -> None:
        if not self.targets:
            msg = (
                "The guard has no targets; call add_target(name, forget, retain) or "
                "Guard.load(folder) (on the command line: eco guard add-target FOLDER ...)."
            )
            raise GuardNotFittedError(msg)

    def _piece_scores(
        self, checked: list[str], raw: list[str]
    ) -> tuple[list[str], list[str], list[int], np.ndarray, np.ndarray]:
        """Every text's pieces (the text itself, then its passages when it is long), as cut and as
        the lexical features read them, which text owns each, their embeddings and their scores,
        ``[len(pieces), len(target_names)]``; ``checked`` is normalized already, ``raw`` as
        written (a passage is read with the whole text it was cut from)."""
        pieces, owner = [], []
        for i, text in enumerate(checked):
            for piece in passages(text, long_text_chars=self.passage_chars):
                pieces.append(piece)
                owner.append(i)
        emb = self.encoder.encode(pieces)
        # A passage cut out of a normalized text is normalized again for the lexical features,
        # as every scored text is: once here, not once per target. The whole text (every text's
        # first piece) is normalized already.
        lexical_pieces = [
            p if p is checked[i] else normalize_text(p) for p, i in zip(pieces, owner, strict=True)
        ]
        raw_of_pieces = [raw[i] for i in owner]
        piece_scores = np.stack(
            [
                t._proba_of_normalized(lexical_pieces, emb, raw_of_pieces)
                for t in self.targets.values()
            ],
            axis=1,
        )
        return pieces, lexical_pieces, owner, emb, piece_scores

    def _score_normalized(self, checked: list[str], raw: list[str]) -> np.ndarray:
        """:meth:`score` of texts already checked and normalized (:func:`normalized_texts`);
        ``raw``, the same texts as written."""
        _, _, owner, _, piece_scores = self._piece_scores(checked, raw)
        out = np.full((len(checked), len(self.targets)), -np.inf)
        np.maximum.at(out, np.asarray(owner), piece_scores)
        return out

    def _thresholds(self, threshold: float | None = None) -> np.ndarray:
        """Each target's threshold, in target order, or ``threshold`` for all of them."""
        if threshold is not None:
            return np.full(len(self.targets), threshold)
        return np.array([t.threshold_ for t in self.targets.values()])

    def _verdicts(
        self, checked: list[str], raw: list[str], threshold: float | None
    ) -> list[_Verdict]:
        scores = self._score_normalized(checked, raw)
        names = self.target_names
        thresholds = self._thresholds(threshold)
        out = []
        for row in scores:
            best = int(np.argmax(row - thresholds))
            flagged = bool(row[best] > thresholds[best])
            out.append(
                _Verdict(
                    float(row[best]),
                    float(thresholds[best]),
                    flagged,
                    names[best] if flagged else None,
                )
            )
        return out

    def score_parts(self, text: str, target: str | None = None) -> ScoreParts:
        """Where ``text``'s score for ``target`` comes from (:class:`ScoreParts`).

        ``target`` None takes the target a decision looks at: the one furthest over its
        threshold, or closest under it. A long text is explained by its highest-scoring passage,
        the one that decided its score.
        """
        self._check_targets()
        (checked,) = normalized_texts([text], "text")
        if target is not None and target not in self.targets:
            msg = f"No target {target!r} in this guard; it has: {', '.join(self.target_names)}."
            raise InvalidInputError(msg)
        pieces, lexical_pieces, _, emb, scores = self._piece_scores([checked], [text])
        names = self.target_names
        if target is None:
            target = names[int(np.argmax(scores.max(axis=0) - self._thresholds()))]
        column = names.index(target)
        best = int(np.argmax(scores[:, column]))
        parts = self.targets[target]._parts_of_normalized(lexical_pieces, emb, best, target, text)
        return parts.model_copy(update={"passage": pieces[best] if best else None})

    def knowledge_match(self, text: str, target: str) -> str | None:
        """What the target's forget knowledge found in ``text``, in words, for an operator.

        ``'phrase "elvin mammadov"'``, ``'phrase "rajeev majumdar" (2 words through typos)'``,
        ``'full name "xin lee williams" (2 parts through typos)'``,
        ``'dated fact "1975 karachi"'`` or, when nothing matched but the text names somebody else
        who shares a forget person's name part, ``'namesake "oren" beside "hina ameen" (score
        capped at 0.0)'``, or when a phrase sits beside somebody else's name instead of a forget
        person's, ``'phrase "breath between waves" beside another name, "brenda lai" (not
        counted)'``; None when the target was fit without ``knowledge`` or nothing matched
        (then the learned classifier's score is the whole verdict).
        """
        if target not in self.targets:
            msg = f"No target {target!r} in this guard; it has: {', '.join(self.target_names) or 'none'}."
            raise InvalidInputError(msg)
        phrases = self.targets[target].phrases_
        if phrases is None:
            return None
        (checked,) = normalized_texts([text], "text")
        match, elsewhere = phrases.examine(checked, text)
        if match is None:
            if elsewhere is not None:
                return (
                    f'phrase "{elsewhere[0]}" beside another name, "{elsewhere[1]}" (not counted)'
                )
            namesake = phrases.namesake(checked, text)
            if namesake is None:
                return None
            cap = self.targets[target].namesake_score
            return f'namesake "{namesake[0]}" beside "{namesake[1]}" (score capped at {cap})'
        if match.dated_fact:
            return f'dated fact "{match.phrase}"'
        kind, unit = ("full name", "part") if match.full_name else ("phrase", "word")
        through = (
            f" ({match.typos} {unit}{'s' * (match.typos > 1)} through typos)" if match.typos else ""
        )
        return f'{kind} "{match.phrase}"{through}'

    def decide_many(
        self, texts: Sequence[str], *, threshold: float | None = None
    ) -> list[Decision]:
        """The guard's verdicts, as ``shadow``-mode decisions (a guard alone never corrupts).

        ``threshold`` replaces every target's own threshold for this call. :class:`ECO` turns
        these into enforced decisions; use :meth:`ECO.decide_texts` to decide for an engine.
        """
        start = time.perf_counter()
        self._check_targets()
        threshold = check_threshold(threshold)
        raw = check_texts(texts)
        checked = normalized_texts(raw)
        if not checked:
            return []
        verdicts = self._verdicts(checked, raw, threshold)
        per_item = (time.perf_counter() - start) * 1000 / max(len(verdicts), 1)
        return [
            Decision(
                flagged=v.flagged,
                score=v.score,
                threshold=v.threshold,
                target=v.target,
                corrupted=False,
                mode="shadow",
                guard_id=self.guard_id,
                guard_version=self.version,
                policy_version=self.policy_id,
                text_sha256=text_sha256(t),  # of the normalized text, as the guard read it
                latency_ms=per_item,
            )
            for t, v in zip(checked, verdicts, strict=True)
        ]

    def decide(self, text: str, *, threshold: float | None = None) -> Decision:
        if not isinstance(text, str):
            msg = f"decide() takes one string, got {type(text).__name__}; use decide_many() for lists."
            raise InvalidInputError(msg)
        return self.decide_many([text], threshold=threshold)[0]

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``manifest.json`` and one safetensors + vocabulary JSON per target, sealed. No pickle.

        The folder is built beside ``folder`` and swapped in whole, so an interrupted save leaves
        the previous guard as it was, and a gateway watching the folder never reads half of one.
        Files of the old folder other than the guard's own (its ``policy.json``, after its seal
        is checked) are kept.
        """
        root = Path(folder)
        if root.exists() and not root.is_dir():
            msg = f"{root} is a file; Guard.save writes a folder. Pass a folder path (created if missing)."
            raise ArtifactError(msg)
        self._check_not_saved_over(root)
        for name, est in self.targets.items():
            # Checked here as Guard.load checks it: a folder saved with another value would only
            # be refused when it is next loaded (a gateway's reload, say).
            threshold = getattr(est, "threshold_", None)
            if threshold is not None and not usable_threshold(threshold):
                msg = f"Target {name!r} has threshold {threshold}, and a saved guard's thresholds are probabilities strictly between 0 and 1; set threshold_ inside that range (e.g. 1e-6 to flag nearly everything) or re-fit it."
                raise ConfigurationError(msg)
        kept = _kept_beside_guard(root)
        with staged_folder(root) as staging:
            for item in kept:
                if item.is_dir():
                    shutil.copytree(item, staging / item.name)
                else:
                    shutil.copy2(item, staging / item.name)
            infos = []
            for i, (name, est) in enumerate(self.targets.items()):
                sub = f"targets/{i:03d}"
                (staging / sub).mkdir(parents=True)
                arrays, vocab = est._arrays()
                save_file(arrays, str(staging / sub / "weights.safetensors"))
                (staging / sub / "vocabulary.json").write_text(
                    json.dumps(vocab, ensure_ascii=False)
                )
                # A numpy scalar (cv=np.int64(2)) is a valid parameter; JSON takes its value.
                params = {
                    k: v.item() if isinstance(v, np.generic) else v
                    for k, v in est.get_params(deep=False).items()
                    if k != "encoder"
                }
                infos.append(
                    TargetInfo(
                        name=name,
                        folder=sub,
                        params=params,
                        threshold=est.threshold_,
                        target_fpr=est.target_fpr,
                        cv_fpr=est.cv_fpr_,
                        cv_tpr=est.cv_tpr_,
                        n_forget=est.n_forget_,
                        n_retain=est.n_retain_,
                        terms=self.terms.get(name, []),
                    )
                )
            manifest = GuardManifest(
                guard_id=self.guard_id,
                version=self.version,
                encoder=encoder_identity(self.encoder),
                passage_chars=self.passage_chars,
                targets=infos,
            )
            manifest.content_sha256 = _content_hash(staging, manifest)
            (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
            # Covers policy.json too; HMAC with ECO_GUARD_KEY.
            seal(staging, [info.folder for info in infos])
        self.content_sha256 = manifest.content_sha256
        self._origin = (root.resolve(), manifest.content_sha256)
        return root

    def _check_not_saved_over(self, root: Path) -> None:
        """Refuse to save back into the folder this guard came from if someone saved there since
        (two `eco guard add-target` runs at once: the last one would drop the other's target)."""
        if self._origin is None or self._origin[0] != root.resolve():
            return
        try:
            now = json.loads((root / "manifest.json").read_text()).get("content_sha256")
        except (OSError, ValueError, AttributeError):
            return  # no readable guard there now: nothing to lose
        if now != self._origin[1]:
            msg = (
                f"The guard in {root} was saved by someone else after this one was loaded from it; "
                "saving would drop their change. Load it again, redo this change, and save."
            )
            raise ArtifactError(msg)

    @classmethod
    def load(cls, folder: str | Path, *, encoder: SentenceEncoder | None = None) -> Guard:
        """Load a saved guard, checking schema version, content hash and encoder identity.

        A save over the folder while it is read (a gateway reloading while an operator re-fits)
        swaps the folder; the guard is then read again, so it never mixes two saves' files.
        """
        encoder = _as_encoder(encoder)
        root = Path(folder)
        for _ in range(3):
            before = _folder_identity(root)
            guard = cls._load_once(root, encoder)
            if _folder_identity(root) == before:
                return guard
        msg = f"{root} was saved over three times while it was read; load it again when the saving is done."
        raise ArtifactError(msg)

    @classmethod
    def _load_once(cls, root: Path, encoder: SentenceEncoder | None) -> Guard:
        manifest_file = root / "manifest.json"
        if not manifest_file.is_file():
            aside = interrupted_save(root)
            if aside is not None and not root.exists():
                msg = f"{root} is missing: a save over it was interrupted, and the previous guard is in {aside}. Rename that folder back to {root.name}."
                raise ArtifactError(msg)
            msg = f"{root} is not a guard folder (no manifest.json); create one with `eco guard fit` or Guard.save()."
            raise ArtifactError(msg)
        try:
            raw = json.loads(manifest_file.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            msg = f"{manifest_file} is not valid UTF-8 JSON ({err}); the folder was edited or truncated. Re-fit the guard."
            raise ArtifactError(msg) from None
        if not isinstance(raw, dict):
            msg = f"{manifest_file} holds a JSON {type(raw).__name__}, not the guard's manifest object. Re-fit or restore the folder."
            raise ArtifactError(msg)
        if (
            raw.get("schema_version") not in _READABLE_SCHEMA_VERSIONS
            or raw.get("kind") != "eco-guard"
        ):
            msg = (
                f"{root} holds guard schema version {raw.get('schema_version')!r} (kind {raw.get('kind')!r}); "
                f"this release reads versions {' and '.join(map(str, _READABLE_SCHEMA_VERSIONS))} (version 4 added forget-only "
                "phrases and near-miss negatives, version 5 matches those phrases through more typos "
                "and adds dated facts, version 6 caps namesakes' scores, version 7 leaves out a phrase "
                "written beside somebody else's name, so an older threshold no longer fits the "
                "scores; version 8 adds the nearest-example term and reads version 7 as it was). "
                "Re-fit the guard with this release (`eco guard fit`)."
            )
            raise ArtifactError(msg)
        try:
            manifest = GuardManifest.model_validate(raw)
        except Exception as err:  # pydantic's message lists the bad fields
            msg = f"{manifest_file} does not match the guard schema: {err}"
            raise ArtifactError(msg) from None
        check_manifest_values(root, manifest)
        try:
            actual = _content_hash(root, manifest)
        except FileNotFoundError as err:
            msg = f"{root} is incomplete ({err.filename} is missing). Re-fit or restore the folder."
            raise ArtifactError(msg) from None
        except OSError as err:
            msg = f"{root} holds an unreadable target file ({err.filename}: {err.strerror}). Re-fit or restore the folder."
            raise ArtifactError(msg) from None
        if actual != manifest.content_sha256:
            msg = f"{root} was modified after it was saved (content hash mismatch). Re-fit the guard or restore the folder."
            raise ArtifactError(msg)
        verify(root, [info.folder for info in manifest.targets])
        fitted = str(manifest.encoder.get("precision", "float32"))
        if encoder is None:
            from ._models import SPLIT_ZIP_ENCODERS

            # The evaluation encoder is found by its name; any other folder must be passed.
            name = manifest.encoder.get("name")
            by_name = name if name in SPLIT_ZIP_ENCODERS else None
            encoder = SentenceEncoder(by_name, precision=fitted)
        elif getattr(encoder, "precision", fitted) != fitted:
            # bfloat16 and float32 embeddings agree within the fingerprint's tolerance, but the
            # difference moves scores across the thresholds the fit picked.
            msg = (
                f"The guard in {root} was fit with its encoder in {fitted}, but the encoder given "
                f"runs in {encoder.precision}. Pass SentenceEncoder(..., precision={fitted!r}) "
                f"(on the command line, --encoder-precision {fitted}), or re-fit."
            )
            raise ArtifactError(msg)
        guard = cls(encoder, guard_id=manifest.guard_id, passage_chars=manifest.passage_chars)
        guard.version = manifest.version
        expected = manifest.encoder.get("fingerprint")
        if expected is not None:
            found = encoder_fingerprint(guard.encoder)
            if (
                len(found) != len(expected)
                or np.max(np.abs(np.array(found) - np.array(expected))) > 2e-3
            ):
                msg = (
                    f"The guard in {root} was fit with encoder {manifest.encoder.get('name')!r}, but the encoder "
                    f"given ({encoder_name(guard.encoder)!r}) embeds differently. Pass the same encoder, or re-fit."
                )
                raise ArtifactError(msg)
        for info in manifest.targets:
            arrays = load_file(str(root / info.folder / "weights.safetensors"))
            vocab = json.loads((root / info.folder / "vocabulary.json").read_text())
            stats = {
                "threshold": info.threshold,
                "cv_fpr": info.cv_fpr,
                "cv_tpr": info.cv_tpr,
                "n_forget": info.n_forget,
                "n_retain": info.n_retain,
            }
            guard.targets[info.name] = PromptGuard._from_arrays(
                guard.encoder, info.params, arrays, vocab, stats
            )
            guard.terms[info.name] = list(info.terms)
        guard.content_sha256 = manifest.content_sha256
        guard._origin = (root.resolve(), manifest.content_sha256)
        return guard

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "target": n,
                "threshold": round(t.threshold_, 6),
                "cv_fpr": round(t.cv_fpr_, 4),
                "cv_tpr": round(t.cv_tpr_, 4),
                "n_forget": t.n_forget_,
                "n_retain": t.n_retain_,
            }
            for n, t in self.targets.items()
        ]


def _folder_identity(root: Path) -> tuple[int, int] | None:
    # A save swaps in a new folder (a new inode); an unchanged one is the folder that was read.
    try:
        st = root.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _kept_beside_guard(root: Path) -> list[Path]:
    """What a save over ``root`` carries into the new folder: everything but the guard's own
    files. A ``policy.json`` is carried only if the old folder's seal vouches for it, so a save
    never blesses a policy someone edited without the key."""
    if not root.is_dir():
        return []
    own = {"manifest.json", INTEGRITY_FILE, "targets"}
    kept = [p for p in sorted(root.iterdir()) if p.name not in own and not p.name.startswith(".")]
    sealed = (root / INTEGRITY_FILE).is_file() and (root / "manifest.json").is_file()
    if sealed and any(p.name == "policy.json" for p in kept):
        try:
            verify(root, saved_target_folders(root))
        except ArtifactError as err:
            msg = (
                f"{root}/policy.json would be kept in the new guard, but the folder fails its check "
                f"({err}). Delete {root}/policy.json to save without it, or restore the folder."
            )
            raise ArtifactError(msg) from None
    return kept


def _content_hash(root: Path, manifest: GuardManifest) -> str:
    digest = hashlib.sha256()
    digest.update(manifest.model_copy(update={"content_sha256": ""}).model_dump_json().encode())
    for info in manifest.targets:
        for fname in ("weights.safetensors", "vocabulary.json"):
            digest.update(f"{info.folder}/{fname}".encode())
            digest.update((root / info.folder / fname).read_bytes())
    return digest.hexdigest()
