import copy
import hashlib
import json

import pytest
from pydantic import ValidationError

from eco_integrations import ECOPolicy, InvalidInputError, SelectionConfig
from eco_integrations._prompting import (
    _term_spans,
    classified_indices,
    classified_text,
    render,
    select_positions,
    tokenizer_knows,
    word_continuations,
)


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


def test_a_term_only_at_the_last_token_falls_back_to_the_content(tiny_tokenizer) -> None:
    # A raw prompt ends on its own text, and the last token is never corrupted: a term found
    # only there selected nothing, so a flagged prompt was answered uncorrupted.
    rendered = render(tiny_tokenizer, "Tell me about the wizard", raw=True)
    mask = select_positions(rendered, SelectionConfig(name="entities"), terms=["wizard"])
    assert bool(mask.any())
    assert mask.tolist() == select_positions(rendered, SelectionConfig(name="content")).tolist()


@pytest.mark.parametrize("word", ["user", "im_start", "assistant"])
def test_a_message_is_found_in_its_place_not_in_the_template(tiny_tokenizer, word: str) -> None:
    rendered = render(tiny_tokenizer, word)
    (span,) = rendered.content_spans
    header = "<|im_start|>user\n"
    assert span == (len(header), len(header) + len(word))


def test_a_message_repeating_the_default_system_prompt_is_found_in_its_place(
    tiny_tokenizer,
) -> None:
    # A template that adds its own system prompt (as SmolLM2's names its maker) when none is sent.
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nA model by Hogwarts Castle."
        "<|im_end|>\n{% endif %}" + tiny_tokenizer.chat_template
    )
    rendered = render(tokenizer, [{"role": "user", "content": "Hogwarts Castle"}])
    (span,) = rendered.content_spans
    assert rendered.text[span[0] - len("user\n") : span[1]] == "user\nHogwarts Castle"
    mask = select_positions(rendered, SelectionConfig(name="content"))
    assert _selected_text(rendered, mask).strip().startswith("Hogwarts")
    assert rendered.text.index("Hogwarts") < rendered.offsets[int(mask.nonzero()[0])][0]


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


CONVERSATION = [
    {"role": "system", "content": "Answer about Paris."},
    {"role": "user", "content": "First question."},
    {"role": "assistant", "content": "First answer."},
    {"role": "user", "content": "Second question."},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]},
    {"role": "tool", "content": "Tool result."},
]


@pytest.mark.parametrize(
    ("roles", "window", "read"),
    [
        (("user",), 1, ["Second question."]),
        (("user",), 2, ["First question.", "Second question."]),
        (("system", "user"), 1, ["Answer about Paris.", "Second question."]),
        (("user", "tool"), 1, ["Second question.", "Tool result."]),
        # An older turn's assistant message is read only when its turn is in the window.
        (("user", "assistant"), 1, ["Second question."]),
        (("user", "assistant"), 2, ["First question.", "First answer.", "Second question."]),
        (
            ("system", "user", "assistant", "tool"),
            1,
            ["Answer about Paris.", "Second question.", "Tool result."],
        ),
    ],
)
def test_classify_roles_pick_what_the_guard_reads(roles, window, read) -> None:
    picked = classified_indices(CONVERSATION, window, roles)
    assert [CONVERSATION[i]["content"] for i in picked] == read
    assert classified_text(CONVERSATION, window=window, roles=roles) == "\n".join(read)


def test_a_greeting_before_the_first_question_belongs_to_its_turn() -> None:
    messages = [
        {"role": "assistant", "content": "Hello, ask me anything."},
        {"role": "user", "content": "Who?"},
    ]
    assert classified_indices(messages, 1, ("user",)) == [1]
    assert classified_indices(messages, 1, ("user", "assistant")) == [0, 1]


def test_content_selector_corrupts_every_classified_message(tiny_tokenizer) -> None:
    roles = ("system", "user", "tool")
    rendered = render(tiny_tokenizer, CONVERSATION, roles=roles)
    assert rendered.classified_text == "Answer about Paris.\nSecond question.\nTool result."
    picked = _selected_text(rendered, select_positions(rendered, SelectionConfig(name="content")))
    assert "Paris" in picked and "Tool result" in picked and "Second question" in picked
    assert "First" not in picked


def test_classify_roles_must_include_the_user_and_hash_as_a_set() -> None:
    with pytest.raises(ValidationError, match="leaves out 'user'"):
        ECOPolicy(classify_roles=("system",))
    with pytest.raises(ValidationError, match="classify_roles"):
        ECOPolicy(classify_roles=("user", "developer"))
    one = ECOPolicy(classify_roles=("tool", "user", "system", "user"))
    assert one.classify_roles == ("system", "user", "tool")
    assert one.version_hash == ECOPolicy(classify_roles=("system", "tool", "user")).version_hash
    assert one.version_hash != ECOPolicy().version_hash
    # Unset, the policy hashes as one saved before the fields existed.
    payload = ECOPolicy().model_dump(
        mode="json", exclude={"notes", "threshold", "classify_roles", "restore_prompt_words"}
    )
    assert (
        ECOPolicy().version_hash
        == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    )
    assert ECOPolicy().read_roles == ("user",)


def _spans_text(text: str, terms: list[str], known=lambda word: False) -> list[str]:
    return sorted(text[s:e] for s, e in _term_spans(text, [(0, len(text))], terms, known))


