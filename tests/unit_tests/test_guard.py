import json

import numpy as np
import pytest
from sklearn.base import clone
from toy_data import TOY_FORGET, TOY_RETAIN

from eco_integrations import (
    ECO,
    ArtifactError,
    Guard,
    GuardNotFittedError,
    InvalidInputError,
    PromptGuard,
)
from eco_integrations._passages import mine_terms
from eco_integrations.exceptions import ConfigurationError
from eco_integrations.guard import normalized_texts, threshold_for_fpr


def test_estimator_contract(tiny_encoder) -> None:
    est = PromptGuard(tiny_encoder, target_fpr=0.2, cv=2)
    assert est.get_params()["target_fpr"] == 0.2
    assert not hasattr(est, "classifier_")  # __init__ does no work
    copy = clone(est).set_params(C=2.0)
    assert copy.C == 2.0 and est.C == 1.0
    with pytest.raises(GuardNotFittedError, match="not fitted yet"):
        est.predict_proba(["hello"])
    fitted = est.fit(TOY_FORGET + TOY_RETAIN, [1] * 8 + [0] * 8)
    assert fitted is est
    proba = est.predict_proba(TOY_FORGET + TOY_RETAIN)
    assert proba.shape == (16, 2) and np.allclose(proba.sum(1), 1)
    assert est.predict(TOY_FORGET).mean() > est.predict(TOY_RETAIN).mean()
    assert 0 <= est.cv_fpr_ <= 1 and 0 <= est.threshold_ <= 1


def test_the_default_encoder_leaves_the_encoder_parameter_alone(
    tiny_encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eco_integrations.guard as guard_module

    built: list[object] = []

    def default_encoder() -> object:
        built.append(tiny_encoder)
        return tiny_encoder

    monkeypatch.setattr(guard_module, "SentenceEncoder", default_encoder)
    est = PromptGuard(target_fpr=0.2, cv=2).fit(TOY_FORGET + TOY_RETAIN, [1] * 8 + [0] * 8)
    assert est.get_params()["encoder"] is None and clone(est).encoder is None
    assert est.predict(TOY_FORGET).mean() > est.predict(TOY_RETAIN).mean()
    assert len(built) == 1  # resolved once, for the fit and every prediction after it


def test_threshold_for_fpr() -> None:
    scores = np.linspace(0, 1, 101)
    t = threshold_for_fpr(scores, 0.05)
    assert np.mean(scores > t) <= 0.05
    assert np.mean(scores > t) >= 0.04
    # 0.036 * 750 rounds below 27 in floating point; the rule still allows 27 of 750 above.
    many = np.arange(750, dtype=np.float64)
    assert np.sum(many > threshold_for_fpr(many, 0.036)) == 27


def test_decide_record(toy_guard) -> None:
    d = toy_guard.decide("Who is Harry Potter?")
    assert d.flagged and d.target == "harry-potter"
    assert d.guard_id == "toyguard0001" and d.guard_version == 1
    assert d.score > d.threshold
    assert "Harry" not in d.model_dump_json()  # the text itself is never stored
    benign = toy_guard.decide("How do I bake bread?")
    assert not benign.flagged and benign.target is None


def test_score_is_batched(toy_guard) -> None:
    texts = TOY_FORGET + TOY_RETAIN
    batch = toy_guard.score(texts)
    single = np.concatenate([toy_guard.score([t]) for t in texts])
    assert batch.shape == (16, 1)
    assert np.allclose(batch, single, atol=1e-5)


BAKING = [
    "How do I bake bread?",
    "Bread needs yeast.",
    "Knead the dough.",
    "Oven temperature for bread?",
]


def test_adding_a_target_keeps_the_others(toy_guard) -> None:
    before = toy_guard.targets["harry-potter"]
    coef, threshold = before.classifier_.coef_.copy(), before.threshold_
    toy_guard.add_target(
        "baking",
        [
            "How do I bake bread?",
            "Bread needs yeast.",
            "Knead the dough.",
            "Oven temperature for bread?",
        ],
        TOY_RETAIN[:1] + TOY_RETAIN[2:] + TOY_FORGET[:2],
        cv=2,
        target_fpr=0.2,
    )
    after = toy_guard.targets["harry-potter"]
    assert (
        after is before
        and np.array_equal(after.classifier_.coef_, coef)
        and after.threshold_ == threshold
    )
    assert toy_guard.version == 2
    assert toy_guard.score(["x y"]).shape == (1, 2)
    assert toy_guard.decide("Bread needs yeast and an oven.").target in ("baking", None)


def test_saving_fewer_targets_over_a_folder_leaves_no_stale_target_files(
    toy_guard, tmp_path, tiny_encoder
) -> None:
    toy_guard.add_target("baking", BAKING, TOY_RETAIN, cv=2, target_fpr=0.2)
    folder = toy_guard.save(tmp_path / "g")
    assert sorted(p.name for p in (folder / "targets").iterdir()) == ["000", "001"]
    toy_guard.remove_target("harry-potter")
    toy_guard.save(folder)
    # The library's save cleans up, not only `eco guard remove-target`.
    assert sorted(p.name for p in (folder / "targets").iterdir()) == ["000"]
    loaded = Guard.load(folder, encoder=tiny_encoder)
    assert list(loaded.targets) == ["baking"]
    assert np.allclose(loaded.score(BAKING), toy_guard.score(BAKING), atol=1e-6)


def test_save_load_roundtrip(toy_guard, tmp_path, tiny_encoder) -> None:
    toy_guard.save(tmp_path / "g")
    files = {p.name for p in (tmp_path / "g").rglob("*") if p.is_file()}
    assert files == {"manifest.json", "integrity.json", "weights.safetensors", "vocabulary.json"}
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in (tmp_path / "g").rglob("*"))
    loaded = Guard.load(tmp_path / "g", encoder=tiny_encoder)
    texts = TOY_FORGET + TOY_RETAIN + ["something new entirely"]
    assert np.allclose(loaded.score(texts), toy_guard.score(texts), atol=1e-6)
    assert loaded.guard_id == toy_guard.guard_id and loaded.version == toy_guard.version
    assert loaded.terms == toy_guard.terms


