"""Option values the commands refuse up front, with the option's name, before any model,
guard or data is touched (the folders below do not exist)."""

from __future__ import annotations

import pytest

from eco_integrations.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--guard", "none", "--port", "99999"], "a TCP port is at most 65535"),
        (["serve", "--guard", "none", "--port", "http"], "'http' is not a whole number"),
        (["demo", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1, got 0"),
        (["chat", "--max-new-tokens", "-1"], "--max-new-tokens: must be >= 1, got -1"),
        (
            ["finetune", "--data", "d", "--checkpoint-every", "0"],
            "--checkpoint-every: must be >= 1",
        ),
        (["finetune", "--data", "d", "--max-steps", "0"], "--max-steps: must be >= 1"),
        (["eval", "mcq", "--seed", "-1"], "--seed: must be >= 0, got -1"),
        (["eval", "tofu", "--retain-eval-n", "-1"], "--retain-eval-n: must be >= 0, got -1"),
    ],
)
def test_argparse_refuses_out_of_range_numbers(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--torch-threads", "0"], "--torch-threads must be >= 1, got 0"),
        (["--max-body-bytes", "0"], "--max-body-bytes must be >= 1"),
        (["--shutdown-timeout", "-5"], "--shutdown-timeout must be >= 0 seconds"),
        (["--request-timeout", "0"], "--request-timeout must be a positive number"),
        (["--max-concurrency", "0"], "--max-concurrency must be >= 1"),
        (["--cors-origin", "app.example.com"], "CORS origin 'app.example.com' is not an origin"),
        (["--request-timeout", "nan"], "--request-timeout must be a positive number"),
        (["--watch", "--watch-interval", "0"], "--watch-interval must be a positive number"),
        (["--watch-interval", "nan"], "--watch-interval must be a positive number"),
        (["--shutdown-timeout", "nan"], "--shutdown-timeout must be >= 0 seconds"),
        (["--vllm-url", "localhost:8000"], "--vllm-url must be the server's http:// or https://"),
    ],
)
def test_serve_refuses_bad_limits_before_loading_anything(
    extra: list[str], message: str, capsys
) -> None:
    pytest.importorskip("uvicorn")
    assert main(["serve", "--guard", "no-such-guard", *extra]) == 2
    assert message in capsys.readouterr().err


def test_tofu_refuses_a_search_without_steps_before_fine_tuning(tmp_path, capsys) -> None:
    argv = ["eval", "tofu", "--split", "forget01", "--data-dir", str(tmp_path / "no-data")]
    assert main([*argv, "--out", str(tmp_path / "o"), "--search-steps", "0"]) == 2
    assert "--search-steps must be >= 1, got 0" in capsys.readouterr().err


def test_a_settings_model_that_refuses_a_value_gives_a_one_line_error(monkeypatch, capsys) -> None:
    from eco_integrations import cli
    from eco_integrations.config import GenerationConfig

    # Stands for any path where a value reaches a pydantic model before a check of ours.
    monkeypatch.setattr(cli, "cmd_demo", lambda args: GenerationConfig(max_new_tokens=0))
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eco: error: invalid GenerationConfig setting: max_new_tokens")
    assert "(got 0)" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1 (got 0)"),
        (["--epochs", "0"], "--epochs: Input should be greater than or equal to 1 (got 0)"),
        (["--lr", "nan"], "--lr: Input should be a finite number"),
        (["--lr", "inf"], "--lr: Input should be a finite number"),
        (["--lr", "-1"], "--lr: Input should be greater than 0"),
    ],
)
def test_finetune_settings_are_checked_before_training(tmp_path, capsys, flags, message) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "Q?", "answer": "A."}\n')
    assert main(["finetune", "--data", str(data), "--out", str(tmp_path / "runs"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_guard_eval_passes_guard_params_to_the_tofu_protocol(monkeypatch, capsys) -> None:
    from eco_integrations.research.eval import guard_eval

    seen: dict[str, object] = {}

    def protocol(split, data_dir, **kwargs):
        seen.update(kwargs, split=split)
        keys = ("tpr", "paraphrase_tpr", "fpr", "fpr_real_authors", "fpr_world_facts")
        return dict.fromkeys((*keys, "auroc", "threshold"), 0.5), None, None

    monkeypatch.setattr(guard_eval, "tofu_guard_protocol", protocol)
    argv = ["guard", "eval", "--task", "tofu-forget05", "--json"]
    flags = ["--guard-param", "knowledge=false", "--guard-param", "cv_repeats=1"]
    assert main([*argv, *flags]) == 0
    assert seen["split"] == "forget05"
    assert seen["params"] == {"knowledge": False, "cv_repeats": 1}
    capsys.readouterr()
    assert main([*argv, "--guard-param", "target_fpr=0.1"]) == 2
    assert "use --target-fpr" in capsys.readouterr().err


def test_a_refusing_file_system_and_an_interrupt_give_one_line(monkeypatch, capsys) -> None:
    from eco_integrations import cli

    def read_only(args: object) -> int:
        raise PermissionError(13, "Permission denied", "/data/guards/hp/manifest.json")

    monkeypatch.setattr(cli, "cmd_demo", read_only)
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err == "eco: error: Permission denied (/data/guards/hp/manifest.json).\n"

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_demo", interrupted)
    assert cli.main(["demo"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("eco: interrupted") and "Traceback" not in err


def test_a_utf16_line_on_stdin_is_an_error_record_not_a_score() -> None:
    from eco_integrations.cli import _score_input

    text, why = _score_input("Who is Harry?".encode("utf-16-le"))
    assert text is None and why is not None and "NUL bytes" in why


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["eval", "guard", "--task", "muse-news", "--save-guard"],
            "--save-guard saves the fitted guard under --out",
        ),
        (["guard", "explain", "--encoder", "x", "Who?"], "Give --guard DIR or drop --encoder"),
    ],
)
def test_an_option_that_would_be_ignored_is_named(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_names_that_would_escape_their_folder_are_refused(tmp_path) -> None:
    from eco_integrations import Guard
    from eco_integrations.exceptions import ConfigurationError, InvalidInputError
    from eco_integrations.research.finetune import finetune

    for bad in ("", "../x", "a@b"):
        with pytest.raises(ConfigurationError, match="guard_id"):
            Guard(None, guard_id=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="plain folder name"):
        finetune([{"question": "q?", "answer": "a."}], out=tmp_path, name="../evil")


def test_demo_refuses_a_bad_length_before_loading_the_model(monkeypatch, capsys) -> None:
    from eco_integrations import demo

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the option was checked")

    monkeypatch.setattr(demo.TransformersBackend, "from_pretrained", no_model)
    assert main(["demo", "--max-new-tokens", "100000000"]) == 2
    assert "max_new_tokens" in capsys.readouterr().err


def test_demo_passes_restore_prompt_words_to_the_engines_policy(monkeypatch, capsys) -> None:
    from eco_integrations import demo

    policies = []

    class Stop(Exception):
        pass

    def engine(backend: object, guard: object, *, policy: object) -> None:
        policies.append(policy)
        raise Stop

    monkeypatch.setattr(demo.TransformersBackend, "from_pretrained", lambda: None)
    monkeypatch.setattr(demo, "fit_demo_guard", lambda: None)
    monkeypatch.setattr(demo, "ECO", engine)
    for argv, expected in ((["demo"], False), (["demo", "--restore-prompt-words"], True)):
        with pytest.raises(Stop):
            main(argv)
        assert policies.pop().restore_prompt_words is expected