def test_a_misspelt_term_is_selected_not_the_whole_question(tiny_tokenizer) -> None:
    # "Hermoine" matched no term, so a flagged question fell back to corrupting all its words.
    rendered = render(tiny_tokenizer, "Tell me about Hermoine Granger and Hogwrats.")
    mask = select_positions(
        rendered, SelectionConfig(name="entities"), terms=["Hermione Granger", "Hogwarts"]
    )
    picked = _selected_text(rendered, mask)
    assert "Hermoine Granger" in picked and "Hogwrats" in picked and "Tell" not in picked


def test_what_counts_as_a_misspelt_term() -> None:
    # One typo inside a long word, each word of a longer term, the term's own punctuation.
    assert _spans_text("who is hermoine granger", ["Hermione Granger"]) == ["hermoine granger"]
    assert _spans_text("wat is quiditch", ["Quidditch"]) == ["quiditch"]
    assert _spans_text("Al-Hasihm's Love", ["Al-Hashim's Love"]) == ["Al-Hasihm's Love"]
    assert _spans_text("Al Hasihm's Love", ["Al-Hashim's Love"]) == []
    # A zero-width space or soft hyphen hidden inside a word leaves it that word, and letters one
    # space apart are one word (that spells a term or not).
    assert _spans_text("Who is V o l d e m o r t?", ["Voldemort"]) == ["V o l d e m o r t"]
    assert _spans_text("a b c d e and Voldemort", ["Voldemort"]) == ["Voldemort"]
    assert _spans_text("Lord Volde\u200bmort", ["Voldemort"]) == ["Volde\u200bmort"]
    assert _spans_text("Hermi\u00adone Gran\u200dger", ["Hermione Granger"]) == [
        "Hermi\u00adone Gran\u200dger"
    ]
    # Short words have too many neighbours; a changed first or last letter makes another word
    # or another form of it; two typos in one word are too many.
    assert _spans_text("Hurry up", ["Harry"]) == []
    assert _spans_text("Fading Whispers", ["Whisper"]) == []
    assert _spans_text("Dumbledor", ["Dumbledore"]) == []
    assert _spans_text("Kogwarts", ["Hogwarts"]) == []
    assert _spans_text("Hgowrats", ["Hogwarts"]) == []
    # A word the tokenizer keeps whole is a word of its own, not a typo ("Manuel" of "Manual").
    assert _spans_text("Manuel Silva", ["Manual"], known=lambda word: word == "manuel") == []
    assert _spans_text("Manuel Silva", ["Manual"]) == ["Manuel"]
    # Without the tokenizer's vocabulary, terms match exactly only.
    assert _spans_text("who is hermoine granger", ["Hermione Granger"], known=None) == []


def test_the_tokenizer_decides_which_words_it_knows(tiny_tokenizer) -> None:
    knows = tokenizer_knows(tiny_tokenizer)
    assert knows is tokenizer_knows(tiny_tokenizer)  # one cache per tokenizer
    rendered = render(tiny_tokenizer, "Who is Harry Potter?")
    assert rendered.known_word is knows
    # In lower case or capitalised, after a space or not: "who" is split, "Who" is one token.
    assert knows("the") and knows("who") and knows("WHO")
    assert not knows("harry") and not knows("hermoine")


def test_word_continuations_mark_the_tokens_that_go_on_a_word(tiny_tokenizer) -> None:
    rendered = render(tiny_tokenizer, "Who is Voldemort? Ask (Hermione).")
    flags = word_continuations(rendered)
    assert flags.shape == (len(rendered.input_ids),)
    for (start, end), goes_on in zip(rendered.offsets, flags.tolist(), strict=True):
        piece = rendered.text[start:end]
        before = rendered.text[start - 1] if start else ""
        expected = end > start and piece[0].isalnum() and before.isalnum()
        assert goes_on == expected, (piece, before)
    # Joined, each start and the tokens that go on it are the question's words.
    question = rendered.text.index("Who is")
    words: list[str] = []
    for (start, end), goes_on in zip(rendered.offsets, flags.tolist(), strict=True):
        if question <= start < question + 33:
            if goes_on:
                words[-1] += rendered.text[start:end]
            else:
                words.append(rendered.text[start:end])
    assert [w.strip() for w in words if w.strip().isalpha()] == [
        "Who",
        "is",
        "Voldemort",
        "Ask",
        "Hermione",
    ]


def test_matched_terms_are_the_terms_a_text_names() -> None:
    from eco_integrations._prompting import matched_terms

    terms = ["Harry Potter", "Hogwarts", "Ron", "Potter"]
    assert matched_terms("Did harry potter meet Ronald?", terms) == ["Harry Potter", "Potter"]
    assert matched_terms("Nothing here.", terms) == []


def test_name_mentions_are_capitalised_phrases_in_mid_sentence() -> None:
    from eco_integrations._passages import name_mentions

    found = name_mentions("The author wrote 'The Breath Between Waves' in Seoul. Critics loved it.")
    assert "The Breath Between Waves" in found and "Seoul" in found
    # A sentence's first word is capitalised anyway: not a name by its form.
    assert "Critics" not in found
    assert "The Breath Between Waves'" not in found, "the quote closing the title is left out"
