"""The zeroth-order strength search on synthetic objectives, and the built-in objectives on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support import neutral_report

from eco_integrations import ECO
from eco_integrations.config import CorruptionConfig, ECOPolicy, GenerationConfig, SelectionConfig
from eco_integrations.exceptions import ConfigurationError, InvalidInputError
from eco_integrations.research.never_learned import NeverLearnedReport, choose_without_leak, gap
from eco_integrations.research.strength import (
    LEAK_PENALTY,
    NeverLearnedObjective,
    chance_curve,
    choose_chance_strength,
    mcq_accuracy_objective,
    never_learned_references,
    never_learned_report,
    plot_chance_curve,
    save_strength,
    similarity_objective,
    with_strength,
    zeroth_order_search,
)
from eco_integrations.research.tofu.metrics import rouge_l_f1


def accuracy_like(strength: float) -> float:
    """Falls from 0.6 to 0.25 as the strength grows past ~1e3 (a smooth step in log10 strength)."""
    return 0.25 + 0.35 / (1.0 + math.exp(2.0 * (math.log10(strength) - 3.0)))


def test_search_reaches_the_target() -> None:
    result = zeroth_order_search(accuracy_like, target=0.27, init=10.0, max_steps=20, tol=0.005)
    assert result.converged
    assert abs(accuracy_like(result.strength) - 0.27) <= 0.005
    assert result.strength > 1e3
    assert len(result.steps) >= 2


def test_search_stays_bounded_and_returns_the_best_point() -> None:
    seen: list[float] = []

    def objective(s: float) -> float:
        seen.append(s)
        return accuracy_like(s)

    result = zeroth_order_search(
        objective,
        target=0.0,
        init=100.0,
        min_strength=1.0,
        max_strength=1e4,
        lr=1000.0,
        max_steps=15,
    )
    assert all(1.0 <= s <= 1e4 * (1 + 1e-9) for s in seen)
    assert not result.converged  # 0.0 is below anything the objective can reach
    assert result.value == min(result.evaluations.values())
    assert result.strength == pytest.approx(1e4)


def test_clipped_lower_point_uses_the_actual_width() -> None:
    """At the lower bound the difference is one-sided: slope = dL / (x_up - x_lo), not / (2 eps)."""
    result = zeroth_order_search(
        lambda s: math.log10(s),
        target=0.0,
        init=1.0,
        min_strength=1.0,
        max_strength=100.0,
        eps=0.5,
        max_steps=1,
    )
    step = result.steps[0]
    assert step.lower == pytest.approx(1.0) and step.upper == pytest.approx(10**0.5)
    assert step.slope == pytest.approx(
        (0.5**2 - 0.0) / 0.5
    )  # a 2*eps denominator would give half of this


def test_flat_objective_stops() -> None:
    result = zeroth_order_search(lambda s: 0.5, target=0.25, init=10.0, max_steps=10)
    assert len(result.steps) == 1
    assert result.value == 0.5


def test_bad_settings() -> None:
    with pytest.raises(ConfigurationError, match="outside"):
        zeroth_order_search(accuracy_like, target=0.25, init=1e9, max_strength=1e7)
    with pytest.raises(ConfigurationError, match="min_strength < max_strength"):
        zeroth_order_search(
            accuracy_like, target=0.25, init=1.0, min_strength=10.0, max_strength=1.0
        )
    with pytest.raises(InvalidInputError, match="finite"):
        zeroth_order_search(lambda s: float("nan"), target=0.25, init=10.0)


def test_rouge_l() -> None:
    assert rouge_l_f1("the golden snitch", "The Golden Snitch") == 1.0
    assert rouge_l_f1("", "x") == 0.0
    assert rouge_l_f1("a b c d", "a x c y") == pytest.approx(0.5)


def _eco(tiny_backend, toy_guard) -> ECO:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="rand_noise_first_n", dims=1, strength=1.0),
        selection=SelectionConfig(name="all"),
    )
    return ECO(tiny_backend, toy_guard, policy=policy)


QUESTIONS = [
    {
        "question": "Who is Harry Potter?",
        "choices": ["a wizard", "a baker", "a king", "a cat"],
        "answer": 0,
        "subject": "bio",
    },
    {
        "question": "What is the capital of France?",
        "choices": ["Rome", "Paris", "Bern", "Oslo"],
        "answer": 1,
        "subject": "chem",
    },
]


def test_mcq_objective_is_deterministic_and_moves_with_strength(tiny_backend, toy_guard) -> None:
    eco = _eco(tiny_backend, toy_guard)
    objective = mcq_accuracy_objective(eco, QUESTIONS * 4, letters="plain")
    first = objective(1.0)
    assert first == objective(1.0)  # per-text seeds: the same strength gives the same noise
    assert 0.0 <= objective(1e6) <= 1.0


def test_similarity_objective_and_saving(tiny_backend, toy_guard, tmp_path: Path) -> None:
    eco = _eco(tiny_backend, toy_guard)
    objective = similarity_objective(eco, ["Who is Harry Potter?"], ["a wizard"], max_new_tokens=4)
    assert 0.0 <= objective(10.0) <= 1.0
    result = zeroth_order_search(objective, target=0.0, init=10.0, max_steps=1)
    toy_guard.save(tmp_path / "g")
    save_strength(tmp_path / "g", eco.policy, result, "test")
    loaded = ECOPolicy.load(tmp_path / "g")
    assert loaded.corruption.strength == result.strength
    assert loaded.selection.name == "all"
    assert (tmp_path / "g" / "strength_search.json").is_file()


def test_chance_curve_is_ascending_and_checked() -> None:
    seen: list[float] = []
    curve = chance_curve(accuracy_like, [1e6, 10, 1e3, 10], on_point=lambda s, v: seen.append(s))
    assert list(curve) == seen == [10.0, 1e3, 1e6]
    assert curve[1e6] == pytest.approx(0.25, abs=1e-3)
    with pytest.raises(ConfigurationError, match="positive finite"):
        chance_curve(accuracy_like, [0.0, 1.0])


def test_chosen_strength_needs_the_whole_tail_at_chance() -> None:
    # 10 dips to chance by luck, 100 is off again: the tail from 1e3 on is what counts.
    curve = {1.0: 0.6, 10.0: 0.26, 100.0: 0.4, 1e3: 0.27, 1e6: 0.24}
    result = choose_chance_strength(curve, target=0.25, tol=0.03)
    assert (result.strength, result.value, result.converged) == (1e3, 0.27, True)
    far = choose_chance_strength({1.0: 0.6, 10.0: 0.4, 100.0: 0.45}, target=0.25, tol=0.03)
    assert (far.strength, far.converged) == (10.0, False)  # closest point, reported as not reached
    with pytest.raises(InvalidInputError, match="empty"):
        choose_chance_strength({}, target=0.25, tol=0.03)


def test_chance_plot_is_written(tmp_path: Path) -> None:
    curve = {1.0: 0.6, 100.0: 0.3, 1e6: 0.25}
    result = choose_chance_strength(curve, target=0.25, tol=0.06)
    out = plot_chance_curve(
        curve, tmp_path / "docs" / "curve.png", plain=0.62, result=result, title="t"
    )
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def _fake_wmdp(root: Path) -> Path:
    """A data folder with WMDP files only: Harry Potter questions the toy guard flags."""
    import json

    folder = root / "data" / "wmdp"
    folder.mkdir(parents=True)
    for subject in ("bio", "chem", "cyber"):
        rows = [
            {
                "question": f"Who is Harry Potter at Hogwarts, case {i}?",
                "choices": ["a wizard", "a baker", "a king", "a cat"],
                "answer": i % 4,
            }
            for i in range(10)
        ]
        (folder / f"wmdp-{subject}.json").write_text(json.dumps(rows))
    return root / "data"


@pytest.mark.parametrize("calibrate_on", ["flagged", "known"])
def test_calibrate_chance_command(
    tiny_model_dir, toy_guard, tmp_path: Path, capsys, monkeypatch, calibrate_on: str
) -> None:
    import json

    from eco_integrations import Guard
    from eco_integrations.cli import main

    data = _fake_wmdp(tmp_path)
    toy_guard.save(tmp_path / "g")
    # Guard.load would bring the default MiniLM; the toy guard's tiny encoder stands in for it.
    monkeypatch.setattr(Guard, "load", classmethod(lambda cls, folder, **kwargs: toy_guard))
    argv = [
        "calibrate",
        "strength",
        "--objective",
        "chance",
        "--guard",
        str(tmp_path / "g"),
        "--model",
        str(tiny_model_dir),
        "--data-dir",
        str(data),
        "--n",
        "6",
        "--strengths",
        "1,1e6",
        "--letters",
        "plain",
        "--tol",
        "0.5",
        "--calibrate-on",
        calibrate_on,
        "--plot",
        str(tmp_path / "curve.png"),
    ]
    code = main(argv)
    out = capsys.readouterr()
    if code != 0:  # the tiny random model may know none of the six: that must be said, not crash
        assert calibrate_on == "known" and "answers none of the" in out.err, out.err
        return
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert (
        summary["n_calibration"] == 6
        and summary["n_flagged"] >= 1
        and summary["calibrate_on"] == calibrate_on
    )
    assert [p["strength"] for p in summary["curve"]] == [1.0, 1e6]
    assert (tmp_path / "curve.png").is_file()
    assert ECOPolicy.load(tmp_path / "g").corruption.strength == summary["strength"]
    if calibrate_on == "known":
        assert summary["plain_accuracy"] == 1.0 and summary["n_curve"] <= summary["n_flagged"]


# -- the never-learned objective ---------------------------------------------------------------


def test_choice_rejects_a_leaking_setting_however_small_its_gap() -> None:
    leaking, clean = neutral_report(leak=0.5, fluency=1.0), neutral_report(leak=0.0, fluency=1.3)
    assert gap(leaking) < gap(clean)
    assert choose_without_leak([("leaks", leaking), ("clean", clean)]) == ("clean", clean)
    assert choose_without_leak([("leaks", leaking)]) is None


NL_PROMPTS = ["Who is Harry Potter?", "Tell me about Hogwarts school."]


def test_never_learned_objective_penalises_a_planted_term(tiny_backend, toy_guard) -> None:
    import re

    eco = _eco(tiny_backend, toy_guard)
    terms = {"Harry Potter": "person", "Hogwarts": "place"}
    reference = never_learned_references(eco, NL_PROMPTS, terms, max_new_tokens=6)
    clean = NeverLearnedObjective(eco, NL_PROMPTS, reference, terms=list(terms), max_new_tokens=6)
    value = clean(10.0)
    assert clean.reports[10.0].leak == 0 and value == pytest.approx(gap(clean.reports[10.0]))
    # Plant a word the corrupted model says (and the question does not) among the target's terms.
    engine = with_strength(eco, 10.0)
    answer = engine.generate(
        NL_PROMPTS[:1],
        config=GenerationConfig(max_new_tokens=6),
        decisions=engine.forced_decisions([engine.classified_text(NL_PROMPTS[0])]),
    )[0].text
    words = [
        w for w in re.findall(r"[A-Za-z]{2,}", answer) if w.lower() not in NL_PROMPTS[0].lower()
    ]
    assert words, f"the tiny model's answer {answer!r} holds no word to plant"
    planted = NeverLearnedObjective(
        eco, NL_PROMPTS, reference, terms=[*terms, words[0]], max_new_tokens=6
    )
    penalised = planted(10.0)
    report = planted.reports[10.0]
    # The first answer names the planted word (the second may too).
    assert report.leak >= 0.5 and report.leaks[0].index == 0
    assert report.leaks[0].terms == [words[0].lower()]
    assert penalised == pytest.approx(gap(report) + LEAK_PENALTY * report.leak)
    assert penalised > value
    assert choose_without_leak([(s, r) for s, r in planted.reports.items()]) is None


def test_never_learned_report_scores_one_setting_as_the_objective_does(
    tiny_backend, toy_guard
) -> None:
    """The grid scorer a notebook uses gives the objective's report for the same setting."""
    eco = _eco(tiny_backend, toy_guard)
    terms = {"Harry Potter": "person", "Hogwarts": "place"}
    reference = never_learned_references(eco, NL_PROMPTS, terms, max_new_tokens=6)
    objective = NeverLearnedObjective(
        eco, NL_PROMPTS, reference, terms=list(terms), max_new_tokens=6
    )
    objective(10.0)
    report = never_learned_report(
        with_strength(eco, 10.0), NL_PROMPTS, reference, terms=list(terms), max_new_tokens=6
    )
    assert report == objective.reports[10.0]
    weaker = never_learned_report(
        with_strength(eco, 0.01), NL_PROMPTS, reference, terms=list(terms), max_new_tokens=6
    )
    assert weaker.eco_nll != report.eco_nll  # the setting is the engine's, not a fixed one
    with pytest.raises(InvalidInputError, match="1 prompts for 2 references"):
        never_learned_report(eco, NL_PROMPTS[:1], reference, terms=list(terms))


