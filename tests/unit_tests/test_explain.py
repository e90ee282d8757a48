"""ECO.explain and `eco guard explain`: the marked tokens are the ones generation corrupts."""

from __future__ import annotations

import json

import pytest
import torch

from eco_integrations import (
    ECO,
    ECOPolicy,
    Explanation,
    GenerationConfig,
    Guard,
    InvalidInputError,
    SelectionConfig,
)
from eco_integrations.cli import main

FORGET_PROMPT = "Tell me about Hermione Granger and Hogwarts."
BENIGN_PROMPT = "How do I bake bread?"
SELECTIONS = [
    SelectionConfig(name="content"),
    SelectionConfig(name="all"),
    SelectionConfig(name="entities"),
    SelectionConfig(name="entities", terms=("bread",)),
    SelectionConfig(name="first_n", n=2),
]


def _corrupted_positions(eco: ECO, prompt: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Positions whose embeddings the engine changed, read from the rows generate() builds."""
    rows = []
    original = eco.backend.generate

    def spy(batch, config, **kwargs):
        rows.extend(batch)
        return original(batch, config, **kwargs)

    monkeypatch.setattr(eco.backend, "generate", spy)
    eco.generate([prompt], config=GenerationConfig(max_new_tokens=1))
    (row,) = rows
    if row.embeds is None:
        return []
    plain = eco.backend.embed(row.input_ids)
    changed = (row.embeds != plain).reshape(len(row.input_ids), -1).any(dim=1)
    return torch.nonzero(changed).flatten().tolist()


@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: f"{s.name}{s.n or ''}{s.terms}")
def test_marked_tokens_are_the_corrupted_ones(
    tiny_backend, toy_guard, selection, monkeypatch
) -> None:
    eco = ECO(tiny_backend, toy_guard, policy=ECOPolicy(selection=selection))
    explanation = eco.explain(FORGET_PROMPT)
    assert explanation.decision.flagged and explanation.decision.corrupted
    marked = [t.index for t in explanation.corrupted_tokens]
    assert marked, "a flagged prompt has corrupted tokens under every selector"
    assert marked == _corrupted_positions(eco, FORGET_PROMPT, monkeypatch)


def test_selection_argument_matches_a_policy_with_that_selector(tiny_backend, toy_guard) -> None:
    eco = ECO(tiny_backend, toy_guard)  # the default policy's selector
    for selection in SELECTIONS:
        other = ECO(tiny_backend, toy_guard, policy=ECOPolicy(selection=selection))
        assert eco.explain(FORGET_PROMPT, selection=selection).tokens == (
            other.explain(FORGET_PROMPT).tokens
        )


def test_entities_marks_the_target_terms_and_lists_them(tiny_backend, toy_guard) -> None:
    eco = ECO(tiny_backend, toy_guard)
    explanation = eco.explain(FORGET_PROMPT, selection=SelectionConfig(name="entities"))
    picked = "".join(t.text for t in explanation.corrupted_tokens)
    assert "Hermione" in picked and "Hogwarts" in picked and "Tell" not in picked
    assert "Hogwarts" in explanation.terms
    assert explanation.terms == tuple(toy_guard.terms["harry-potter"])
    marked = explanation.marked_text()
    assert "[[" in marked and "Tell me about" in marked
    assert marked.replace("[[", "").replace("]]", "") == explanation.request.prompt.text
    # Other selectors search no terms.
    assert eco.explain(FORGET_PROMPT, selection=SelectionConfig(name="content")).terms == ()


def test_unflagged_prompt_marks_none(tiny_backend, toy_guard, monkeypatch) -> None:
    eco = ECO(tiny_backend, toy_guard, policy=ECOPolicy(selection=SelectionConfig(name="all")))
    explanation = eco.explain(BENIGN_PROMPT)
    assert not explanation.decision.flagged
    assert explanation.corrupted_tokens == [] and explanation.terms == ()
    assert explanation.marked_text() == explanation.request.prompt.text
    assert _corrupted_positions(eco, BENIGN_PROMPT, monkeypatch) == []


def test_shadow_mode_flags_but_marks_none(tiny_backend, toy_guard) -> None:
    explanation = ECO(tiny_backend, toy_guard, mode="shadow").explain(FORGET_PROMPT)
    assert explanation.decision.flagged and not explanation.decision.corrupted
    assert explanation.corrupted_tokens == []


def test_prepared_request_is_explained_as_prepared(tiny_backend, toy_guard) -> None:
    eco = ECO(tiny_backend, toy_guard)
    request = eco.prepare(FORGET_PROMPT)
    assert isinstance(eco.explain(request), Explanation)
    assert eco.explain(request).tokens == eco.explain(FORGET_PROMPT).tokens
    with pytest.raises(InvalidInputError, match="already carries its settings"):
        eco.explain(request, mode="off")


@pytest.mark.parametrize(
    ("prompt", "kwargs", "message"),
    [
        ("", {}, "prompt is empty"),
        (42, {}, "pass a string or a list of chat messages"),
        ("Who?", {"selection": "entities"}, "must be a SelectionConfig"),
        ([{"role": "user", "content": "hi"}], {"raw": True}, "raw=True takes a prompt string"),
    ],
)
def test_bad_input_errors_clearly(tiny_backend, toy_guard, prompt, kwargs, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ECO(tiny_backend, toy_guard).explain(prompt, **kwargs)


# -- the command ---------------------------------------------------------------------------------
@pytest.fixture
def guard_folder(tmp_path, toy_guard):
    folder = tmp_path / "guard"
    toy_guard.save(folder)
    ECOPolicy(selection=SelectionConfig(name="entities")).save(folder)
    return folder


def _explain(capsys, folder, model_dir, encoder_dir, *extra: str) -> tuple[int, str, str]:
    argv = ["guard", "explain", "--guard", str(folder), "--model", str(model_dir)]
    code = main([*argv, "--encoder", str(encoder_dir), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_command_marks_what_the_engine_corrupts(
    capsys, guard_folder, tiny_model_dir, tiny_encoder_dir, tiny_backend, toy_guard
) -> None:
    code, out, _ = _explain(capsys, guard_folder, tiny_model_dir, tiny_encoder_dir, FORGET_PROMPT)
    assert code == 0
    *text, last = out.strip().splitlines()
    printed = json.loads(last)
    assert printed["selector"] == "entities"  # the folder's policy.json
    assert printed["decision"]["flagged"] and printed["decision"]["target"] == "harry-potter"
    assert "Hogwarts" in printed["terms"]
    expected = ECO(
        tiny_backend, toy_guard, policy=ECOPolicy(selection=SelectionConfig(name="entities"))
    ).explain(FORGET_PROMPT)
    assert [
        (t["index"], t["token"], t["start"], t["end"]) for t in printed["corrupted_tokens"]
    ] == [(t.index, t.text, t.start, t.end) for t in expected.corrupted_tokens]
    shown = "\n".join(text)
    assert "flagged=True" in shown and "terms (" in shown and "Hogwarts" in shown
    # The toy guard has no knowledge part: its classifier alone flagged the prompt.
    assert printed["knowledge_match"] is None and "knowledge match: none" in shown
    parts = printed["score_parts"]
    assert parts["target"] == "harry-potter" and parts["learned"] == parts["score"]
    assert parts["score"] == pytest.approx(printed["decision"]["score"], abs=1e-9)
    assert parts == expected.score_parts.model_dump()
    assert f"learned score of target harry-potter: {parts['learned']:.4f}" in shown
    assert f"sum {sum(parts['log_odds'].values()):+.2f}" in shown
    assert expected.marked_text() in shown


def test_command_selector_option_and_benign_prompt(
    capsys, guard_folder, tiny_model_dir, tiny_encoder_dir
) -> None:
    args = (FORGET_PROMPT, "--selector", "first_n", "--n", "3", "--json")
    code, out, _ = _explain(capsys, guard_folder, tiny_model_dir, tiny_encoder_dir, *args)
    (line,) = out.strip().splitlines()  # --json: the JSON line alone
    printed = json.loads(line)
    assert code == 0 and printed["selector"] == "first_n" and printed["terms"] == []
    assert len(printed["corrupted_tokens"]) == 3
    args = (BENIGN_PROMPT, "--json")
    code, out, _ = _explain(capsys, guard_folder, tiny_model_dir, tiny_encoder_dir, *args)
    printed = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and not printed["decision"]["flagged"]
    assert printed["corrupted_tokens"] == [] and printed["terms"] == []
    assert printed["knowledge_match"] is None
    # Unflagged: the parts of the score the decision compared with the threshold.
    assert printed["score_parts"]["score"] == pytest.approx(printed["decision"]["score"], abs=1e-9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Who?", "--selector", "first_n"), "first_n selector needs n >= 1"),
        (("Who?", "--selector", "content", "--n", "2"), "n is only read by the first_n"),
        (("   ",), "prompt is empty"),
    ],
)
def test_command_bad_input(
    capsys, guard_folder, tiny_model_dir, tiny_encoder_dir, args, message
) -> None:
    code, _, err = _explain(capsys, guard_folder, tiny_model_dir, tiny_encoder_dir, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_command_needs_a_guard_folder(capsys, tmp_path) -> None:
    assert main(["guard", "explain", "Who?", "--guard", str(tmp_path)]) == 2
    assert "not a guard folder" in capsys.readouterr().err


def test_command_names_the_namesake_that_kept_a_prompt_unflagged(
    capsys, tmp_path, tiny_model_dir, tiny_encoder_dir, tiny_encoder
) -> None:
    from toy_data import TOY_FORGET, TOY_RETAIN

    guard = Guard(tiny_encoder)
    forget = [*TOY_FORGET, "Harry Potter was born in Godric's Hollow.", "Harry Potter flew."]
    guard.add_target("hp", forget, TOY_RETAIN, cv=2, target_fpr=0.2, knowledge=True)
    folder = guard.save(tmp_path / "guard")
    code, out, _ = _explain(
        capsys, folder, tiny_model_dir, tiny_encoder_dir, "Who is Harry Styles?"
    )
    *text, last = out.strip().splitlines()
    assert code == 0 and not json.loads(last)["decision"]["flagged"]
    assert 'knowledge match: namesake "styles" beside "harry potter"' in "\n".join(text)
    parts = json.loads(last)["score_parts"]  # the namesake cap, beside the learned score it capped
    assert parts["score"] == 0.0 < parts["learned"]
    assert "the knowledge rules made it 0.0000" in "\n".join(text)


def test_entities_marks_a_misspelt_term_as_generation_corrupts_it(
    tiny_backend, toy_guard, monkeypatch
) -> None:
    prompt = "Tell me about Hermoine Granger at Hogwarts."
    eco = ECO(tiny_backend, toy_guard, policy=ECOPolicy(selection=SelectionConfig(name="entities")))
    explanation = eco.explain(prompt)
    assert explanation.decision.flagged
    picked = "".join(t.text for t in explanation.corrupted_tokens)
    assert "Hermoine" in picked and "Hogwarts" in picked and "Tell" not in picked
    marked = [t.index for t in explanation.corrupted_tokens]
    assert marked == _corrupted_positions(eco, prompt, monkeypatch)
