import pytest

from eco_integrations import InvalidInputError, SelectionConfig
from eco_integrations._prompting import render, select_positions


def _selected_text(rendered, mask) -> str:
    return "".join(
        rendered.text[s:e] for (s, e), m in zip(rendered.offsets, mask.tolist(), strict=True) if m
    )


def test_content_selects_user_words_only(tiny_tokenizer) -> None:
    messages = [
        {"role": "system", "content": "You answer about Paris."},
        {"role": "user", "content": "Who is Harry Potter?"},
    ]
    rendered = render(tiny_tokenizer, messages)
    mask = select_positions(rendered, SelectionConfig(name="content"))
    picked = _selected_text(rendered, mask)
    assert "Harry" in picked and "Potter" in picked
    assert "Paris" not in picked and "im_start" not in picked and "assistant" not in picked
    assert not mask[-1]


def test_all_selects_everything_but_the_last(tiny_tokenizer) -> None:
    rendered = render(tiny_tokenizer, "Who is Harry Potter?")
    mask = select_positions(rendered, SelectionConfig(name="all"))
    assert mask.tolist() == [True] * (len(rendered.input_ids) - 1) + [False]


def test_entities_and_fallback(tiny_tokenizer) -> None:
    rendered = render(tiny_tokenizer, "Tell me about Hogwarts and the castle.")
    mask = select_positions(rendered, SelectionConfig(name="entities"), terms=["hogwarts"])
    assert _selected_text(rendered, mask).strip() == "Hogwarts"
    no_term = select_positions(rendered, SelectionConfig(name="entities"), terms=["Voldemort"])
    content = select_positions(rendered, SelectionConfig(name="content"))
    assert no_term.tolist() == content.tolist()


def test_first_n(tiny_tokenizer) -> None:
    rendered = render(tiny_tokenizer, "Who is Harry Potter?")
    mask = select_positions(rendered, SelectionConfig(name="first_n", n=2))
    assert int(mask.sum()) == 2
    assert (
        _selected_text(rendered, mask)
        == "Who is Harry Potter?"[: len(_selected_text(rendered, mask))]
    )


def test_window_classifies_earlier_turns(tiny_tokenizer) -> None:
    messages = [
        {"role": "user", "content": "Let us talk about Hogwarts."},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Who is the headmaster there?"},
    ]
    assert render(tiny_tokenizer, messages).classified_text == "Who is the headmaster there?"
    rendered = render(tiny_tokenizer, messages, window=2)
    assert "Hogwarts" in rendered.classified_text and "headmaster" in rendered.classified_text
    picked = _selected_text(rendered, select_positions(rendered, SelectionConfig(name="content")))
    assert "Hogwarts" in picked and "Sure" not in picked


def test_raw_prompt_has_no_template(tiny_tokenizer) -> None:
    rendered = render(tiny_tokenizer, "Question: 2+2?\nAnswer:", raw=True)
    assert rendered.text == "Question: 2+2?\nAnswer:"
    assert "im_start" not in rendered.text


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "prompt is empty"),
        ([], "conversation is empty"),
        ([{"role": "wizard", "content": "hi"}], "role 'wizard'"),
        ([{"role": "user", "content": 3}], "content of type int"),
        ([{"role": "system", "content": "x"}], "no non-empty user message"),
        (["hello"], "Message 0 is str"),
        (42, "got int"),
    ],
)
def test_bad_prompts(tiny_tokenizer, prompt, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        render(tiny_tokenizer, prompt)


def test_unknown_selector() -> None:
    with pytest.raises(ValueError, match="Unknown token selector 'nouns'"):
        SelectionConfig(name="nouns")
    with pytest.raises(ValueError, match="first_n selector needs n"):
        SelectionConfig(name="first_n")