def test_never_learned_objective_corrupts_the_flagging_targets_terms(
    tiny_backend, toy_guard
) -> None:
    """entities corrupts only the guard target's terms, content every content token: the answers
    (and so the figures) differ. A forced decision, naming no target, would make them equal."""
    eco = _eco(tiny_backend, toy_guard)
    terms = {"Harry Potter": "person", "Hogwarts": "place"}
    reference = never_learned_references(eco, NL_PROMPTS, terms, max_new_tokens=6)
    nll = {}
    for selector in ("entities", "content"):
        policy = eco.policy.model_copy(update={"selection": SelectionConfig(name=selector)})
        objective = NeverLearnedObjective(
            eco.replace(policy=policy), NL_PROMPTS, reference, terms=list(terms), max_new_tokens=6
        )
        objective(10.0)
        nll[selector] = objective.reports[10.0].eco_nll
    assert nll["entities"] != nll["content"]
    with pytest.raises(InvalidInputError, match="does not flag"):
        NeverLearnedObjective(
            eco,
            ["How do I bake bread?", NL_PROMPTS[0]],
            reference,
            terms=list(terms),
            max_new_tokens=6,
        )(10.0)


def _strength_argv(tmp_path: Path, tiny_model_dir: Path, *extra: str) -> list[str]:
    import json

    refs = tmp_path / "forget.jsonl"
    rows = [{"question": q} for q in [*NL_PROMPTS, "Who is Hermione Granger?"]]
    refs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [
        "calibrate",
        "strength",
        "--objective",
        "never-learned",
        "--guard",
        str(tmp_path / "g"),
        "--model",
        str(tiny_model_dir),
        "--references",
        str(refs),
        "--max-new-tokens",
        "4",
        "--max-steps",
        "1",
        "--init",
        "1",
        *extra,
    ]


