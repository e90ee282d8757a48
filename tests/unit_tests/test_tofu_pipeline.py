"""`eco eval tofu` end to end on the tiny random Llama and a handful of TOFU-shaped rows."""

from __future__ import annotations

import json
import math

import pytest

from eco_integrations.exceptions import ConfigurationError
from eco_integrations.finetune import FinetuneConfig
from eco_integrations.tofu import METHODS, TofuOptions, headline, run_tofu
from eco_integrations.tofu.data import load_setting
from eco_integrations.tofu.pipeline import forget_halves, precompute
from tofu_rows import write_tofu


@pytest.fixture()
def tofu_dir(tmp_path):  # noqa: ANN001, ANN201
    return write_tofu(tmp_path / "data")


def test_setting_draws_whole_retain_authors_covered_by_retain_perturbed(tofu_dir) -> None:  # noqa: ANN001
    setting = load_setting("forget01", tofu_dir, n_retain_authors=2, seed=0)
    assert len(setting.retain_authors) == 2 and set(setting.retain_authors) <= {0, 1, 2}
    assert len(setting.retain_train) == 40 and len(setting.original_rows) == 80 and len(setting.retained_rows) == 40
    trained = {r["question"] for r in setting.retain_train}
    assert {r["question"] for r in setting.retain_eval} <= trained
    assert not trained & {r["question"] for r in setting.forget}
    assert load_setting("forget01", tofu_dir, n_retain_authors=2, seed=0).retain_authors == setting.retain_authors
    with pytest.raises(ConfigurationError, match="retain-authors"):
        load_setting("forget01", tofu_dir, n_retain_authors=4)


def test_prompt_baseline_names_the_forget_authors(tofu_dir) -> None:  # noqa: ANN001
    from eco_integrations.tofu.pipeline import baseline_system_prompt

    text = baseline_system_prompt(load_setting("forget01", tofu_dir, n_retain_authors=2))
    assert "Basil Quorn" in text and "Nadia Velt" in text and "Omar Pike" not in text


def test_forget_halves_are_disjoint_and_cover() -> None:
    cal, ev = forget_halves(40, 0)
    assert len(cal) == 20 and len(ev) == 20 and not set(cal) & set(ev) and set(cal) | set(ev) == set(range(40))


def test_run_tofu_end_to_end(tofu_dir, tiny_model_dir, tiny_encoder, tmp_path) -> None:  # noqa: ANN001
    options = TofuOptions(
        split="forget01", data_dir=tofu_dir, model=tiny_model_dir, finetune_out=tmp_path / "ft", retain_authors=2,
        retain_eval_n=4, general_n=3, max_new_tokens=4, search_steps=1, batch_size=16, guard_cv=2, target_fpr=0.1, encoder=tiny_encoder,
        finetune=FinetuneConfig(epochs=1, learning_rate=1e-3, batch_size=16, max_length=96, system_prompt=""),
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
    for name in ("table.md", "results.json", "records.jsonl", "strength_search.json", "truth_ratio_histograms.png", "forget_quality_vs_utility.png"):
        assert (out / name).is_file(), name
    search = json.loads((out / "strength_search.json").read_text())
    assert len(search["evaluations"]) >= 2 and len(search["calibration_rows"]) == 20
    assert summary["n_forget_eval"] == 20 and summary["finetune"]["original"]["steps"] == 5
    assert json.loads((out / "guard" / "manifest.json").read_text())["targets"][0]["n_retain"] == 80 + 12  # TOFU retain + MMLU val
    # A rerun reuses the fine-tunes, the guard and the search log, and gives the same figures.
    again = run_tofu(options, out)
    assert headline(again) == line and again["finetune"]["original"]["cached"]
    table = (out / "table.md").read_text()
    assert all(f"| {m} |" in table for m in METHODS)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    by = {(r["method"], r["set"], r["question"]): r for r in records}
    # Methods behind the guard leave unflagged questions exactly as the original answers them.
    for (method, set_name, q), r in by.items():
        if method in ("eco", "refusal_baseline") and not r["flagged"]:
            assert r["ratio"] == by[("original", set_name, q)]["ratio"]
            assert r["generated"] == by[("original", set_name, q)]["generated"]
        if method == "refusal_baseline" and r["flagged"]:
            assert r["ratio"] == 1.0