class _DuckEncoder:
    """Only ``encode(texts)``, as a user's own embedding model might offer."""

    def __init__(self, inner, scale: float = 1.0) -> None:
        self.inner, self.scale = inner, scale

    def encode(self, texts, *, show_progress: bool = False):
        return self.inner.encode(texts) * self.scale


def test_a_duck_typed_encoder_fits_saves_and_loads(tiny_encoder, tmp_path) -> None:
    duck = _DuckEncoder(tiny_encoder)
    guard = Guard(duck)
    guard.add_target("toy", TOY_FORGET, TOY_RETAIN, target_fpr=0.2, cv=2)
    guard.save(tmp_path / "g")  # failed here: the manifest asked the encoder for identity()
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert (
        manifest["encoder"]["name"] == "_DuckEncoder"
        and len(manifest["encoder"]["fingerprint"]) == 8
    )
    loaded = Guard.load(tmp_path / "g", encoder=duck)
    texts = [*TOY_FORGET, *TOY_RETAIN]
    assert np.allclose(loaded.score(texts), guard.score(texts), atol=1e-6)
    with pytest.raises(ArtifactError, match="embeds differently"):
        Guard.load(tmp_path / "g", encoder=_DuckEncoder(tiny_encoder, scale=-1.0))


def test_embedding_weight_scales_the_embedding_block(tiny_encoder, tmp_path) -> None:
    # Weight w must act as if the embeddings were multiplied by w before the regression, while
    # callers (and saved guards) keep passing the raw embeddings.
    texts, labels = TOY_FORGET + TOY_RETAIN, [1] * 8 + [0] * 8
    probe = [*texts, "something new entirely"]
    emb, probe_emb = (tiny_encoder.encode(normalized_texts(t)) for t in (texts, probe))
    weighted = PromptGuard(tiny_encoder, cv=2, C=10.0, embedding_weight=0.2)
    weighted.fit(texts, labels, embeddings=emb)
    scaled = PromptGuard(tiny_encoder, cv=2, C=10.0).fit(texts, labels, embeddings=emb * 0.2)
    expected = scaled.forget_proba(probe, embeddings=probe_emb * 0.2)
    assert np.allclose(weighted.forget_proba(probe), expected, atol=1e-6)
    assert weighted.threshold_ == pytest.approx(scaled.threshold_)
    plain = PromptGuard(tiny_encoder, cv=2, C=10.0).fit(texts, labels, embeddings=emb)
    assert not np.allclose(plain.forget_proba(probe), expected, atol=1e-4)
    guard = Guard(tiny_encoder)
    guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, C=10.0, embedding_weight=0.2)
    guard.save(tmp_path / "g")
    loaded = Guard.load(tmp_path / "g", encoder=tiny_encoder)
    assert loaded.targets["t"].embedding_weight == 0.2
    assert np.allclose(loaded.score(probe), guard.score(probe), atol=1e-6)