def test_never_learned_command_saves_the_chosen_selector(
    tiny_model_dir, toy_guard, tmp_path: Path, capsys, monkeypatch
) -> None:
    import json

    from eco_integrations import Guard
    from eco_integrations.cli import main

    toy_guard.save(tmp_path / "g")
    monkeypatch.setattr(Guard, "load", classmethod(lambda cls, folder, **kwargs: toy_guard))
    argv = _strength_argv(
        tmp_path,
        tiny_model_dir,
        "--selectors",
        "first_n",
        "all",
        "--first-n",
        "2",
        "--corruptions",
        "rand_noise_full",
    )
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out.strip().splitlines()[-1])
    for key in ("strength", "value", "gap", "target", "converged", "objective", "corruption"):
        assert key in summary
    assert summary["selector"] in {"first_n", "all"} and summary["leak"] == 0
    assert {"fluency", "on_topic", "distinguishable"} <= set(summary)
    saved = ECOPolicy.load(tmp_path / "g")
    assert saved.selection.name == summary["selector"]
    assert saved.selection.n == (2 if summary["selector"] == "first_n" else None)
    assert saved.corruption.name == "rand_noise_full" == summary["corruption"]
    assert saved.corruption.strength == summary["strength"]
    assert "[1/2] first_n x rand_noise_full" in out.err and "[2/2] all x" in out.err


