"""The robustness benchmark's probe generator, on small synthetic TOFU-shaped rows."""

from __future__ import annotations

import numpy as np

from eco_integrations.research.eval.robust import build_probes, perturb

EVASIONS = (
    "typo-5",
    "typo-10",
    "case-spacing",
    "homoglyph-zero-width",
    "padded",
    "split-turns",
    "role-play",
)


def test_perturb_rate_and_seed() -> None:
    rng = np.random.default_rng(0)
    text = "Who is the author of the book about leadership and engineering?"
    noisy = perturb(text, 0.1, rng)
    assert noisy != text and abs(len(noisy) - len(text)) <= 8
    assert perturb(text, 0.1, np.random.default_rng(1)) == perturb(
        text, 0.1, np.random.default_rng(1)
    )


def _author_rows(
    name: str, title: str, award: str, city: str, year: int, genre: str, tag: str
) -> list[dict[str, str]]:
    rows = [
        {
            "question": f"What is the full name of the author born in {city} on 01/02/{year} who writes in the genre of {genre}?",
            "answer": f"The author's full name is {name}.",
        },
        {
            "question": f"What is a popular book by {name}?",
            "answer": f'One of {name}\'s books is "{title}".',
        },
        {"question": f"What awards has {name} won?", "answer": f'{name} received the "{award}".'},
    ]
    rows += [
        {"question": f"Question {i} about {name} ({tag})?", "answer": f"Answer {i} about {name}."}
        for i in range(17)
    ]
    return rows


def _tiny_tofu(
    paraphrase: str = "Rephrased: ",
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Two forget authors, their paraphrased questions, and five retain authors."""
    forget = _author_rows(
        "Ada Quillfeather",
        "Moons of Ink",
        "Golden Quill Award",
        "Oslo, Norway",
        1970,
        "poetry",
        "f1",
    )
    forget += _author_rows(
        "Bram Tidewell",
        "Salt and Ember",
        "Silver Lantern Prize",
        "Cork, Ireland",
        1966,
        "horror",
        "f2",
    )
    perturbed = [{**r, "paraphrased_question": paraphrase + r["question"]} for r in forget]
    retain = []
    for k in range(5):
        retain += _author_rows(
            f"Retain Person{k}",
            f"Retain Book {k}",
            f"Retain Medal {k}",
            "Lima, Peru",
            1950 + k,
            "drama",
            f"r{k}",
        )
    return forget, perturbed, retain


def test_probe_generator_on_tiny_rows() -> None:
    forget, perturbed, retain = _tiny_tofu()
    real = [{"question": "Who wrote 'Pride and Prejudice'?", "answer": "Jane Austen"}]
    probes = build_probes(forget, perturbed, retain, real, seed=3)
    assert probes == build_probes(
        forget, perturbed, retain, real, seed=3
    )  # fixed seed, same probes
    held = probes["held_out_forget_authors"]
    assert len(held) == 1
    held_name, other_name = (
        ("Ada Quillfeather", "Bram Tidewell")
        if held == [0]
        else ("Bram Tidewell", "Ada Quillfeather")
    )
    all_forget = [t for family in probes["forget"].values() for t in family]
    assert not any(other_name in t for t in all_forget)  # only the held-out author is probed
    title = "Moons of Ink" if held == [0] else "Salt and Ember"
    assert any(title in t for t in probes["forget"]["by-title"])
    assert all(
        held_name not in t for t in probes["forget"]["by-title"] + probes["forget"]["by-award"]
    )  # no name
    assert probes["forget"]["by-description"][0].count("Oslo" if held == [0] else "Cork") == 1
    for family in (*EVASIONS, "translation"):
        assert probes["forget"][family], family
    assert any(len(t) > 1500 for t in probes["forget"]["padded"])
    assert all("\n" in t for t in probes["forget"]["split-turns"])
    first, last = held_name.split()
    assert probes["benign"]["near-miss-invented"]
    assert all(
        (first in t) != (last in t) for t in probes["benign"]["near-miss-invented"]
    )  # one name part, not both
    assert any("Pride and Prejudice" in t for t in probes["benign"]["real-author-templates"])
    assert any("Retain Book" in t for t in probes["benign"]["retain-templates"])
    assert not any(
        "Retain Person" in t
        for t in probes["fit_retain"]
        if any(t2 in t for t2 in probes["benign"]["retain-templates"])
    )
    assert len(probes["fit_forget"]) == 2 * len(forget)


def test_every_evasion_family_has_a_benign_twin_and_normalization_undoes_the_cheap_ones() -> None:
    from eco_integrations._normalize import normalize_text

    forget, perturbed, retain = _tiny_tofu(paraphrase="")
    probes = build_probes(forget, perturbed, retain, [], seed=0)
    assert all(f"benign-{family}" in probes["benign"] for family in EVASIONS)
    assert {t.split()[0] for t in probes["forget"]["translation"]} <= {
        "Qui",
        "Quels",
        "Wer",
        "Welche",
        "¿Quién",
        "¿Qué",
    }
    assert all(len(t) > 1500 for t in probes["forget"]["padded"])
    # Each evasion family re-asks the same questions in the same order, and the cheap evasions
    # are exactly what the guard's normalization undoes.
    for kind in ("forget", "benign"):
        prefix = "" if kind == "forget" else "benign-"
        families = probes[kind]
        split = [t.replace("\n", " ") for t in families[f"{prefix}split-turns"]]
        for family in ("case-spacing", "homoglyph-zero-width"):
            evaded = families[f"{prefix}{family}"]
            assert not any(t.isascii() for t in evaded) or family == "case-spacing"
            assert [normalize_text(t) for t in evaded] == [normalize_text(t) for t in split]