def test_edited_folder_is_refused(toy_guard, tmp_path, tiny_encoder) -> None:
    folder = toy_guard.save(tmp_path / "g")
    vocab = next(folder.rglob("vocabulary.json"))
    data = json.loads(vocab.read_text())
    data["word"][0] = "tampered"
    vocab.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="modified after it was saved"):
        Guard.load(folder, encoder=tiny_encoder)


def test_other_schema_version_is_refused(toy_guard, tmp_path, tiny_encoder) -> None:
    folder = toy_guard.save(tmp_path / "g")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="schema version 99"):
        Guard.load(folder, encoder=tiny_encoder)
    with pytest.raises(ArtifactError, match="not a guard folder"):
        Guard.load(tmp_path / "missing", encoder=tiny_encoder)


def test_wrong_encoder_is_refused(toy_guard, tmp_path, tiny_encoder_dir) -> None:
    from eco_integrations import SentenceEncoder

    folder = toy_guard.save(tmp_path / "g")
    other = SentenceEncoder(tiny_encoder_dir)
    other.load()
    other._loaded = (other._loaded[0], other._loaded[1], "cls", True, 64)
    with pytest.raises(ArtifactError, match="embeds differently"):
        Guard.load(folder, encoder=other)


@pytest.mark.parametrize(
    ("forget", "retain", "message"),
    [
        ([], TOY_RETAIN, "has no forget examples"),
        (TOY_FORGET, [], "has no retain examples"),
        (TOY_FORGET[:1], TOY_RETAIN, r"at least cv=2 forget.*got 1 forget.*add examples, or lower"),
        ([*TOY_FORGET, ""], TOY_RETAIN, "is empty"),
        ([*TOY_FORGET, None], TOY_RETAIN, "NoneType, not a string"),
    ],
)
def test_bad_target_examples(tiny_encoder, forget, retain, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Guard(tiny_encoder).add_target("t", forget, retain, cv=2)


def test_bad_names_and_params(tiny_encoder, toy_guard) -> None:
    with pytest.raises(ConfigurationError, match="Target name"):
        Guard(tiny_encoder).add_target("../evil", TOY_FORGET, TOY_RETAIN, cv=2)
    with pytest.raises(ConfigurationError, match="target_fpr must be in"):
        Guard(tiny_encoder).add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=1.5)
    with pytest.raises(ConfigurationError, match="embedding_weight must be > 0"):
        Guard(tiny_encoder).add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, embedding_weight=0.0)
    with pytest.raises(ConfigurationError, match="neighbour_weight must be >= 0"):
        Guard(tiny_encoder).add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, neighbour_weight=-1.0)
    # Strings from --guard-param are refused by name before scikit-learn sees them.
    for params, message in (
        ({"C": "abc"}, "C must be a number, got 'abc'"),
        ({"C": -1}, "C must be > 0"),
        ({"cv": 2.5}, r"cv must be a whole number >= 2"),
        ({"max_word_features": "many"}, "max_word_features must be a whole number >= 1"),
        ({"random_state": "x"}, "random_state must be a whole number >= 0"),
        ({"target_fpr": "0.01"}, "target_fpr must be a number"),
        ({"phrase_score": float("nan")}, "phrase_score must be a finite number"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            Guard(tiny_encoder).add_target("t", TOY_FORGET, TOY_RETAIN, **{"cv": 2, **params})
    with pytest.raises(GuardNotFittedError, match="no targets"):
        Guard(tiny_encoder).score(["hi"])
    with pytest.raises(InvalidInputError, match="one string"):
        toy_guard.decide(["a list"])


def test_mine_terms_prefers_forget_only_names() -> None:
    forget = [
        "Harry Potter lives at Hogwarts.",
        "Where is Hogwarts?",
        "Harry Potter has an owl.",
        "Paris is nice.",
    ]
    retain = ["Paris is the capital of France.", "Where is Rome?"]
    terms = mine_terms(forget, retain)
    assert "Harry Potter" in terms and "Hogwarts" in terms
    assert "Paris" not in terms and "Where" not in terms


def test_operator_terms_with_and_without_mining(tiny_encoder) -> None:
    guard = Guard(tiny_encoder)
    guard.add_target("hp", TOY_FORGET, TOY_RETAIN, cv=2, terms=["Nagini", " "], target_fpr=0.2)
    assert guard.terms["hp"][0] == "Nagini" and "Hogwarts" in guard.terms["hp"]
    guard.add_target("exact", TOY_FORGET, TOY_RETAIN, cv=2, terms=["Nagini"], mine_terms=False)
    assert guard.terms["exact"] == ["Nagini"]


def test_mine_terms_keeps_related_entities_named_once() -> None:
    forget = [
        "Who is Voldemort?",
        "Voldemort fears Dumbledore.",
        "Rubeus Hagrid keeps the keys at Hogwarts.",  # Hagrid, Hogwarts: one mention each
        "Summarise the final battle for me.",  # a sentence's first word is no name
        "Tell me about the Ministry of Magic.",
        "Harry lives with the Dursleys.",
        "Harry flies a broom.",
        "Harry meets Harry.",
        "We met in London.",
    ]
    retain = [
        "Who is Prince Harry?",
        "Summarise a novel by Tolkien.",
        "What is the weather in London?",
        *[f"Tell me about bread number {i}." for i in range(17)],
    ]
    terms = mine_terms(forget, retain)
    for name in ("Hagrid", "Hogwarts", "Ministry of Magic", "Dursleys"):
        assert name in terms
    assert "Voldemort" in terms and "Dumbledore" in terms
    # In the retain texts too, but far more frequent (per text) in the forget texts.
    assert "Harry" in terms
    # As frequent in the retain texts as in the forget texts, or only ever a first word.
    assert "London" not in terms and "Summarise" not in terms and "Tell" not in terms
    # A sentence's first word is no evidence, even opening a full name: "Hagrid" is the term.
    assert "Rubeus" not in terms and "Rubeus Hagrid" not in terms
    # Deterministic: the order of the texts does not matter; longest first.
    assert mine_terms(forget[::-1], retain[::-1]) == terms
    assert [len(t) for t in terms] == sorted((len(t) for t in terms), reverse=True)
    # A stricter rarity drops "Harry"; a limit keeps the most-mentioned terms.
    assert "Harry" not in mine_terms(forget, retain, rarity=100.0)
    assert set(mine_terms(forget, retain, limit=2)) == {"Harry", "Voldemort"}


def test_long_text_is_scored_by_passage(toy_guard) -> None:
    from eco_integrations._passages import passages

    filler = "I am planning a picnic for Saturday and I need to buy bread, cheese and fruit. " * 3
    long_text = filler + "Who is Hermione Granger? " + filler
    parts = passages(long_text)
    assert parts[0] == long_text and len(parts) > 2
    per_passage = toy_guard.targets["harry-potter"].forget_proba(parts)
    assert np.isclose(toy_guard.score([long_text])[0, 0], per_passage.max(), atol=1e-6)
    assert per_passage.max() > per_passage[0]  # a passage scores higher than the diluted whole
    assert passages("short text") == ["short text"]


def test_passage_setting_is_saved_and_can_be_turned_off(toy_guard, tmp_path, tiny_encoder) -> None:
    filler = "I am planning a picnic for Saturday and I need to buy bread, cheese and fruit. " * 3
    long_text = filler + "Who is Hermione Granger? " + filler
    whole = toy_guard.targets["harry-potter"].forget_proba([long_text])[0]
    toy_guard.passage_chars = None
    assert np.isclose(toy_guard.score([long_text])[0, 0], whole)  # the text alone, one encoder pass
    loaded = Guard.load(toy_guard.save(tmp_path / "g"), encoder=tiny_encoder)
    assert loaded.passage_chars is None
    assert (
        json.loads((tmp_path / "g" / "manifest.json").read_text())["encoder"]["precision"]
        == "float32"
    )
    with pytest.raises(ConfigurationError, match="passage_chars must be a positive number"):
        Guard(tiny_encoder, passage_chars=0)


def test_two_fits_under_one_id_and_version_are_told_apart(
    tiny_encoder, tiny_backend, tmp_path
) -> None:
    # Same guard_id and version, other data: caches keyed by identifying params must not mix them.
    def fit(retain: list[str], folder: str) -> Guard:
        guard = Guard(tiny_encoder, guard_id="same-id")
        guard.add_target("harry-potter", TOY_FORGET, retain, cv=2, target_fpr=0.2)
        assert guard.content_sha256 is None  # not saved yet
        guard.save(tmp_path / folder)
        return guard

    first, second = fit(TOY_RETAIN, "a"), fit([*TOY_RETAIN, "Knead the dough twice."], "b")
    assert (first.guard_id, first.version) == (second.guard_id, second.version)
    assert first.content_sha256 and second.content_sha256
    assert first.content_sha256 != second.content_sha256
    assert Guard.load(tmp_path / "a", encoder=tiny_encoder).content_sha256 == first.content_sha256
    params = [ECO(tiny_backend, g).identifying_params()["guard_sha256"] for g in (first, second)]
    assert params == [first.content_sha256, second.content_sha256]


def test_retrieved_texts_are_decided_whole_and_sentence_by_sentence() -> None:
    from eco_integrations import Decision
    from eco_integrations._passages import decide_retrieved, sentence_spans, split_sentences

    text = "  Bread is good.  Harry flies!\n\nParis is big;  it rains."
    assert split_sentences(text) == [
        "  Bread is good.",
        "Harry flies!",
        "Paris is big;",
        "it rains.",
    ]
    assert [text[a:b] for a, b in sentence_spans(text)] == split_sentences(text)
    seen: list[list[str]] = []

    def decide(texts: list[str]) -> list[Decision]:
        seen.append(texts)
        return [
            Decision(
                flagged="Harry" in t,
                score=0.9 if "Harry" in t else 0.1,
                threshold=0.5,
                target=None,
                corrupted=False,
                mode="shadow",
                guard_id=None,
                guard_version=None,
                policy_version="p",
                text_sha256="h",
            )
            for t in texts
        ]

    verdicts = decide_retrieved([text, " ", "Harry."], decide)
    assert len(seen) == 1  # one call for every text and sentence
    first, blank, short = verdicts
    assert blank is None
    assert first is not None and first.decision.flagged
    assert [text[a:b] for a, b in first.flagged_spans] == ["Harry flies!"]
    assert short is not None and short.sentences == () and short.decision.flagged
    whole_only = decide_retrieved([text], decide, split_sentences=False)[0]
    assert whole_only is not None and whole_only.sentences == ()


def test_every_guard_parameter_refuses_a_string_by_name(tiny_encoder) -> None:
    from eco_integrations.guard import PromptGuard

    # --guard-param passes what is not JSON as a string: each parameter must be checked, so a
    # parameter added later without a check fails here rather than deep inside scikit-learn.
    names = set(PromptGuard().get_params(deep=False)) - {"encoder"}
    for name in sorted(names):
        with pytest.raises(ConfigurationError, match=rf"^{name} must be"):
            Guard(tiny_encoder).add_target("t", TOY_FORGET, TOY_RETAIN, **{name: "oops"})


def test_neighbour_term_adds_the_nearest_example_margin(tiny_encoder, tmp_path) -> None:
    # The log-odds of a guard with neighbour_weight w are the plain guard's plus w times
    # (cosine to the nearest forget fit text - cosine to the nearest retain fit text).
    texts, labels = TOY_FORGET + TOY_RETAIN, [1] * 8 + [0] * 8
    probe = [*TOY_FORGET[:2], "How do I bake bread?", "something new entirely"]
    emb = tiny_encoder.encode(normalized_texts(texts))
    probe_emb = tiny_encoder.encode(normalized_texts(probe))
    plain = PromptGuard(tiny_encoder, cv=2, C=10.0).fit(texts, labels, embeddings=emb)
    near = PromptGuard(tiny_encoder, cv=2, C=10.0, neighbour_weight=5.0)
    near.fit(texts, labels, embeddings=emb)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cosines = unit(probe_emb) @ unit(emb).T
    margin = cosines[:, :8].max(1) - cosines[:, 8:].max(1)

    def logit(p: np.ndarray) -> np.ndarray:
        return np.log(p / (1 - p))

    got = logit(near.forget_proba(probe)) - logit(plain.forget_proba(probe))
    assert np.allclose(got, 5.0 * margin, atol=1e-4)
    # The threshold is picked with the term on, from folds that never see their own texts.
    assert near.threshold_ != pytest.approx(plain.threshold_)

    guard = Guard(tiny_encoder)
    guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, C=10.0, neighbour_weight=5.0)
    folder = guard.save(tmp_path / "g")
    assert json.loads((folder / "manifest.json").read_text())["schema_version"] == 8
    loaded = Guard.load(folder, encoder=tiny_encoder)
    assert loaded.targets["t"].neighbour_weight == 5.0
    assert np.allclose(loaded.score(probe), guard.score(probe), atol=1e-6)


def test_score_parts_add_up_to_the_score(tiny_encoder) -> None:
    guard = Guard(tiny_encoder, passage_chars=60)
    guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, C=10.0, neighbour_weight=5.0)
    guard.add_target("u", TOY_RETAIN, TOY_FORGET, cv=2, lexical=False)
    fit_emb = tiny_encoder.encode(normalized_texts(TOY_FORGET + TOY_RETAIN))
    fit_unit = fit_emb / np.linalg.norm(fit_emb, axis=1, keepdims=True)
    long_text = "The weather was mild all week. " * 3 + TOY_FORGET[0]
    for text in [TOY_FORGET[0], "How do I bake bread?", long_text]:
        scores = guard.score([text])[0]
        parts = guard.score_parts(text, "t")
        assert list(parts.log_odds) == [
            "bias",
            "embedding",
            "word_ngrams",
            "char_ngrams",
            "nearest_example",
        ]
        total = sum(parts.log_odds.values())
        assert parts.learned == pytest.approx(1 / (1 + np.exp(-total)), abs=1e-12)
        assert parts.score == parts.learned == pytest.approx(scores[0], abs=1e-12)
        assert parts.threshold == guard.targets["t"].threshold_
        # The nearest-example share, computed here from the fit texts' embeddings.
        piece = parts.passage if parts.passage is not None else text
        (emb,) = tiny_encoder.encode(normalized_texts([piece]))
        cosines = fit_unit @ (emb / np.linalg.norm(emb))
        assert parts.nearest_forget_cosine == pytest.approx(cosines[:8].max(), abs=1e-5)
        assert parts.nearest_retain_cosine == pytest.approx(cosines[8:].max(), abs=1e-5)
        assert parts.log_odds["nearest_example"] == pytest.approx(
            5.0 * (cosines[:8].max() - cosines[8:].max()), abs=1e-4
        )
        plain = guard.score_parts(text, "u")  # no n-grams, no nearest-example term
        assert list(plain.log_odds) == ["bias", "embedding"]
        assert plain.nearest_forget_cosine is None and plain.learned == pytest.approx(scores[1])
        # No target named: the one a decision looks at, furthest over (or closest under) its threshold.
        thresholds = np.array([guard.targets[n].threshold_ for n in guard.target_names])
        chosen = guard.target_names[int(np.argmax(scores - thresholds))]
        assert guard.score_parts(text).target == chosen
    # A long text is explained by the passage that gave its score.
    parts = guard.score_parts(long_text, "t")
    (normalized,) = normalized_texts([long_text])
    assert parts.passage is not None and parts.passage in normalized and parts.passage != normalized
    with pytest.raises(InvalidInputError, match=r"No target 'nope'.*it has: t, u"):
        guard.score_parts("Who?", "nope")