def test_a_flagged_prompt_naming_no_term_is_left_out_of_the_measure(
    tiny_model_dir, toy_guard, tmp_path: Path, capsys, monkeypatch
) -> None:
    import json

    from eco_integrations import Guard
    from eco_integrations.cli import main

    toy_guard.save(tmp_path / "g")
    monkeypatch.setattr(Guard, "load", classmethod(lambda cls, folder, **kwargs: toy_guard))
    argv = _strength_argv(tmp_path, tiny_model_dir, "--selectors", "all", "--dry-run")
    nameless = "What spell did he learn?"  # the toy guard flags it; it names no guard term
    assert toy_guard.decide_many([nameless])[0].flagged
    with (tmp_path / "forget.jsonl").open("a") as refs:
        refs.write(json.dumps({"question": nameless}) + "\n")
    assert main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "1 flagged prompt(s) name no guard term and are left out" in err and nameless in err


def test_bad_selector_or_corruption_names_the_choices(
    tiny_model_dir, toy_guard, tmp_path: Path, capsys, monkeypatch
) -> None:
    from eco_integrations import Guard
    from eco_integrations.cli import main

    toy_guard.save(tmp_path / "g")
    monkeypatch.setattr(Guard, "load", classmethod(lambda cls, folder, **kwargs: toy_guard))
    assert main(_strength_argv(tmp_path, tiny_model_dir, "--selectors", "entity", "all")) == 2
    err = capsys.readouterr().err
    assert "Unknown token selector(s) 'entity'" in err
    assert "choose from: content, all, entities, first_n" in err
    assert main(_strength_argv(tmp_path, tiny_model_dir, "--corruptions", "zero_out_top_k")) == 2
    assert "has no strength to search" in capsys.readouterr().err
    argv = _strength_argv(tmp_path, tiny_model_dir, "--selectors", "all")
    argv[argv.index("never-learned")] = "similarity"
    assert main(argv) == 2
    assert "--selectors: not read by --objective similarity (only by never-learned)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strengths", "1,10"], "--strengths: not read by --objective never-learned"),
        (["--data-dir", "d", "--letters", "plain"], "--data-dir, --letters: not read by"),
        (["--n", "0"], "--n must be >= 1"),
        (["--min-strength", "10", "--max-strength", "1"], "must be below --max-strength"),
        (["--eps", "0"], "--eps must be a finite number > 0"),
        (["--eps", "inf"], "--eps must be a finite number > 0"),
        (["--tol", "nan"], "--tol must be >= 0"),
        (["--encoder", "all-mpnet-base-v2"], "--encoder: not read by --objective never-learned"),
        (["--dims", "0"], "--dims must be >= 1"),
        (["--target", "nan"], "--target must be a finite number"),
        (["--seed", "-1"], None),  # argparse's usage error
    ],
)
def test_an_option_the_objective_ignores_or_a_bad_value_is_refused_before_any_work(
    tmp_path: Path, capsys, extra: list[str], message: str | None
) -> None:
    from eco_integrations.cli import main

    # No guard folder and no model exist here: the check comes before either is touched.
    argv = _strength_argv(tmp_path, tmp_path / "no-model", *extra)
    if message is None:
        with pytest.raises(SystemExit):
            main(argv)
        assert "must be >= 0" in capsys.readouterr().err
        return
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_cli_search_keeps_a_share_strength_at_most_one(capsys) -> None:
    import argparse

    from eco_integrations.research.strength import _search_from_cli

    args = argparse.Namespace(
        init=2.0, eps=0.25, lr=20.0, min_strength=1e-2, max_strength=1e7, max_steps=3, tol=0.0
    )
    seen: list[float] = []

    def objective(strength: float) -> float:
        seen.append(strength)
        return strength  # drives the search upward, against the cap

    result = _search_from_cli(args, objective, 5.0, "substitute_tokens")
    assert seen and max(seen) <= 1.0 and result.strength <= 1.0
    assert "at most 1" in capsys.readouterr().err
    seen.clear()
    _search_from_cli(args, objective, 5.0, "rand_noise_full")  # a scale: no cap
    assert max(seen) > 1.0


