import math

import pytest
import torch

from eco_integrations import ConfigurationError, CorruptionConfig, available_corruptions
from eco_integrations.corruption import (
    _REGISTRY,
    CorruptionParams,
    apply_corruption,
    name_like_token_ids,
    register_corruption,
    validate_corruption,
    word_piece_token_ids,
)

DIM_FUNCS = ["rand_noise_first_n", "rand_noise_top_k", "zero_out_top_k", "flip_sign_top_k"]


REPLACEMENTS = torch.randn(7, 16, generator=torch.Generator().manual_seed(9))
PIECES = torch.randn(5, 16, generator=torch.Generator().manual_seed(10))


def _args(name: str, dims: int = 3, tokens: int = 6) -> dict:
    if name == "substitute_tokens":
        return {"dims": None, "strength": 1.0, "replacements": REPLACEMENTS}
    if name == "invent_words":
        return {
            "dims": None,
            "strength": 1.0,
            "replacements": REPLACEMENTS,
            "continuations": PIECES,
            "continues_word": torch.arange(tokens) % 2 == 1,
        }
    uses_strength = name.startswith("rand_noise")
    return {
        "dims": None if name == "rand_noise_full" else dims,
        "strength": 5.0 if uses_strength else None,
    }


@pytest.mark.parametrize("name", available_corruptions())
def test_only_selected_positions_change(name: str) -> None:
    torch.manual_seed(0)
    embeds = torch.randn(6, 16)
    mask = torch.tensor([False, True, False, True, False, False])
    out = apply_corruption(
        name, embeds, mask, generator=torch.Generator().manual_seed(1), **_args(name)
    )
    assert torch.equal(out[~mask], embeds[~mask])
    assert not torch.equal(out[mask], embeds[mask])
    assert out.shape == embeds.shape


@pytest.mark.parametrize("name", DIM_FUNCS)
def test_exactly_dims_dimensions_change(name: str) -> None:
    torch.manual_seed(0)
    embeds = torch.randn(4, 16)
    mask = torch.ones(4, dtype=torch.bool)
    out = apply_corruption(
        name, embeds, mask, generator=torch.Generator().manual_seed(1), **_args(name, dims=5)
    )
    changed = (out != embeds).sum(dim=1)
    assert changed.tolist() == [5, 5, 5, 5]
    if name == "rand_noise_first_n":
        assert torch.equal(out[:, 5:], embeds[:, 5:])


def test_top_k_hits_largest_magnitudes() -> None:
    embeds = torch.tensor([[0.1, -3.0, 0.2, 2.0, 0.0]])
    out = apply_corruption(
        "zero_out_top_k",
        embeds,
        torch.tensor([True]),
        dims=2,
        strength=None,
        generator=torch.Generator(),
    )
    assert torch.allclose(out, torch.tensor([[0.1, 0.0, 0.2, 0.0, 0.0]]))
    flipped = apply_corruption(
        "flip_sign_top_k",
        embeds,
        torch.tensor([True]),
        dims=2,
        strength=None,
        generator=torch.Generator(),
    )
    assert torch.allclose(flipped, torch.tensor([[0.1, 3.0, 0.2, -2.0, 0.0]]))


