import random

import pytest

from eco_integrations._echo import Echo, EchoRestorer, restore_echoes

MONTENEGRO = Echo.of(" Hermonge Pewpox", "Carmen Montenegro's")
LEADERSHIP = Echo.of(" Amaz", "leadership")


def test_an_echo_drops_the_prompts_possessive_and_words_read_as_written_are_none() -> None:
    assert Echo(("Hermonge", "Pewpox"), "Carmen Montenegro") == MONTENEGRO
    assert Echo.of(" Carmen Montenegro", "Carmen Montenegro") is None
    assert Echo.of(" ...", "Carmen") is None


@pytest.mark.parametrize(
    ("answer", "restored"),
    [
        # The whole invented name, then its first word alone with a possessive and a comma.
        (
            "Hermonge Pewpox writes in the Amaz genre.",
            "Carmen Montenegro writes in the leadership genre.",
        ),
        ("Readers of Hermonge's books, say", "Readers of Carmen Montenegro's books, say"),
        # A copy that drops or swaps a letter is still the echo; quotes and punctuation stay.
        ('"Hermnge Pewpx," she said.', '"Carmen Montenegro," she said.'),
        # The name's words in another order are two echoes of its start, not one.
        ("Pewpox Hermonge", "Pewpox Carmen Montenegro"),
        # A word that shares a short start but is another word is left alone.
        ("Hermes and Amazon are not it.", "Hermes and Amazon are not it."),
        ("  Leading spaces\nand lines stay.\n", "  Leading spaces\nand lines stay.\n"),
    ],
)
def test_echoes_of_the_read_words_are_written_back(answer: str, restored: str) -> None:
    assert restore_echoes(answer, [LEADERSHIP, MONTENEGRO]) == restored


def test_no_echoes_leave_the_answer_as_it_is() -> None:
    text = "Hermonge Pewpox writes."
    assert restore_echoes(text, []) == text


def test_a_stream_in_any_chunks_gives_the_whole_answers_text() -> None:
    answers = [
        "Hermonge Pewpox writes in the Amaz genre.",
        "  Yes, Hermonge Pewpox's  books (Amaz,  mostly) sell. Hermonge",
        "Nothing to restore here at all, Hermes.",
        "Hermonge\n\nPewpox",
    ]
    draw = random.Random(0)
    for answer in answers:
        whole = restore_echoes(answer, [MONTENEGRO, LEADERSHIP])
        for _ in range(50):
            cuts = sorted(draw.sample(range(1, len(answer)), k=draw.randint(1, 8)))
            chunks = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
            restorer = EchoRestorer([MONTENEGRO, LEADERSHIP])
            streamed = "".join(restorer.feed(c) for c in chunks) + restorer.finish()
            assert streamed == whole, chunks