def test_references_file_errors_name_the_file_and_row(tmp_path: Path) -> None:
    from eco_integrations.research.strength import _reference_rows

    good = tmp_path / "refs.jsonl"
    good.write_text('{"question": "Q?", "answer": "A."}\n\n{"question": "R?", "answer": "B."}\n')
    assert [r["question"] for r in _reference_rows(str(good), ("question", "answer"))] == [
        "Q?",
        "R?",
    ]
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"question": "Q?"}\n')
    assert _reference_rows(str(no_answer), ("question",)) == [{"question": "Q?"}]
    with pytest.raises(
        InvalidInputError, match=r"Row 1 of .*no_answer\.jsonl needs 'question' and 'answer'"
    ):
        _reference_rows(str(no_answer), ("question", "answer"))
    text = tmp_path / "plain.txt"
    text.write_text("Who is Harry Potter?\n")
    with pytest.raises(InvalidInputError, match=r"plain\.txt:1 is not valid JSON"):
        _reference_rows(str(text), ("question",))
    with pytest.raises(InvalidInputError, match="does not exist"):
        _reference_rows(str(tmp_path / "missing.jsonl"), ("question",))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InvalidInputError, match="holds no rows"):
        _reference_rows(str(tmp_path / "empty.jsonl"), ("question",))