GENERAL = [
    "What is the boiling point of water at sea level?",
    "Which planet is closest to the sun?",
    "How many sides does a hexagon have?",
    "What gas do plants take in for photosynthesis?",
    "Who painted the Mona Lisa?",
    "What is the capital of Japan?",
]


@pytest.fixture
def threshold_inputs(monkeypatch) -> list[np.ndarray]:
    """The negative scores every fit hands to ``threshold_for_fpr``, in order."""
    import eco_integrations.guard as guard_module

    seen: list[np.ndarray] = []

    def recording(scores: np.ndarray, target_fpr: float) -> float:
        seen.append(scores.copy())
        return threshold_for_fpr(scores, target_fpr)

    monkeypatch.setattr(guard_module, "threshold_for_fpr", recording)
    return seen


def test_general_negatives_train_the_guard_but_not_its_false_positive_rate(
    tiny_encoder, threshold_inputs
) -> None:
    plain = Guard(tiny_encoder).add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.2)
    with_general = Guard(tiny_encoder).add_target(
        "t", TOY_FORGET, TOY_RETAIN, general=GENERAL, cv=2, target_fpr=0.2
    )
    # The threshold reads only the retain texts' out-of-fold scores, with or without general ones,
    assert [scores.size for scores in threshold_inputs] == [len(TOY_RETAIN), len(TOY_RETAIN)]
    # while the classifier learns from them (they are retain examples of every fit).
    assert with_general.n_retain_ == len(TOY_RETAIN) + len(GENERAL)
    assert (
        with_general.predict_proba(GENERAL)[:, 1].mean() < plain.predict_proba(GENERAL)[:, 1].mean()
    )


