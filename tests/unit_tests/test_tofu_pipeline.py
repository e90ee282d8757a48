"""`eco eval tofu` end to end on the tiny random Llama and a handful of TOFU-shaped rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from tofu_rows import write_tofu

from eco_integrations.exceptions import ConfigurationError
from eco_integrations.research.finetune import FinetuneConfig
from eco_integrations.research.tofu import pipeline
from eco_integrations.research.tofu.data import load_setting
from eco_integrations.research.tofu.pipeline import (
    METHODS,
    TofuOptions,
    forget_halves,
    headline,
    precompute,
    run_tofu,
    search_code_version,
)
from eco_integrations.research.tofu.report import main as report_main
from eco_integrations.research.tofu.report import ratio_shape


@pytest.fixture
def tofu_dir(tmp_path):
    return write_tofu(tmp_path / "data")


def test_setting_draws_whole_retain_authors_covered_by_retain_perturbed(tofu_dir) -> None:
    setting = load_setting("forget01", tofu_dir, n_retain_authors=2, seed=0)
    assert len(setting.retain_authors) == 2 and set(setting.retain_authors) <= {0, 1, 2}
    assert (
        len(setting.retain_train) == 40
        and len(setting.original_rows) == 80
        and len(setting.retained_rows) == 40
    )
    trained = {r["question"] for r in setting.retain_train}
    assert {r["question"] for r in setting.retain_eval} <= trained
    assert not trained & {r["question"] for r in setting.forget}
    assert (
        load_setting("forget01", tofu_dir, n_retain_authors=2, seed=0).retain_authors
        == setting.retain_authors
    )
    with pytest.raises(ConfigurationError, match="retain-authors"):
        load_setting("forget01", tofu_dir, n_retain_authors=4)


def test_prompt_baseline_names_the_forget_authors(tofu_dir) -> None:
    from eco_integrations.research.tofu.pipeline import baseline_system_prompt

    text = baseline_system_prompt(load_setting("forget01", tofu_dir, n_retain_authors=2))
    assert "Basil Quorn" in text and "Nadia Velt" in text and "Omar Pike" not in text


def test_forget_halves_are_disjoint_and_cover() -> None:
    cal, ev = forget_halves(40, 0)
    assert (
        len(cal) == 20
        and len(ev) == 20
        and not set(cal) & set(ev)
        and set(cal) | set(ev) == set(range(40))
    )


def test_run_tofu_end_to_end(
    tofu_dir, tiny_model_dir, tiny_encoder, tmp_path, monkeypatch, capsys
) -> None:
    options = TofuOptions(
        split="forget01",
        data_dir=tofu_dir,
        model=tiny_model_dir,
        finetune_out=tmp_path / "ft",
        retain_authors=2,
        retain_eval_n=4,
        general_n=3,
        max_new_tokens=4,
        search_steps=1,
        batch_size=16,
        guard_cv=2,
        target_fpr=0.1,
        encoder=tiny_encoder,
        finetune=FinetuneConfig(
            epochs=1, learning_rate=1e-3, batch_size=16, max_length=96, system_prompt=""
        ),
    )
    out = tmp_path / "out"
    precompute(options, out, "retained")  # what a second process would do ahead of the main run
    assert len(list((out / "cache").glob("retained-*.json"))) == 1
    summary = run_tofu(options, out)
    line = headline(summary)
    assert list(line) == list(METHODS)
    for values in line.values():
        assert set(values) >= {"forget_quality", "model_utility", "forget_rouge", "retain_rouge"}
        assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in values.values())
    assert line["retained"]["forget_quality"] == pytest.approx(1.0)
    for name in (
        "table.md",
        "results.json",
        "records.jsonl",
        "strength_search.json",
        "truth_ratio_histograms.png",
        "forget_quality_vs_utility.png",
    ):
        assert (out / name).is_file(), name
    search = json.loads((out / "strength_search.json").read_text())
    assert len(search["evaluations"]) >= 2 and len(search["calibration_rows"]) == 20
    # The default search is over the noise strength and minimises the log-ratio distance; the
    # log keeps every criterion of every setting scored.
    assert (
        search["parameter"] == "strength"
        and search["corruption"] == "rand_noise_full"
        and search["target"] == 0.0
    )
    by_setting = search["forget_quality_by_setting"]
    assert len(by_setting) == len(search["evaluations"])
    for entry, evaluation in zip(by_setting, search["evaluations"], strict=True):
        assert evaluation["value"] == pytest.approx(entry["distance"])
        assert entry["both"] == pytest.approx(min(entry["folded"], entry["unfolded"]))
    assert search["value"] == pytest.approx(min(e["distance"] for e in by_setting))
    assert summary["n_forget_eval"] == 20 and summary["finetune"]["original"]["steps"] == 5
    # The retained run is named without the split, so another split with this retain subset reuses it.
    assert Path(summary["finetune"]["retained"]["folder"]).name.startswith("tofu-retained-")
    assert (
        json.loads((out / "guard" / "manifest.json").read_text())["targets"][0]["n_retain"]
        == 80 + 12
    )  # TOFU retain + MMLU val
    # A rerun reuses the fine-tunes, the guard and the search log, and gives the same figures.
    again = run_tofu(options, out)
    assert headline(again) == line and again["finetune"]["original"]["cached"]
    assert json.loads((out / "strength_search.json").read_text()) == search
    # The log names the code that searched; other code searches again rather than reuse it.
    assert search["code_version"] == search_code_version()
    monkeypatch.setattr(pipeline, "search_code_version", lambda: "0" * 16)
    run_tofu(options, out)
    searched_again = json.loads((out / "strength_search.json").read_text())
    assert searched_again["code_version"] == "0" * 16 and searched_again["key"] != search["key"]
    # Damaged caches are redone, not fatal: a truncated search log, a guard that fails its check.
    (out / "strength_search.json").write_text('{"key": "ab')
    (out / "guard" / "manifest.json").write_text("{}")
    redone = run_tofu(options, out)
    assert headline(redone)["retained"] == line["retained"]
    assert json.loads((out / "strength_search.json").read_text())["key"] == searched_again["key"]
    assert json.loads((out / "guard" / "manifest.json").read_text())["targets"]
    table = (out / "table.md").read_text()
    assert all(f"| {m} |" in table for m in METHODS)
    assert "| retained | " in table.split("folded ratio >= 0.9")[1]
    answers = table.split("Answers to the forget evaluation half:")[1]
    assert all(f"| {m} |" in answers for m in METHODS)
    assert "the question's names left out" in answers
    # The report is written again from the run's folder alone, the same.
    (out / "table.md").unlink()
    assert report_main([str(out)]) == 0
    assert (out / "table.md").read_text() == table
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    forget_eco = [r for r in records if r["method"] == "eco" and r["set"] == "forget"]
    assert summary["methods"]["eco"]["forget_rouge_without_names"] == pytest.approx(
        np.mean([r["rouge_without_names"] for r in forget_eco])
    )
    # A run written before the name figures: the report says how to get them, and with the
    # data folder recomputes them to the same table.
    older = tmp_path / "older"
    older.mkdir()
    (older / "results.json").write_text((out / "results.json").read_text())
    (older / "records.jsonl").write_text(
        "".join(
            json.dumps(
                {k: v for k, v in r.items() if k not in ("rouge_without_names", "repeats_name")}
            )
            + "\n"
            for r in records
        )
    )
    assert report_main([str(older)]) == 0
    assert "Answers to the forget" not in (older / "table.md").read_text()
    assert "pass --data-dir" in capsys.readouterr().err
    assert report_main([str(older), "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "--data-dir must contain tofu/" in capsys.readouterr().err
    assert report_main([str(older), "--data-dir", str(tofu_dir)]) == 0
    assert (older / "table.md").read_text() == table
    by = {(r["method"], r["set"], r["question"]): r for r in records}
    # Methods behind the guard leave unflagged questions exactly as the original answers them.
    for (method, set_name, q), r in by.items():
        if method in ("eco", "refusal_baseline") and not r["flagged"]:
            assert r["ratio"] == by[("original", set_name, q)]["ratio"]
            assert r["generated"] == by[("original", set_name, q)]["generated"]
        if method == "refusal_baseline" and r["flagged"]:
            assert r["ratio"] == 1.0


def test_initial_corruption_defaults_and_errors(tiny_backend) -> None:
    from eco_integrations.research.tofu.pipeline import initial_corruption

    weight = tiny_backend.model.get_input_embeddings().weight
    hidden = int(weight.shape[1])
    noise = initial_corruption(TofuOptions(), tiny_backend)
    # Noise on the scale of the model's own token vectors, whatever the model.
    assert noise.name == "rand_noise_full" and noise.dims is None
    assert noise.strength == pytest.approx(2 * float(weight.detach().float().std()), abs=1e-4)
    assert initial_corruption(TofuOptions(init_strength=3.0), tiny_backend).strength == 3.0
    first_n = initial_corruption(TofuOptions(corruption="rand_noise_first_n"), tiny_backend)
    assert first_n.dims == 1 and first_n.strength is not None
    zero = initial_corruption(TofuOptions(corruption="zero_out_top_k"), tiny_backend)
    assert zero.strength is None and zero.dims == max(1, hidden // 12)
    assert (
        initial_corruption(TofuOptions(corruption="zero_out_top_k", dims=3), tiny_backend).dims == 3
    )
    with pytest.raises(ConfigurationError, match="--dims to set where it starts"):
        initial_corruption(
            TofuOptions(corruption="zero_out_top_k", init_strength=1.0), tiny_backend
        )
    # A share starts from the whole replacement, not from the embedding table's scale.
    substitute = initial_corruption(TofuOptions(corruption="substitute_tokens"), tiny_backend)
    assert substitute.strength == 1.0 and substitute.dims is None


def test_search_of_a_share_stays_at_most_one(tofu_dir, tiny_backend, toy_guard) -> None:
    from eco_integrations.config import ECOPolicy
    from eco_integrations.research.tofu.pipeline import initial_corruption, search_strength
    from eco_integrations.research.tofu.scoring import ECOScorer, ModelScorer

    setting = load_setting("forget01", tofu_dir, n_retain_authors=2)
    rows = setting.forget[:4]
    options = TofuOptions(corruption="substitute_tokens", search_steps=2, max_new_tokens=2)
    base = ModelScorer(tiny_backend, name="original", system_prompt="")
    eco = ECOScorer(
        base, toy_guard, ECOPolicy(corruption=initial_corruption(options, tiny_backend))
    )
    # Far-off reference ratios pull the search toward larger strengths: it must stop at 1, not
    # fail inside the corruption with a strength above 1.
    result = search_strength(eco, [1e-6] * len(rows), rows, options)
    assert result.evaluations and max(result.evaluations) <= 1.0
    assert 0 < result.strength <= 1.0


def test_search_prints_each_setting_only_with_progress(
    tofu_dir, tiny_backend, toy_guard, capsys
) -> None:
    from eco_integrations.config import ECOPolicy
    from eco_integrations.research.tofu.pipeline import initial_corruption, search_strength
    from eco_integrations.research.tofu.scoring import ECOScorer, ModelScorer

    setting = load_setting("forget01", tofu_dir, n_retain_authors=2)
    rows = setting.forget[:4]
    base = ModelScorer(tiny_backend, name="original", system_prompt="")
    reference = [0.5 + 0.1 * i for i in range(len(rows))]
    for show in (False, True):
        options = TofuOptions(
            corruption="substitute_tokens", search_steps=1, max_new_tokens=2, show_progress=show
        )
        eco = ECOScorer(
            base, toy_guard, ECOPolicy(corruption=initial_corruption(options, tiny_backend))
        )
        result = search_strength(eco, reference, rows, options)
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[search]")]
        if not show:
            assert lines == []
            continue
        # One line per setting scored, naming its strength, objective and both statistics.
        assert len(lines) == len(result.evaluations)
        for line, value in zip(lines, result.evaluations, strict=True):
            assert f"strength {value:.4g}: distance" in line
            assert "folded" in line and "unfolded" in line


def test_search_over_k_for_a_corruption_without_strength(tofu_dir, tiny_backend, toy_guard) -> None:
    from eco_integrations.config import ECOPolicy
    from eco_integrations.research.tofu.pipeline import initial_corruption, search_strength
    from eco_integrations.research.tofu.scoring import ECOScorer, ModelScorer

    setting = load_setting("forget01", tofu_dir, n_retain_authors=2)
    rows = setting.forget[:6]
    options = TofuOptions(corruption="zero_out_top_k", dims=4, search_steps=2, max_new_tokens=2)
    base = ModelScorer(tiny_backend, name="original", system_prompt="")
    eco = ECOScorer(
        base, toy_guard, ECOPolicy(corruption=initial_corruption(options, tiny_backend))
    )
    # A reference the corruption cannot reach exactly: the search must still return a valid k.
    reference = [0.5 + 0.1 * i for i in range(len(rows))]
    result = search_strength(eco, reference, rows, options)
    hidden = int(tiny_backend.model.get_input_embeddings().weight.shape[1])
    assert result.strength == int(result.strength) and 1 <= result.strength <= hidden
    assert result.evaluations and all(k == int(k) and 1 <= k <= hidden for k in result.evaluations)
    assert 0.0 <= result.value <= 1.0
    # The scorer at the found k is a valid zero-out setting (no strength).
    tuned = eco.with_corruption(dims=int(result.strength))
    assert (
        tuned.policy.corruption.dims == int(result.strength)
        and tuned.policy.corruption.strength is None
    )


def test_selector_loop_with_the_retained_objective(tofu_dir, tiny_backend, toy_guard) -> None:
    from eco_integrations.config import ECOPolicy
    from eco_integrations.research.tofu.metrics import RETAINED_PARTS
    from eco_integrations.research.tofu.pipeline import (
        initial_corruption,
        search_over_selectors,
        search_strength,
    )
    from eco_integrations.research.tofu.scoring import ECOScorer, ModelScorer

    setting = load_setting("forget01", tofu_dir, n_retain_authors=2)
    rows = setting.forget[:6]
    options = TofuOptions(
        selectors=("content", "all"),
        search_objective="retained",
        search_steps=1,
        max_new_tokens=3,
    )
    base = ModelScorer(tiny_backend, name="original", system_prompt="")
    eco = ECOScorer(
        base, toy_guard, ECOPolicy(corruption=initial_corruption(options, tiny_backend))
    )
    reference = [0.5 + 0.1 * i for i in range(len(rows))]
    with pytest.raises(ConfigurationError, match="reference_style"):
        search_strength(eco, reference, rows, options)
    best, searches = search_over_selectors(
        eco, reference, rows, options, reference_style=(0.3, 0.1)
    )
    assert [x.selector for x in searches] == ["content", "all"]
    # The winner is the selector whose best setting is closest to the target (0).
    assert best.result.gap == min(x.result.gap for x in searches)
    assert best.result.target == 0.0
    for x in searches:
        assert x.details and set(x.details) == set(x.result.evaluations)
        for value, scores in x.details.items():
            # Every part is logged, the objective is their mean, and it is what the search saw.
            assert set(RETAINED_PARTS) | {"folded", "unfolded", "rouge", "answer_prob"} <= set(
                scores
            )
            assert scores["retained"] == pytest.approx(
                sum(scores[k] for k in RETAINED_PARTS) / len(RETAINED_PARTS)
            )
            assert scores["folded_gap"] == pytest.approx(1 - scores["folded"])
            assert x.result.evaluations[value] == pytest.approx(scores["retained"])
    # Each search ran with its own selector: at the same strengths the two score differently
    # (all corrupts the chat template's tokens too).
    shared = set(searches[0].details) & set(searches[1].details)
    assert shared
    assert any(
        searches[0].details[v]["retained"] != searches[1].details[v]["retained"] for v in shared
    )


def test_screen_script_parses_settings_and_rejects_bad_ones() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "tofu_screen.py"
    spec = importlib.util.spec_from_file_location("tofu_screen", path)
    assert spec is not None and spec.loader is not None
    screen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screen)
    assert screen.parse_setting("zero_out_top_k:dims=48") == {"name": "zero_out_top_k", "dims": 48}
    assert screen.parse_setting("rand_noise_first_n:dims=1:strength=3") == {
        "name": "rand_noise_first_n",
        "dims": 1,
        "strength": 3.0,
    }
    with pytest.raises(SystemExit, match="name:dims=K"):
        screen.parse_setting("rand_noise_full:sigma=2")
    # Every default setting is a valid corruption.
    from eco_integrations.config import CorruptionConfig

    for text in screen.DEFAULT_SETTINGS:
        CorruptionConfig(**screen.parse_setting(text))
    # Answers are scored with a draw of their own unless asked, as in `eco eval tofu`.
    assert screen.build_parser().parse_args([]).shared_draws is False
    assert screen.build_parser().parse_args(["--shared-draws"]).shared_draws is True
    assert screen.build_parser().parse_args([]).corruption_draws == 1
    assert screen.build_parser().parse_args(["--corruption-draws", "4"]).corruption_draws == 4
    # The bounds are `eco eval tofu`'s, checked before any model or data is read.
    with pytest.raises(SystemExit, match="--corruption-draws must be >= 1, got 0"):
        screen.main(["--corruption-draws", "0", "--data-dir", "/nonexistent"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"search_objective": "median"},
            "search objective 'median'.*distance, both, folded, unfolded",
        ),
        ({"corruption": "blur"}, "Unknown corruption 'blur'"),
        ({"selectors": ("content", "nouns")}, "Unknown selector.*'nouns'.*content, all, entities"),
        ({"selector": "first_n"}, "Unknown selector.*'first_n'"),
        ({"corruption": "zero_out_top_k", "init_strength": 1.0}, "--dims to set where it starts"),
        ({"dims": 8}, "leave --dims unset"),
        ({"init_strength": 0.0}, "--init-strength must be > 0"),
        ({"init_strength": float("inf")}, "--init-strength must be > 0"),
        ({"search_eps": float("inf")}, "--search-eps must be > 0"),
        ({"corruption_draws": 0}, "--corruption-draws must be >= 1, got 0"),
        ({"answer_entities": "nouns"}, "Unknown --answer-entities 'nouns'.*forget-terms, names"),
        (
            {"answer_entities": "names", "selectors": ("content", "all")},
            "changes only the entities selector, which this run does not search",
        ),
        (
            {"corruption": "substitute_tokens", "init_strength": 2.0},
            "'substitute_tokens' takes a strength of at most 1",
        ),
        (
            {"corruption": "rand_noise_full", "restore_prompt_words": True},
            "--restore-prompt-words.*'rand_noise_full' puts none.*invent_words",
        ),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path, options, message) -> None:
    # The data folder does not exist: reaching it would raise a different error.
    with pytest.raises(ConfigurationError, match=message):
        run_tofu(TofuOptions(data_dir=tmp_path / "missing", **options), tmp_path / "out")
    assert not (tmp_path / "out" / "results.json").exists()


def test_cli_prints_one_json_line_keyed_by_method(
    tofu_dir, tiny_model_dir, tmp_path, capsys
) -> None:
    from eco_integrations.cli import main

    common = [
        "eval",
        "tofu",
        "--split",
        "forget01",
        "--data-dir",
        str(tofu_dir),
        "--model",
        str(tiny_model_dir),
        "--finetune-out",
        str(tmp_path / "ft"),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    # A bad option is refused with the fix in the message, before any fine-tune.
    assert main([*common, "--corruption", "zero_out_top_k", "--init-strength", "1"]) == 2
    assert "pass --dims to set where it starts" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()
    assert main([*common, "--selector", "all", "--selectors", "content,entities"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()
    code = main(
        [
            *common,
            "--retain-authors",
            "2",
            "--retain-eval-n",
            "4",
            "--general-n",
            "3",
            "--max-new-tokens",
            "4",
            "--search-steps",
            "1",
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--batch-size",
            "16",
            "--max-length",
            "96",
            "--system-prompt",
            "",
            "--trainable-layers",
            "2",
            "--corruption",
            "zero_out_top_k",
            "--dims",
            "4",
            "--selectors",
            "content,all",
            "--search-objective",
            "retained",
            "--shared-draws",
            "--corruption-draws",
            "2",
        ]
    )
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(line) == list(METHODS)
    assert all(
        {"forget_quality", "model_utility", "forget_rouge", "retain_rouge"} <= set(v)
        for v in line.values()
    )
    search = json.loads((tmp_path / "out" / "strength_search.json").read_text())
    assert search["parameter"] == "dims" and search["corruption"] == "zero_out_top_k"
    assert all(e["strength"] == int(e["strength"]) for e in search["evaluations"])
    # Both selectors searched; the winner has the smaller objective and is the one scored.
    by_selector = {x["selector"]: x for x in search["by_selector"]}
    assert set(by_selector) == {"content", "all"}
    assert search["selector"] in by_selector
    assert search["value"] == min(x["value"] for x in by_selector.values())
    logged = search["forget_quality_by_setting"]
    assert {e["selector"] for e in logged} == {"content", "all"}
    assert all(
        {"dims", "folded", "unfolded", "rouge_gap", "prob_gap", "retained"} <= set(e)
        for e in logged
    )
    assert {"rouge", "answer_prob"} == set(search["retained_calibration"])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["policy"]["selection"]["name"] == search["selector"] == results["selector"]
    assert results["selectors_searched"] == ["content", "all"]
    assert results["shared_draws"] is True and search["shared_draws"] is True
    assert results["corruption_draws"] == 2 == search["corruption_draws"]


def test_ratio_shape_says_how_a_method_s_truth_ratios_differ(tmp_path: Path) -> None:
    def forget(*ratios: float) -> dict[str, list[dict[str, float]]]:
        return {"forget": [{"ratio": r} for r in ratios]}

    shape = ratio_shape(
        {"undecided": forget(1.0, 0.95, 1 / 0.95, 0.5, 2.0), "knows": forget(0.2, 0.3)}
    )
    assert shape["undecided"]["near_one"] == 0.6  # 0.5 and 2 are far from 1, either way
    assert shape["undecided"]["median"] == pytest.approx(0.0)
    assert shape["knows"]["near_one"] == 0.0
    assert shape["knows"]["median"] == pytest.approx(math.log(math.sqrt(0.2 * 0.3)))
    assert shape["knows"]["sd"] == pytest.approx((math.log(0.3) - math.log(0.2)) / 2)
    # A folder that is not a finished run is refused by name.
    assert report_main([str(tmp_path)]) == 2


def test_an_interrupted_search_resumes_from_the_settings_it_scored(
    tofu_dir, tiny_backend, toy_guard, tmp_path, monkeypatch
) -> None:
    from eco_integrations.config import ECOPolicy
    from eco_integrations.research.tofu import pipeline as tofu_pipeline
    from eco_integrations.research.tofu.pipeline import (
        SearchPoints,
        initial_corruption,
        search_strength,
    )
    from eco_integrations.research.tofu.scoring import ECOScorer, ModelScorer

    setting = load_setting("forget01", tofu_dir, n_retain_authors=2)
    rows = setting.forget[:4]
    options = TofuOptions(search_steps=2, max_new_tokens=2)
    base = ModelScorer(tiny_backend, name="original", system_prompt="")
    eco = ECOScorer(
        base, toy_guard, ECOPolicy(corruption=initial_corruption(options, tiny_backend))
    )
    reference = [0.5 + 0.1 * i for i in range(len(rows))]
    log_file = tmp_path / "points.jsonl"
    first = search_strength(eco, reference, rows, options, points=SearchPoints(log_file, "k1"))
    with log_file.open("a") as handle:
        handle.write('{"key": "k1", "selector": "con')  # a crash mid-line
    scored: list[int] = []
    original = tofu_pipeline.calibration_records
    monkeypatch.setattr(
        tofu_pipeline,
        "calibration_records",
        lambda *a, **k: scored.append(1) or original(*a, **k),
    )
    again = search_strength(eco, reference, rows, options, points=SearchPoints(log_file, "k1"))
    assert scored == [] and again.strength == first.strength and again.value == first.value
    # Another search's key scores afresh, and appends after the cut line, not onto it.
    search_strength(eco, reference, rows, options, points=SearchPoints(log_file, "k2"))
    assert scored and len(SearchPoints(log_file, "k1")._known) == len(first.evaluations)


def test_plain_model_scorers_show_progress_as_the_run_does(tiny_backend, tmp_path) -> None:
    from eco_integrations.research.tofu.pipeline import _model_scorer

    for show in (False, True):
        scorer = _model_scorer(
            tmp_path, "original", "", TofuOptions(show_progress=show), tmp_path, tiny_backend
        )
        assert scorer.show_progress is show


def test_the_command_offers_the_scorers_answer_entities() -> None:
    import argparse

    from eco_integrations.research.tofu.cli import add_eval_tofu
    from eco_integrations.research.tofu.scoring import ANSWER_ENTITIES

    parser = argparse.ArgumentParser()
    add_eval_tofu(parser.add_subparsers())
    action = next(
        a
        for sub in parser._subparsers._group_actions  # type: ignore[union-attr]
        for p in sub.choices.values()
        for a in p._actions
        if a.dest == "answer_entities"
    )
    assert tuple(action.choices) == ANSWER_ENTITIES and action.default == ANSWER_ENTITIES[0]