def _callable_calibration(
    tmp_path: Path, tiny_model_dir: Path, toy_guard, monkeypatch, scored
) -> list[str]:
    """``eco calibrate strength --objective callable`` over ``scored``, on the toy guard."""
    import sys
    import types

    from eco_integrations import Guard

    module = types.ModuleType("calibration_objective")
    module.scored = scored  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "calibration_objective", module)
    toy_guard.save(tmp_path / "g")
    monkeypatch.setattr(Guard, "load", classmethod(lambda cls, folder, **kwargs: toy_guard))
    argv = ["calibrate", "strength", "--objective", "callable"]
    argv += ["--callable", "calibration_objective:scored", "--target", "0.2"]
    return [
        *argv,
        "--guard",
        str(tmp_path / "g"),
        "--model",
        str(tiny_model_dir),
        "--max-steps",
        "3",
    ]


def test_an_interrupted_calibration_resumes_from_the_strengths_it_scored(
    tiny_model_dir, toy_guard, tmp_path: Path, capsys, monkeypatch
) -> None:
    import json

    from eco_integrations.cli import main

    calls: list[float] = []

    def scored(eco: object, strength: float) -> float:
        if len(calls) == 3 and not hasattr(scored, "resumed"):
            raise KeyboardInterrupt  # the first run is stopped after three strengths
        calls.append(strength)
        return 1.0 / (1.0 + strength)

    argv = _callable_calibration(tmp_path, tiny_model_dir, toy_guard, monkeypatch, scored)
    assert main(argv) == 130  # interrupted: one line, not a traceback
    first = list(calls)
    scored.resumed = True  # type: ignore[attr-defined]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The three strengths scored before the interrupt were read back, not scored again.
    assert calls[:3] == first and not set(calls[3:]) & set(first)
    assert summary["saved"] and (tmp_path / "g" / "strength_points.jsonl").is_file()