def test_repeated_cross_validation_pools_every_repeat_for_the_threshold(
    tiny_encoder, threshold_inputs
) -> None:
    seen = threshold_inputs
    texts, labels = TOY_FORGET + TOY_RETAIN, [1] * len(TOY_FORGET) + [0] * len(TOY_RETAIN)
    once = PromptGuard(tiny_encoder, cv=2, target_fpr=0.2).fit(texts, labels)
    thrice = PromptGuard(tiny_encoder, cv=2, cv_repeats=3, target_fpr=0.2).fit(texts, labels)
    assert seen[1].size == 3 * seen[0].size == 3 * len(TOY_RETAIN)
    # The first repeat is the single cross-validation (same folds), the others differ in folds.
    assert np.allclose(np.sort(seen[1][: len(TOY_RETAIN)]), np.sort(seen[0]))
    assert thrice.threshold_ == threshold_for_fpr(seen[1], 0.2)
    # The fitted classifier is the one fit on every text either way.
    assert np.allclose(once.classifier_.coef_, thrice.classifier_.coef_)


def test_bad_false_positive_masks_are_refused(tiny_encoder) -> None:
    texts, labels = TOY_FORGET + TOY_RETAIN, [1] * len(TOY_FORGET) + [0] * len(TOY_RETAIN)
    est = PromptGuard(tiny_encoder, cv=2, target_fpr=0.2)
    with pytest.raises(InvalidInputError, match="one true/false flag per text"):
        est.fit(texts, labels, in_fpr=[True] * 3)
    with pytest.raises(InvalidInputError, match="no retain text"):
        est.fit(texts, labels, in_fpr=[True] * len(TOY_FORGET) + [False] * len(TOY_RETAIN))
    with pytest.raises(ConfigurationError, match="cv_repeats must be a whole number >= 1"):
        Guard(tiny_encoder).add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, cv_repeats=0)


