"""The fast paths on the guard's hot loop compute the same numbers as the library code they replace."""

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import normalize
from toy_data import TOY_FORGET, TOY_RETAIN

from eco_integrations import PromptGuard, SentenceEncoder
from eco_integrations.encoder import _BertForward, length_sorted_batches
from eco_integrations.guard import _CHAR, _WORD, _stack, _Tfidf


def _reference_hidden(
    encoder: SentenceEncoder, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model, tokenizer, *_ = encoder.load()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return (
            model(**batch).last_hidden_state,
            encoder._forward(batch),
            batch["attention_mask"].bool(),
        )


def test_bert_forward_matches_transformers_on_a_padded_batch(tiny_encoder) -> None:
    texts = [
        "short",
        "a much longer sentence with many more tokens than the first one",
        "mid length text",
    ]
    reference, fast, mask = _reference_hidden(tiny_encoder, texts)
    assert isinstance(tiny_encoder._forward, _BertForward)
    assert mask.sum() < mask.numel()  # the batch really is padded
    assert torch.allclose(reference[mask], fast[mask], atol=1e-5)


def test_unsupported_bert_variant_takes_the_transformers_forward(
    tiny_encoder_dir, tmp_path
) -> None:
    import json
    import shutil

    folder = tmp_path / "relative-bert"
    shutil.copytree(tiny_encoder_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["position_embedding_type"] = "relative_key"  # outside what _BertForward reimplements
    (folder / "config.json").write_text(json.dumps(config))
    encoder = SentenceEncoder(folder)
    texts = ["short", "a much longer sentence with many more tokens than the first one"]
    embeddings = encoder.encode(texts)
    assert not isinstance(encoder._forward, _BertForward)
    # The sentence embeddings the guard sees equal transformers' own forward, pooled by hand
    # (mean over real tokens, L2-normalised when the folder asks for it), row by row.
    model, tokenizer, pooling, normalize, _ = encoder.load()
    for text, embedding in zip(texts, embeddings, strict=True):
        batch = tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state[0]
        expected = (
            hidden.max(0).values
            if pooling == "max"
            else hidden[0]
            if pooling == "cls"
            else hidden.mean(0)
        )
        if normalize:
            expected = torch.nn.functional.normalize(expected, dim=-1)
        assert np.allclose(embedding, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("options", [_WORD, _CHAR], ids=["word", "char"])
def test_lexicon_matches_sklearn_tfidf(options) -> None:
    texts = TOY_FORGET + TOY_RETAIN
    labels = np.array([1] * len(TOY_FORGET) + [0] * len(TOY_RETAIN))
    lexicon = _Tfidf.fit(texts, labels, options, max_features=500)
    probes = [*texts, "zzzz qqqq", "Hogwarts hogwarts HOGWARTS"]
    counter = CountVectorizer(
        vocabulary={t: i for i, t in enumerate(lexicon.vocabulary)}, **options
    )
    counts = counter.transform(probes).astype(np.float32)
    counts.data = 1.0 + np.log(counts.data)
    expected = normalize(counts.multiply(lexicon.idf).tocsr()).multiply(lexicon.ratio).toarray()
    got = lexicon.transform(probes)
    assert got.shape == expected.shape
    assert np.allclose(got.toarray(), expected, atol=1e-6)
    assert not np.any(
        got[len(texts)].toarray()
    )  # no known n-gram: an all-zero row, not a division by zero


def test_forget_probability_matches_predict_proba(tiny_encoder) -> None:
    guard = PromptGuard(tiny_encoder, target_fpr=0.2, cv=2).fit(
        TOY_FORGET + TOY_RETAIN, [1] * 8 + [0] * 8
    )
    # "zzzz qqqq" holds no known n-gram: an empty row in every lexical block.
    probes = [
        "Who is the headmaster of Hogwarts?",
        "How do I bake bread?",
        "zzzz qqqq",
        *TOY_RETAIN[:3],
    ]
    emb = tiny_encoder.encode(probes)
    stacked = _stack(emb, [lex.transform(probes) for lex in guard.lexicons_])
    assert np.allclose(
        guard.forget_proba(probes, embeddings=emb),
        guard.classifier_.predict_proba(stacked)[:, 1],
        atol=1e-12,
    )


def test_bfloat16_encoder_stays_close_to_float32(tiny_encoder_dir) -> None:
    texts = [
        "short",
        "a much longer sentence with many more tokens than the first one",
        "mid length text",
    ]
    exact = SentenceEncoder(tiny_encoder_dir).encode(texts)
    fast = SentenceEncoder(tiny_encoder_dir, precision="bfloat16")
    approx = fast.encode(texts)
    assert fast.identity()["precision"] == "bfloat16"
    assert approx.dtype == np.float32 and np.all((exact * approx).sum(1) > 0.999)


def test_bad_encoder_settings_are_refused(tiny_encoder_dir) -> None:
    from eco_integrations import ConfigurationError

    with pytest.raises(ConfigurationError, match="Unknown encoder precision 'fp8'"):
        SentenceEncoder(tiny_encoder_dir, precision="fp8")
    with pytest.raises(ConfigurationError, match="batch_size must be a positive integer"):
        SentenceEncoder(tiny_encoder_dir, batch_size=0)


def test_length_sorted_batches_cover_every_text_once_shortest_first(tiny_encoder) -> None:
    texts = ["a" * n for n in (9, 1, 5, 3, 7, 2, 8)]
    batches = list(length_sorted_batches(texts, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(texts)))
    assert [len(texts[i]) for i in flat] == sorted(len(t) for t in texts)
    # encode writes each batch back at its indices: the input order survives the sorting.
    one_by_one = np.vstack([tiny_encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(tiny_encoder.encode(texts), one_by_one, atol=1e-5)