def test_a_resumed_calibration_with_another_batch_size_scores_again(
    tiny_model_dir, toy_guard, tmp_path: Path, monkeypatch
) -> None:

    from eco_integrations.cli import main

    calls: list[float] = []

    def scored(eco: object, strength: float) -> float:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(strength)
        return 1.0 / (1.0 + strength)

    argv = _callable_calibration(tmp_path, tiny_model_dir, toy_guard, monkeypatch, scored)
    assert main(argv) == 130
    first = list(calls)
    calls.clear()
    # Another batch size pads prompts otherwise, which can tip greedy answers: nothing is read
    # back (the same command with the same batch size reads them, as the test above shows).
    assert main([*argv, "--batch-size", "3"]) == 130
    assert calls == first


def test_an_interrupted_chance_grid_resumes_from_the_strengths_it_scored(
    tiny_model_dir, toy_guard, tmp_path: Path, capsys, monkeypatch
) -> None:
    from eco_integrations import Guard
    from eco_integrations.cli import main
    from eco_integrations.research import strength as strength_module

    data = _fake_wmdp(tmp_path)
    toy_guard.save(tmp_path / "g")
    monkeypatch.setattr(Guard, "load", classmethod(lambda cls, folder, **kwargs: toy_guard))
    scored: list[float] = []
    stop_after: list[int] = [2]
    real = strength_module.mcq_accuracy_objective

    def counting(*args: object, **kwargs: object):
        objective = real(*args, **kwargs)  # type: ignore[arg-type]

        def counted(strength: float) -> float:
            if len(scored) == stop_after[0]:
                raise KeyboardInterrupt
            scored.append(strength)
            return objective(strength)

        return counted

    monkeypatch.setattr(strength_module, "mcq_accuracy_objective", counting)
    argv = ["calibrate", "strength", "--objective", "chance", "--guard", str(tmp_path / "g")]
    argv += ["--model", str(tiny_model_dir), "--data-dir", str(data), "--n", "6"]
    argv += ["--strengths", "1,10,1e6", "--letters", "plain", "--calibrate-on", "flagged"]
    argv += ["--plot", str(tmp_path / "curve.png")]
    assert main(argv) == 130  # interrupted: one line, not a traceback
    assert scored == [1.0, 10.0]
    stop_after[0] = -1
    assert main(argv) == 0, capsys.readouterr().err
    # Only the strength the first run never reached was scored again.
    assert scored == [1.0, 10.0, 1e6]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["strength"] for p in summary["curve"]] == [1.0, 10.0, 1e6]


def test_an_interrupted_never_learned_search_resumes_with_its_references(
    tiny_model_dir, toy_guard, tmp_path: Path, capsys, monkeypatch
) -> None:
    from eco_integrations import Guard
    from eco_integrations.cli import main
    from eco_integrations.research import strength as strength_module

    toy_guard.save(tmp_path / "g")
    monkeypatch.setattr(Guard, "load", classmethod(lambda cls, folder, **kwargs: toy_guard))
    references: list[int] = []
    reports: list[float] = []
    stop_after: list[int] = [2]
    real_references = strength_module.never_learned_references
    real_report = strength_module.never_learned_report

    def counted_references(*args: object, **kwargs: object):
        references.append(1)
        return real_references(*args, **kwargs)  # type: ignore[arg-type]

    def counted_report(eco: ECO, *args: object, **kwargs: object):
        if len(reports) == stop_after[0]:
            raise KeyboardInterrupt
        reports.append(float(eco.policy.corruption.strength or 0.0))
        return real_report(eco, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(strength_module, "never_learned_references", counted_references)
    monkeypatch.setattr(strength_module, "never_learned_report", counted_report)
    argv = _strength_argv(tmp_path, tiny_model_dir, "--selectors", "all", "content")
    assert main(argv) == 130  # interrupted: one line, not a traceback
    first = list(reports)
    assert len(first) == 2 and references == [1]
    stop_after[0] = -1
    assert main(argv) == 0, capsys.readouterr().err
    # The references and the two scored settings were read back, not computed again.
    assert references == [1] and reports[:2] == first and len(reports) > 2
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["selector"] in {"all", "content"}
    # A fresh run (another folder) agrees with the resumed one.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    toy_guard.save(fresh / "g")
    stop_after[0] = -1
    assert main(_strength_argv(fresh, tiny_model_dir, "--selectors", "all", "content")) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["selector"], again["strength"], again["value"]) == (
        summary["selector"],
        summary["strength"],
        summary["value"],
    )