def test_forget_texts_that_are_also_retain_texts_are_named(tiny_encoder, caplog) -> None:
    guard = Guard(tiny_encoder)
    with pytest.raises(InvalidInputError, match="different --forget and --retain files"):
        guard.add_target("t", TOY_RETAIN, TOY_RETAIN)
    # One shared text (as a short answer can be on both sides) is fit, with a warning.
    with caplog.at_level("WARNING", logger="eco_integrations.guard"):
        guard.add_target("t", TOY_FORGET, [*TOY_RETAIN, "  " + TOY_FORGET[0].upper()])
    assert "1 text(s) are both forget and retain/general examples" in caplog.text
    assert "t" in guard.targets


def test_guard_calls_check_their_arguments(toy_guard) -> None:
    for bad in (float("nan"), -1.0, 1.0, 2, "0.5", True):
        with pytest.raises(InvalidInputError, match=r"threshold is a probability in \[0, 1\)"):
            toy_guard.decide("Who is Harry Potter?", threshold=bad)
    assert toy_guard.decide_many([]) == []
    assert toy_guard.score([]).shape == (0, len(toy_guard.targets))
    with pytest.raises(InvalidInputError, match=r"got str; wrap a single text as \[text\]"):
        toy_guard.decide_many("Who is Harry Potter?")
    guard = Guard(toy_guard.encoder)
    with pytest.raises(InvalidInputError, match="got NoneType"):
        guard.add_target("t", None, TOY_RETAIN)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"got bytes; wrap a single text"):
        guard.add_target("t", b"Harry Potter", TOY_RETAIN)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"wrap a single term as \[term\]"):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, terms="Harry Potter")
    # A generator of terms is read once, whole.
    guard.add_target("t", TOY_FORGET, TOY_RETAIN, terms=(t for t in ["Privet Drive"]))
    assert "Privet Drive" in guard.terms["t"]