def test_same_seed_same_output_and_input_untouched() -> None:
    embeds = torch.randn(5, 8)
    before = embeds.clone()
    mask = torch.ones(5, dtype=torch.bool)

    def noisy(seed: int) -> torch.Tensor:
        return apply_corruption(
            "rand_noise_first_n",
            embeds,
            mask,
            dims=2,
            strength=3.0,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(noisy(7), noisy(7))
    assert not torch.equal(noisy(7), noisy(8))
    assert torch.equal(embeds, before)


def test_a_custom_corruption_gets_the_selected_rows_only() -> None:
    seen: list[tuple[int, ...]] = []

    @register_corruption("test_scale", uses_dims=False, uses_strength=True, description="x")
    def scale(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
        seen.append(tuple(rows.shape))
        return rows * params.need_strength()

    try:
        embeds = torch.ones(4, 3)
        mask = torch.tensor([True, False, True, False])
        out = apply_corruption(
            "test_scale", embeds, mask, dims=None, strength=2.0, generator=torch.Generator()
        )
        assert seen == [(2, 3)]
        assert out[mask].eq(2.0).all() and out[~mask].eq(1.0).all()
        assert "test_scale" in available_corruptions()
        with pytest.raises(ConfigurationError, match="already registered"):
            register_corruption("test_scale", uses_dims=False, uses_strength=True, description="")(
                scale
            )
    finally:
        _REGISTRY.pop("test_scale", None)


def test_a_corruption_that_changes_the_shape_is_named() -> None:
    @register_corruption("test_broken", uses_dims=False, uses_strength=False, description="x")
    def broken(rows: torch.Tensor, params: CorruptionParams) -> torch.Tensor:
        return rows[:, :1]

    try:
        with pytest.raises(ConfigurationError, match=r"'test_broken' returned .*same shape"):
            apply_corruption(
                "test_broken",
                torch.ones(3, 4),
                torch.ones(3, dtype=torch.bool),
                dims=None,
                strength=None,
                generator=torch.Generator(),
            )
    finally:
        _REGISTRY.pop("test_broken", None)


def test_noise_scale_matches_strength() -> None:
    embeds = torch.zeros(4000, 4)
    out = apply_corruption(
        "rand_noise_first_n",
        embeds,
        torch.ones(4000, dtype=torch.bool),
        dims=1,
        strength=10.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert math.isclose(float(out[:, 0].std()), 10.0, rel_tol=0.05)


def test_empty_mask_is_identity() -> None:
    embeds = torch.randn(3, 8)
    out = apply_corruption(
        "rand_noise_full",
        embeds,
        torch.zeros(3, dtype=torch.bool),
        dims=None,
        strength=1.0,
        generator=torch.Generator(),
    )
    assert torch.equal(out, embeds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope", "dims": 1, "strength": 1.0}, "Unknown corruption 'nope'"),
        (
            {"name": "rand_noise_first_n", "dims": 0, "strength": 1.0},
            "dims must be a positive integer",
        ),
        (
            {"name": "rand_noise_first_n", "dims": 1, "strength": -1.0},
            "strength must be a finite number >= 0",
        ),
        ({"name": "rand_noise_first_n", "dims": 1, "strength": float("nan")}, "finite"),
        ({"name": "rand_noise_first_n", "dims": None, "strength": 1.0}, "needs dims"),
        ({"name": "zero_out_top_k", "dims": 4, "strength": 2.0}, "does not use strength"),
        ({"name": "rand_noise_full", "dims": 4, "strength": 2.0}, "does not use dims"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorruptionConfig(**kwargs)


def test_dims_above_hidden_size() -> None:
    with pytest.raises(ConfigurationError, match="exceeds the model's hidden size 8"):
        apply_corruption(
            "zero_out_top_k",
            torch.randn(2, 8),
            torch.ones(2, dtype=torch.bool),
            dims=9,
            strength=None,
            generator=torch.Generator(),
        )


def test_substitute_tokens_moves_toward_a_replacement_by_strength() -> None:
    embeds = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False, True, True, False])

    def run(strength: float, seed: int = 1) -> torch.Tensor:
        return apply_corruption(
            "substitute_tokens",
            embeds,
            mask,
            dims=None,
            strength=strength,
            generator=torch.Generator().manual_seed(seed),
            replacements=REPLACEMENTS,
        )

    full = run(1.0)
    # Strength 1: each selected token is one of the replacement rows, exactly.
    for row in full[mask]:
        assert any(torch.equal(row, r) for r in REPLACEMENTS)
    assert torch.equal(run(0.0), embeds)
    half = run(0.5)
    assert torch.allclose(half[mask], (embeds[mask] + full[mask]) / 2)
    assert torch.equal(run(1.0), full)  # one seed, one draw (audits replay it)


def test_name_like_token_ids_reads_as_names(tiny_tokenizer) -> None:
    ids = name_like_token_ids(tiny_tokenizer)
    words = [tiny_tokenizer.decode([i]) for i in ids]
    assert words and all(w[0] == " " and w[1].isupper() and w[2:].islower() for w in words)
    assert " The" not in words
    # A capitalised word whose lower-case form is a token too is a word, not a name.
    decoded = {tiny_tokenizer.decode([i]) for i in range(len(tiny_tokenizer))}
    assert not any(w.lower() in decoded for w in words)
    banned = words[0][1:]
    assert words[0] not in [
        tiny_tokenizer.decode([i]) for i in name_like_token_ids(tiny_tokenizer, [banned.upper()])
    ]


def test_invent_words_puts_a_start_where_a_word_starts_and_a_piece_where_it_goes_on() -> None:
    embeds = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([True, True, True, False, True, False])
    # " Vol" "dem" "ort" | "?" | " Harry" (a new word) | last token
    goes_on = torch.tensor([False, True, True, False, False, False])

    def run(strength: float) -> torch.Tensor:
        return apply_corruption(
            "invent_words",
            embeds,
            mask,
            dims=None,
            strength=strength,
            generator=torch.Generator().manual_seed(1),
            replacements=REPLACEMENTS,
            continuations=PIECES,
            continues_word=goes_on,
        )

    full = run(1.0)
    for i in (0, 4):
        assert any(torch.equal(full[i], r) for r in REPLACEMENTS)
    for i in (1, 2):
        assert any(torch.equal(full[i], r) for r in PIECES)
    assert torch.equal(full[~mask], embeds[~mask])
    assert torch.equal(run(0.0), embeds)
    assert torch.allclose(run(0.5)[mask], (embeds[mask] + full[mask]) / 2)
    assert torch.equal(run(1.0), full)  # one seed, one draw


_ALL_ROWS = torch.ones(3, dtype=torch.bool)


_WORD = {"replacements": REPLACEMENTS, "continues_word": _ALL_ROWS}


@pytest.mark.parametrize(
    ("name", "given", "problem"),
    [
        ("substitute_tokens", {}, "replacement_embeddings"),
        ("substitute_tokens", {"replacements": torch.randn(4, 8)}, "same model"),
        ("invent_words", _WORD, r"continuations_for\('invent_words'\)"),
        ("invent_words", {**_WORD, "continuations": torch.randn(4, 8)}, "same model"),
        (
            "invent_words",
            {**_WORD, "continuations": PIECES, "continues_word": torch.ones(4, dtype=torch.bool)},
            "one flag per prompt token",
        ),
    ],
)
def test_a_substitution_refuses_what_it_cannot_use(name: str, given: dict, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        apply_corruption(
            name,
            torch.randn(3, 16),
            _ALL_ROWS,
            dims=None,
            strength=1.0,
            generator=torch.Generator().manual_seed(0),
            **given,
        )


def test_a_share_is_at_most_1_and_word_pieces_need_word_starts() -> None:
    for name in ("substitute_tokens", "invent_words"):
        with pytest.raises(ConfigurationError, match="between 0 and 1"):
            validate_corruption(name, None, 2.0)
    with pytest.raises(ConfigurationError, match="uses_replacements=True"):
        register_corruption(
            "pieces_without_starts",
            uses_dims=False,
            uses_strength=False,
            description="x",
            uses_word_pieces=True,
        )(lambda rows, params: rows)
    assert "pieces_without_starts" not in available_corruptions()


def test_word_starts_are_short_and_word_pieces_go_on_a_word(tiny_tokenizer) -> None:
    every = [tiny_tokenizer.decode([i]) for i in name_like_token_ids(tiny_tokenizer)]
    short = [tiny_tokenizer.decode([i]) for i in name_like_token_ids(tiny_tokenizer, longest=4)]
    assert set(short) == {w for w in every if len(w) - 1 <= 4}
    with pytest.raises(ConfigurationError, match="at least 3"):
        name_like_token_ids(tiny_tokenizer, longest=2)
    pieces = [tiny_tokenizer.decode([i]) for i in word_piece_token_ids(tiny_tokenizer)]
    assert pieces and all(p.isalpha() and p.islower() and 2 <= len(p) <= 4 for p in pieces)