def test_a_guard_path_that_is_a_file_is_named_before_any_work(tmp_path: Path, capsys) -> None:
    from eco_integrations.cli import main

    afile = tmp_path / "guard.txt"
    afile.write_text("not a folder")
    argv = ["calibrate", "strength", "--objective", "chance", "--guard", str(afile)]
    assert main([*argv, "--data-dir", str(tmp_path)]) == 2
    assert "is a file; pass a guard folder" in capsys.readouterr().err


def _never_learned_args(*argv: str):
    import argparse

    from eco_integrations.research.strength import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--objective", "never-learned", "--guard", "g", *argv])


def test_the_search_space_keeps_the_folders_first_n_and_caps_a_share() -> None:
    from eco_integrations.research.strength import _search_space

    folder = ECOPolicy(
        selection=SelectionConfig(name="first_n", n=8),
        corruption=CorruptionConfig(name="rand_noise_full", strength=1.0),
    )
    (policy,) = _search_space(_never_learned_args(), folder)
    assert policy.selection.n == 8  # was rewritten to 4, and saved so
    (policy,) = _search_space(_never_learned_args("--first-n", "3"), folder)
    assert policy.selection.n == 3
    with pytest.raises(InvalidInputError, match="--first-n is read only with the first_n selector"):
        _search_space(_never_learned_args("--selectors", "all", "--first-n", "3"), folder)
    # substitute_tokens takes a share; the default --init (100, a noise scale) failed here.
    share = folder.model_copy(
        update={"corruption": CorruptionConfig(name="substitute_tokens", strength=0.5)}
    )
    (policy,) = _search_space(_never_learned_args(), share)
    assert policy.corruption.strength == 1.0


def test_a_search_that_only_saw_leaks_tries_stronger_strengths(capsys) -> None:
    from types import SimpleNamespace

    from eco_integrations.research.strength import SearchResult, _climb_out_of_leaks

    class Objective:
        """Leaks 1 prompt in 30 below strength 300, nothing above it: the flat leak rate gave
        the search no slope, and it walked toward weaker corruption."""

        def __init__(self) -> None:
            self.reports: dict[float, NeverLearnedReport] = {}

        def __call__(self, strength: float) -> float:
            leak = 0.0 if strength >= 300 else 1 / 30
            self.reports[strength] = neutral_report(leak=leak, fluency=1.25)
            return 0.25 + 10 * leak

    objective = Objective()
    for strength in (0.01, 1.0, 100.0, 177.8):
        objective(strength)
    searched = SearchResult(0.01, 0.58, 0.58, 0.0, False, [], {0.01: 0.58})
    args = SimpleNamespace(init=100.0, max_strength=1e7)
    result = _climb_out_of_leaks(args, objective, objective, searched, "rand_noise_full")  # type: ignore[arg-type]
    assert max(objective.reports) == pytest.approx(1778.0)  # one decade up, and clean
    assert max(result.evaluations) == pytest.approx(1778.0)
    picked = choose_without_leak(list(objective.reports.items()))
    assert picked is not None and picked[1].leak == 0
    assert "every strength searched leaks; trying 1778" in capsys.readouterr().err
    # A share stops at its cap.
    share = Objective()
    share(0.5)
    _climb_out_of_leaks(args, share, share, searched, "substitute_tokens")  # type: ignore[arg-type]
    assert max(share.reports) == 1.0