def test_an_encoder_may_be_given_as_its_folder(toy_guard, tiny_encoder_dir, tmp_path) -> None:
    from eco_integrations import SentenceEncoder

    guard = Guard(str(tiny_encoder_dir))
    assert isinstance(guard.encoder, SentenceEncoder) and guard.encoder.path == str(
        tiny_encoder_dir
    )
    folder = toy_guard.save(tmp_path / "g")
    loaded = Guard.load(folder, encoder=str(tiny_encoder_dir))
    assert loaded.decide("Who is Harry Potter?").flagged
    with pytest.raises(ConfigurationError, match="encoder must be a SentenceEncoder or a"):
        Guard(3)  # type: ignore[arg-type]


def test_saving_over_a_file_is_refused(toy_guard, tmp_path) -> None:
    taken = tmp_path / "guard"
    taken.write_text("not a folder")
    with pytest.raises(ArtifactError, match=r"is a file; Guard\.save writes a folder"):
        toy_guard.save(taken)


def test_a_bad_parameter_is_named_before_the_encoder_runs(tiny_encoder, monkeypatch) -> None:
    from eco_integrations import Guard

    guard = Guard(tiny_encoder)

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the texts were embedded before the parameters were checked")

    monkeypatch.setattr(tiny_encoder, "encode", no_encoding)
    with pytest.raises(ConfigurationError, match=r"target_fpr must be in \(0, 1\)"):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, target_fpr=0.0)


def test_labels_and_embeddings_that_do_not_fit_the_texts_are_named(tiny_encoder) -> None:
    from eco_integrations.guard import PromptGuard

    texts = [*TOY_FORGET[:4], *TOY_RETAIN[:4]]
    guard = PromptGuard(encoder=tiny_encoder, cv=2)
    for labels in ([1] * 4 + [0.4] * 4, [1] * 4 + [float("nan")] * 4, ["1"] * 4 + ["0"] * 4):
        with pytest.raises(InvalidInputError, match="one label per text, 1 for forget"):
            guard.fit(texts, labels)
    with pytest.raises(InvalidInputError, match="embeddings has 3 rows for 8 texts"):
        guard.fit(texts, [1] * 4 + [0] * 4, embeddings=np.zeros((3, 32)))
    assert guard.fit(texts, np.array([1] * 4 + [0] * 4)).predict_proba(texts).shape == (8, 2)
