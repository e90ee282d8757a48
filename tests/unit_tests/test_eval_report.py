"""Guard protocols on tiny fixtures (tiny encoder, tmp data dir), the report files, and the CLI wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eco_integrations.cli import build_parser
from eco_integrations.exceptions import InvalidInputError
from eco_integrations.guard import Guard
from eco_integrations.research.eval.guard_eval import (
    _fit_target,
    mcq_guard_text,
    muse_guard_protocol,
)
from eco_integrations.research.eval.report import markdown_table, readme_snippet, write_guard_report
from eco_integrations.research.eval.robust import probe_errors


def test_report_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = {"forget": rng.uniform(0.5, 1, 40), "retain": rng.uniform(0, 0.6, 200)}
    metrics = {
        "task": "muse-news",
        "tpr": 0.9,
        "fpr": 0.01,
        "auroc": 0.99,
        "threshold": 0.55,
        "threshold_method": "conformal: ...",
        "n_test": {"forget": 40, "retain": 200},
        "seconds": 1.0,
    }
    files = write_guard_report(metrics, scores, tmp_path)
    for key in ("json", "markdown", "histogram", "roc"):
        assert Path(files[key]).is_file()
    assert Path(files["histogram"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(files["json"]).read_text())["tpr"] == 0.9
    table = markdown_table(metrics)
    assert "| tpr | 0.9000 |" in table and "conformal" in table
    assert "guard parameters" not in table  # none recorded, none shown
    tuned = markdown_table({**metrics, "guard_params": {"C": 100.0, "knowledge": True}})
    assert "| guard parameters | C=100.0, knowledge=true |" in tuned
    assert "| encoder |" not in table
    assert "| encoder | all-mpnet-base-v2 |" in markdown_table(
        {**metrics, "encoder": "all-mpnet-base-v2"}
    )
    snippet = readme_snippet(
        tmp_path, {"muse-news": "eco eval guard --task muse-news", "wmdp": "not run"}
    )
    assert "eco eval guard --task muse-news" in snippet and "### wmdp" not in snippet


def test_mcq_guard_text_leaves_out_the_subject_header() -> None:
    text = mcq_guard_text(
        {"question": " Q? ", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "bio"}
    )
    assert text == "Q?\nA. a\nB. b\nC. c\nD. d"


def _muse_dir(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "muse" / "news").mkdir(parents=True)
    forget = [
        {
            "question": f"What did the Orkney council say about ferry {i}?",
            "answer": f"ferry {i} runs",
        }
        for i in range(60)
    ]
    words = ["bread", "tennis", "piano", "garden", "river", "museum"]
    retain = [
        {
            "question": f"How is the {words[i % 6]} festival number {rng.integers(100)} going?",
            "answer": "well",
        }
        for i in range(240)
    ]
    (root / "muse" / "news" / "knowmem_forget_qa.json").write_text(json.dumps(forget))
    (root / "muse" / "news" / "knowmem_retain2_qa.json").write_text(json.dumps(retain))
    return root


@pytest.mark.parametrize("method", ["target-rate", "conformal"])
def test_muse_protocol_on_fixture(tiny_encoder, tmp_path: Path, method: str) -> None:
    metrics, guard, scores = muse_guard_protocol(
        "news", _muse_dir(tmp_path), target_fpr=0.05, method=method, encoder=tiny_encoder
    )
    assert metrics["n_test"] == {"forget": 30, "retain": 120}
    assert metrics["threshold_method"].startswith(method)
    assert metrics["threshold"] == guard.targets["muse-news"].threshold_
    assert metrics["tpr"] == pytest.approx(np.mean(scores["forget"] > metrics["threshold"]))
    assert (
        metrics["auroc"] > 0.9
    )  # "Orkney ... ferry" vs festivals is separable even with a random encoder
    if method == "conformal":
        assert metrics["n_calibration"] == 36  # 30% of the 120 fit retain items, their questions


def test_conformal_with_too_few_items_names_the_fix(tiny_encoder) -> None:
    guard = Guard(tiny_encoder)
    with pytest.raises(
        InvalidInputError, match=r"at least 99 are needed\. Use --threshold target-rate"
    ):
        _fit_target(
            guard,
            "t",
            ["a b"] * 10,
            [f"c {i}" for i in range(50)],
            method="conformal",
            target_fpr=0.01,
            seed=0,
        )


def test_cli_registers_eval_and_calibrate() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "eval",
            "guard",
            "--task",
            "wmdp",
            "--threshold",
            "conformal",
            "--guard-param",
            "C=10",
            "--json",
        ]
    )
    assert (args.task, args.threshold, args.guard_param) == ("wmdp", "conformal", ["C=10"])
    args = parser.parse_args(["eval", "mcq", "--limit", "5", "--letters", "plain"])
    assert (args.limit, args.letters, args.batch_size) == (5, "plain", 8)
    args = parser.parse_args(["calibrate", "strength", "--guard", "g", "--objective", "similarity"])
    assert args.objective == "similarity" and args.max_steps == 8


def test_cli_rejects_unknown_guard_param(capsys) -> None:
    from eco_integrations.cli import main

    assert main(["eval", "guard", "--task", "muse-news", "--guard-param", "gamma=2"]) == 2
    err = capsys.readouterr().err
    assert "Unknown --guard-param gamma" in err
    assert "knowledge" in err and "near_misses" in err and "encoder" not in err


def test_guard_params_reach_the_guard() -> None:
    from eco_integrations.research.eval.cli import _parse_params

    params = _parse_params(["knowledge=true", "near_misses=true", "near_miss_weight=0.5", "C=10"])
    assert params == {"knowledge": True, "near_misses": True, "near_miss_weight": 0.5, "C": 10}


def test_robust_report_lists_every_family(tmp_path: Path) -> None:
    metrics = {
        "task": "tofu-forget10-robust",
        "tpr": 0.75,
        "fpr": 0.0,
        "tpr_by_family": {"by-title": 0.5, "padded": 1.0},
        "fpr_by_family": {"near-miss-real": 0.0, "retain-templates": 0.0, "benign-padded": 0.0},
        "auroc": 0.9,
        "threshold": 0.5,
        "n_test": {"forget": 4, "benign": 9},
        "n_by_family": {"by-title": 2, "padded": 2, "near-miss-real": 3, "retain-templates": 3},
    }
    probes = {
        "forget": {
            "by-title": ["Who wrote 'A|B'?", "Who wrote 'C'?"],
            "padded": ["x\n" * 150, "y"],
        },
        "benign": {"near-miss-real": ["Who is Oren Ameen?", "b", "c"]},
    }
    errors = probe_errors(
        probes,
        {"by-title": np.array([0.2, 0.9]), "padded": np.array([0.1, 0.7])},
        {"near-miss-real": np.array([0.6, 0.1, 0.5])},
        threshold=0.5,
    )
    assert errors["forget"][0]["text"] == "Who wrote 'A|B'?"
    assert [p["family"] for p in errors["forget"]] == ["by-title", "padded"]
    assert len(errors["forget"][1]["text"]) == 200 and "\n" not in errors["forget"][1]["text"]
    assert errors["benign"] == [
        {"family": "near-miss-real", "score": 0.6, "text": "Who is Oren Ameen?"}
    ]  # 0.5 is not above the threshold: not flagged
    metrics["missed_forget_probes"] = errors["forget"]
    metrics["flagged_benign_probes"] = []
    table = markdown_table(metrics)
    assert "| by-title | 0.2000 | Who wrote 'A\\|B'? |" in table
    assert "Missed forget probes (2):" in table and "Flagged benign probes: none." in table
    assert "| by-title (2) | 0.5000 | near-miss-real (3) | 0.0000 |" in table
    assert "|  |  | benign-padded (?) | 0.0000 |" in table
    assert "| **all** (4) | 0.7500 | **all** (9) | 0.0000 |" in table
    assert "{" not in table  # no dict printed raw as a headline row
    rng = np.random.default_rng(0)
    scores = {"forget": rng.uniform(0.4, 1, 4), "benign": rng.uniform(0, 0.6, 9)}
    write_guard_report(metrics, scores, tmp_path)
    snippet = readme_snippet(tmp_path, {"tofu-forget10-robust": "eco eval guard ..."})
    assert "tpr >= 0.95 in every forget family" in snippet and "by-title (2)" in snippet


def test_tofu_tasks_keep_their_threshold_rule(capsys) -> None:
    from eco_integrations.cli import main

    for task in ("tofu-forget10", "tofu-forget10-robust"):
        argv = ["eval", "guard", "--task", task, "--threshold", "conformal"]
        assert main(argv) == 2
        assert "drop --threshold" in capsys.readouterr().err


def test_the_robust_task_measures_the_knowledge_guard_unless_told_otherwise(
    tiny_encoder, monkeypatch
) -> None:
    from toy_data import TOY_FORGET, TOY_RETAIN

    from eco_integrations.research.eval import robust

    toy = {
        "fit_forget": TOY_FORGET,
        "fit_retain": TOY_RETAIN,
        "forget_groups": [i % 4 for i in range(len(TOY_FORGET))],
        "retain_groups": [i % 4 for i in range(len(TOY_RETAIN))],
        "forget": {"by-title": ["Who wrote 'Harry Potter'?", "Tell me about Hogwarts."]},
        "benign": {"near-miss-real": ["Who is Harry Belafonte?", "How do I bake bread?"]},
        "held_out_forget_authors": ["Harry Potter"],
    }
    monkeypatch.setattr(robust, "robust_probes", lambda *a, **k: toy)
    metrics, guard, _ = robust.robust_guard_protocol(encoder=tiny_encoder, params={"cv": 2})
    assert metrics["guard_params"] == {"knowledge": True, "near_misses": True, "cv": 2}
    assert guard.targets["tofu-forget10"].phrases_ is not None
    metrics, guard, _ = robust.robust_guard_protocol(
        encoder=tiny_encoder, params={"cv": 2, "knowledge": False, "near_misses": False}
    )
    assert metrics["guard_params"]["knowledge"] is False
    assert guard.targets["tofu-forget10"].phrases_ is None
    assert guard.targets["tofu-forget10"].n_near_misses_ == 0


def test_eval_guard_takes_the_encoder_named_on_the_command_line(
    tiny_encoder_dir, tmp_path: Path, capsys
) -> None:
    from eco_integrations.cli import main

    data = _muse_dir(tmp_path)
    argv = ["eval", "guard", "--task", "muse-news", "--data-dir", str(data), "--json", "--quiet"]
    assert main([*argv, "--encoder", str(tiny_encoder_dir), "--target-fpr", "0.05"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["encoder"] == Path(tiny_encoder_dir).name
    assert main([*argv, "--encoder", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_a_missed_tofu_question_shows_which_of_its_facts_the_fit_texts_held() -> None:
    from eco_integrations.research.eval.guard_eval import _annotate_missed, names_and_numbers
    from eco_integrations.research.eval.report import probe_table

    question = "What is the full name of the author born in Manama, Bahrain, January 13, 1941?"
    # Capitalised words the texts also write in lower case are question words, not facts.
    assert names_and_numbers(question, {"what"}) == ["Manama", "Bahrain", "January", "13", "1941"]
    assert names_and_numbers("Who is Ji-Yeon Park's mother?", {"who"}) == ["Ji-Yeon", "Park"]
    fit_forget = [
        "Aysha Al-Hashim grew up in Bahrain.",
        "In January 1941 the author moved to Manama.",  # two facts of the question, one text
        "Manama is where the story of Bahrain's pearl divers starts.",
    ]
    missed = _annotate_missed(
        [{"family": "forget", "score": 0.12, "text": question}],
        fit_forget,
        [*fit_forget, "The retain texts ask what they ask."],
    )
    assert missed[0]["most_in_one_fit_forget_text"] == ["Manama", "January", "1941"]
    table = probe_table(missed, "Missed forget probes")
    assert "| its names and numbers | the most of them one fit forget text holds |" in table
    assert "| Manama, Bahrain, January, 13, 1941 | Manama, January, 1941 |" in table
    # Probes without the annotation (the robust task's) keep three columns.
    plain = probe_table([{"family": "by-title", "score": 0.2, "text": "x"}], "Missed")
    assert "| family | score | probe |\n| --- | --- | --- |" in plain


def _wmdp_dir(root: Path) -> Path:
    """WMDP and MMLU laid out like ../shared/data: hazard questions on pathogens and exploits,
    benign ones on festivals, and two close-subject test questions worded like the hazards."""
    import csv

    from eco_integrations.research.eval.datasets import MMLU_CLOSE_SUBJECTS

    (root / "wmdp").mkdir(parents=True)
    for n, subject in enumerate(("bio", "chem", "cyber")):
        rows = [
            {
                "question": f"Which pathogen aerosol exploit {subject} variant {n * 30 + i}?",
                "choices": ["toxin", "spore", "payload", "vector"],
                "answer": i % 4,
            }
            for i in range(30)
        ]
        (root / "wmdp" / f"wmdp-{subject}.json").write_text(json.dumps(rows))
    words = ["bread", "tennis", "piano", "garden", "river", "museum"]
    for split, size in (("test", 24), ("val", 10), ("dev", 5)):
        (root / "mmlu" / split).mkdir(parents=True)
        for subject in (*MMLU_CLOSE_SUBJECTS, "astronomy"):
            with (root / "mmlu" / split / f"{subject}_{split}.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                for i in range(size):
                    question = f"How is the {words[i % 6]} festival number {i} going?"
                    if split == "test" and subject == "virology" and i < 2:
                        question = f"Which pathogen aerosol exploit bio variant {i}?"
                    writer.writerow([question, "toxin", "spore", "payload", "vector", "A"])
    return root


def test_the_wmdp_report_lists_the_benign_questions_it_would_corrupt(
    tiny_encoder, tmp_path: Path
) -> None:
    from eco_integrations.research.eval.guard_eval import wmdp_guard_protocol

    metrics, _, scores = wmdp_guard_protocol(
        _wmdp_dir(tmp_path / "data"), target_fpr=0.05, encoder=tiny_encoder
    )
    flagged = metrics["flagged_benign_probes"]
    threshold = metrics["threshold"]
    benign = np.concatenate([scores["mmlu_close"], scores["mmlu_other"]])
    assert len(flagged) == int(np.sum(benign > threshold)) == round(metrics["fpr"] * len(benign))
    assert all(p["score"] > threshold for p in flagged)
    # A close-subject question worded like the hazards is among them, under its subject.
    assert any(p["family"] == "virology" and "pathogen aerosol" in p["text"] for p in flagged)
    table = markdown_table(metrics)
    assert f"Flagged benign probes ({len(flagged)}):" in table
    assert "Missed forget probes" not in table  # hundreds on the real data: not listed


def test_eval_guard_says_how_many_questions_its_report_lists(
    tiny_encoder_dir, tmp_path: Path, capsys
) -> None:
    from eco_integrations.cli import main

    argv = ["eval", "guard", "--task", "wmdp", "--data-dir", str(_wmdp_dir(tmp_path / "data"))]
    argv += ["--encoder", str(tiny_encoder_dir), "--target-fpr", "0.05", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    printed = json.loads(lines[-1])
    report = tmp_path / "out" / "wmdp.md"
    assert (
        f"flagged benign questions: {len(printed['flagged_benign_probes'])}, each with its score "
        f"in {report}" in lines
    )
    assert not any(line.startswith("missed forget questions") for line in lines)
    assert main(argv) == 0  # no --out: the lists are in the JSON line
    assert "each with its score in the JSON line below" in capsys.readouterr().out


def test_the_results_snippet_shows_the_mcq_command_with_its_threads(
    tmp_path: Path, monkeypatch
) -> None:
    import torch

    from eco_integrations.research.eval.report import main as report_main

    # A run that recorded no command (an older one) is shown with the command the script runs:
    # torch's thread count, and the cache under ~ rather than this machine's home folder.
    monkeypatch.setenv("ECO_CACHE_DIR", str(Path.home() / ".cache" / "eco-test"))
    (tmp_path / "mcq.json").write_text(json.dumps({"wmdp_acc_plain": 0.25, "seconds": 1.0}))
    argv = ["--data-dir", str(tmp_path), "--out", str(tmp_path), "--snippet-only"]
    assert report_main(argv) == 0
    snippet = (tmp_path / "README_results.md").read_text()
    shown = f"--out ~/.cache/eco-test/mcq --threads {torch.get_num_threads()} --json"
    assert shown in snippet
    assert str(Path.home()) not in snippet
    # A recorded command is shown as recorded.
    (tmp_path / "mcq.json").write_text(json.dumps({"command": "eco eval mcq --threads 1"}))
    assert report_main(argv) == 0
    assert "eco eval mcq --threads 1\n" in (tmp_path / "README_results.md").read_text()
