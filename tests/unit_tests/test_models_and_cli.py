import json
import shutil

import pytest

from eco_integrations import Guard, SentenceEncoder, TransformersBackend
from eco_integrations._models import load_causal_lm, resolve_model_path
from eco_integrations.cli import main, read_examples
from eco_integrations.exceptions import ConfigurationError, InvalidInputError


def test_local_folder_loads(tiny_model_dir) -> None:
    backend = TransformersBackend.from_pretrained(tiny_model_dir)
    assert backend.hidden_size == 32 and backend.context_window == 256


def test_hub_id_resolves_through_the_hub_cache(tiny_model_dir, tmp_path, monkeypatch) -> None:
    """A hub id goes through from_pretrained's hub path; here the hub cache is laid out locally."""
    snapshot = tmp_path / "hub" / "models--test-org--tiny-llama" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (tmp_path / "hub" / "models--test-org--tiny-llama" / "refs").mkdir()
    (tmp_path / "hub" / "models--test-org--tiny-llama" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert resolve_model_path("test-org/tiny-llama") == "test-org/tiny-llama"
    model, _tokenizer, name = load_causal_lm("test-org/tiny-llama")
    assert name == "test-org/tiny-llama" and model.config.hidden_size == 32


@pytest.mark.parametrize(
    ("value", "message"), [("", "Model name is empty"), ("./no/such/folder", "does not exist")]
)
def test_bad_model_names(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve_model_path(value)


def test_the_default_model_name_eco_models_lists_is_the_default(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr("eco_integrations._models.default_model_folder", lambda: tmp_path)
    assert resolve_model_path("SmolLM2-135M-Instruct") == str(tmp_path)
    assert resolve_model_path("smollm2-135m-instruct") == str(tmp_path)


def test_a_name_neither_here_nor_on_the_hub_says_so(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        ConfigurationError, match=r"'nosuch-model' is not a local folder.*eco models"
    ):
        load_causal_lm("nosuch-model")


def test_folder_without_config(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match=r"no config\.json"):
        resolve_model_path(tmp_path)


def test_read_examples_formats(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("one\n\n two \n")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n{"question": "q?", "answer": "a."}\n')
    (tmp_path / "c.csv").write_text('id,text\n1,"hello, world"\n2,bye\n')
    assert read_examples(tmp_path / "a.txt") == ["one", "two"]
    assert read_examples(tmp_path / "b.jsonl") == ["x", "q?", "a."]
    assert read_examples(tmp_path / "c.csv") == ["hello, world", "bye"]
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\nnot json\n')
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:2 is not valid JSON"):
        read_examples(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(InvalidInputError, match="holds no examples"):
        read_examples(tmp_path / "empty.txt")
    # A question/answer CSV reads as the JSONL rows do; its header is not an example.
    (tmp_path / "qa.csv").write_text('question,answer\n"Who, then?",Nobody.\n')
    assert read_examples(tmp_path / "qa.csv") == ["Who, then?", "Nobody."]
    # One column without a header is every row; several under other names are not guessed at.
    (tmp_path / "one.csv").write_text('"Who, then?"\nbye\n')
    assert read_examples(tmp_path / "one.csv") == ["Who, then?", "bye"]
    (tmp_path / "labelled.csv").write_text("prompt,label\nWho is Harry?,1\n")
    with pytest.raises(
        InvalidInputError, match=r"labelled\.csv has several columns.*'prompt', 'label'.*'text'"
    ):
        read_examples(tmp_path / "labelled.csv")
    (tmp_path / "bom.txt").write_bytes("\ufeffone\ntwo\n".encode())
    assert read_examples(tmp_path / "bom.txt") == ["one", "two"]
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(
        InvalidInputError, match=r"latin1\.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"
    ):
        read_examples(tmp_path / "latin1.txt")
    with pytest.raises(InvalidInputError, match="is a folder; pass a file"):
        read_examples(tmp_path)
    # UTF-16, with or without its byte-order mark (without, it decodes as UTF-8 garbage).
    for name, data in (
        ("u16.txt", "one\ntwo\n".encode("utf-16")),
        ("u16le.txt", "one\n".encode("utf-16-le")),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InvalidInputError, match=r"is UTF-16 text.*iconv -f utf-16"):
            read_examples(tmp_path / name)
    # A .txt holding JSON rows or a CSV table would be fit raw; its name is what is wrong.
    (tmp_path / "rows.txt").write_text('{"text": "x"}\n{"text": "y"}\n')
    with pytest.raises(InvalidInputError, match=r"holds JSON objects.*name it \.jsonl"):
        read_examples(tmp_path / "rows.txt")
    (tmp_path / "table.txt").write_text("question,answer\nWho?,Me.\n")
    with pytest.raises(InvalidInputError, match=r"starts with a CSV header.*name it \.csv"):
        read_examples(tmp_path / "table.txt")
    # A sentence that merely starts with the word is an example.
    (tmp_path / "prose.txt").write_text(
        "Text, in short, is what you read.\nQuestion, answer, repeat.\n"
    )
    assert read_examples(tmp_path / "prose.txt") == [
        "Text, in short, is what you read.",
        "Question, answer, repeat.",
    ]
    # A .json holding one array reads as its JSON Lines form does.
    (tmp_path / "array.json").write_text(
        '[\n  {"text": "x"},\n  {"question": "q?", "answer": "a."}\n]\n'
    )
    assert read_examples(tmp_path / "array.json") == ["x", "q?", "a."]


def test_guard_fit_and_score_commands(tmp_path, tiny_encoder_dir, capsys, monkeypatch) -> None:
    from toy_data import TOY_FORGET, TOY_RETAIN

    (tmp_path / "f.txt").write_text("\n".join(TOY_FORGET * 2))
    (tmp_path / "r.txt").write_text("\n".join(TOY_RETAIN * 2))
    out = tmp_path / "guard"
    fit = ["guard", "fit", "--forget", str(tmp_path / "f.txt"), "--retain", str(tmp_path / "r.txt")]
    fit += ["--target", "hp", "--out", str(out), "--encoder", str(tiny_encoder_dir)]
    code = main([*fit, "--target-fpr", "0.2"])
    assert code == 0
    fitted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fitted["targets"][0]["target"] == "hp"
    assert main(fit) == 2
    assert "--replace" in capsys.readouterr().err
    # --knowledge: the phrase index and near misses are fit and saved with the target.
    assert main([*fit, "--target-fpr", "0.2", "--replace", "--knowledge"]) == 0
    capsys.readouterr()
    estimator = Guard.load(out, encoder=SentenceEncoder(str(tiny_encoder_dir))).targets["hp"]
    assert estimator.knowledge and estimator.near_misses
    assert estimator.phrases_ is not None and "harry potter" in estimator.phrases_.phrases
    # --guard-param: any other PromptGuard hyperparameter, saved with the target.
    weighted = [
        *fit,
        "--replace",
        "--guard-param",
        "C=100",
        "--guard-param",
        "embedding_weight=0.3",
    ]
    assert main([*weighted, "--target-fpr", "0.2"]) == 0
    capsys.readouterr()
    estimator = Guard.load(out, encoder=SentenceEncoder(str(tiny_encoder_dir))).targets["hp"]
    assert (estimator.C, estimator.embedding_weight) == (100, 0.3)
    assert main([*fit, "--replace", "--guard-param", "knowledge=true"]) == 2
    assert "--guard-param knowledge: set by this command's own option; use --knowledge" in (
        capsys.readouterr().err
    )
    assert main([*fit, "--replace", "--guard-param", "target_fpr=0.05"]) == 2
    assert "use --target-fpr instead" in capsys.readouterr().err
    assert main([*fit, "--replace", "--only-terms"]) == 2
    assert "no --terms were given" in capsys.readouterr().err
    assert main([*fit, "--replace", "--guard-id", "another-id"]) == 2
    assert "--guard-id names a new guard only" in capsys.readouterr().err
    # --general: benign texts that train the target as retain examples, outside its FPR count.
    (tmp_path / "g.txt").write_text("What is the capital of Japan?\nHow many legs has a spider?")
    general = [*fit, "--replace", "--general", str(tmp_path / "g.txt"), "--target-fpr", "0.2"]
    assert main(general) == 0
    capsys.readouterr()
    estimator = Guard.load(out, encoder=SentenceEncoder(str(tiny_encoder_dir))).targets["hp"]
    assert estimator.n_retain_ == 2 * len(TOY_RETAIN) + 2
    assert main([*fit, "--replace", "--general", str(tmp_path / "none.txt")]) == 2
    assert "none.txt does not exist" in capsys.readouterr().err


def test_guard_score_needs_text(tmp_path, monkeypatch, capsys) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["guard", "score", str(tmp_path)]) == 2
    assert "not a guard folder" in capsys.readouterr().err


def test_a_file_as_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch) -> None:
    taken = tmp_path / "results.txt"
    taken.write_text("keep me\n")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fit ran although --out was a file")

    monkeypatch.setattr("eco_integrations.cli.cmd_guard_fit", never)
    forget, retain = tmp_path / "f.txt", tmp_path / "r.txt"
    forget.write_text("Who is Harry Potter?\n")
    retain.write_text("How do I bake bread?\n")
    argv = ["guard", "fit", "--out", str(taken), "--forget", str(forget), "--retain", str(retain)]
    assert main([*argv, "--target", "t"]) == 2
    assert "is a file; --out takes a folder" in capsys.readouterr().err
    assert taken.read_text() == "keep me\n"


def test_an_encoder_path_that_is_a_file_says_so(tmp_path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ConfigurationError, match=r"model\.safetensors is a file; pass a sentence"):
        SentenceEncoder(str(weights)).load()
