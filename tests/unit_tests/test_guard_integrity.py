"""Saved guard folders an attacker cannot quietly defang, and the guard commands' records.

Range checks on every manifest value, ``integrity.json`` over the manifest, the target files and
``policy.json``, HMAC-SHA-256 signing with ``ECO_GUARD_KEY``; ``eco guard score`` printing one
record per input line; ``eco guard add-target``/``remove-target`` leaving other targets' bytes alone.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from toy_data import TOY_FORGET, TOY_RETAIN

from eco_integrations import ECOPolicy, Guard
from eco_integrations._integrity import GUARD_KEY_ENV, seal
from eco_integrations.cli import main
from eco_integrations.exceptions import ArtifactError, ConfigurationError

KEY = "a signing key for the tests"


def _edit_manifest(folder: Path, change: Any) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _reseal_like_an_attacker(folder: Path) -> None:
    """Recompute both the manifest's content hash and integrity.json, as anyone with write access can."""
    from eco_integrations.guard import GuardManifest, _content_hash

    manifest = GuardManifest.model_validate(json.loads((folder / "manifest.json").read_text()))
    manifest.content_sha256 = _content_hash(folder, manifest)
    (folder / "manifest.json").write_text(manifest.model_dump_json())
    seal(folder, [t.folder for t in manifest.targets], key=None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["targets"][0].update(threshold=float("nan")), "threshold nan"),
        (lambda m: m["targets"][0].update(threshold=2.0), "threshold 2.0"),
        (lambda m: m["targets"][0].update(threshold=float("inf")), "threshold inf"),
        (lambda m: m["targets"][0].update(threshold=0.0), "threshold 0.0"),
        (lambda m: m["targets"][0].update(name="../../etc"), "is not 1-64 letters"),
        (lambda m: m["targets"][0].update(folder="/etc"), "outside the guard folder"),
        (lambda m: m["targets"][0].update(folder="targets/../../x"), "outside the guard folder"),
        (lambda m: m["targets"][0].update(cv_fpr=-1.0), "cv_fpr -1.0"),
        (lambda m: m.update(passage_chars=0), "passage_chars 0"),
    ],
)
def test_manifest_values_are_range_checked_even_when_rehashed(
    toy_guard, tmp_path, tiny_encoder, change, message
) -> None:
    folder = toy_guard.save(tmp_path / "g")
    _edit_manifest(folder, change)
    with pytest.raises(ArtifactError, match=message.replace("(", r"\(")):
        Guard.load(folder, encoder=tiny_encoder)


def test_a_schema_7_folder_is_still_read(toy_guard, tmp_path, tiny_encoder) -> None:
    # Version 8 only adds the nearest-example term, off in every version-7 folder.
    def as_schema_7(raw: dict) -> None:
        for target in raw["targets"]:
            del target["params"]["neighbour_weight"]
        raw["schema_version"] = 7

    folder = toy_guard.save(tmp_path / "g")
    _edit_manifest(folder, as_schema_7)
    _reseal_like_an_attacker(folder)
    loaded = Guard.load(folder, encoder=tiny_encoder)
    texts = TOY_FORGET + TOY_RETAIN
    assert loaded.targets["harry-potter"].neighbour_weight == 0.0
    assert np.allclose(loaded.score(texts), toy_guard.score(texts), atol=1e-6)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"neighbour_weight": -5.0}, "saved parameters are invalid: neighbour_weight must be >= 0"),
        ({"phrase_score": "high"}, "saved parameters are invalid: phrase_score must be a number"),
        ({"future_knob": 1}, "'future_knob', which this release does not know"),
    ],
)
def test_saved_parameters_are_checked_on_load(
    toy_guard, tmp_path, tiny_encoder, params, message
) -> None:
    def edit(raw: dict) -> None:
        raw["targets"][0]["params"].update(params)

    folder = toy_guard.save(tmp_path / "g")
    _edit_manifest(folder, edit)
    _reseal_like_an_attacker(folder)  # past the hash, so only the parameter check can refuse
    with pytest.raises(ArtifactError, match=message):
        Guard.load(folder, encoder=tiny_encoder)


def test_policy_json_is_covered_and_policy_save_reseals(toy_guard, tmp_path, tiny_encoder) -> None:
    folder = toy_guard.save(tmp_path / "g")
    ECOPolicy(classify_window=2).save(folder)  # a save through the library re-seals
    assert Guard.load(folder, encoder=tiny_encoder).version == toy_guard.version
    (folder / "policy.json").write_text(
        (folder / "policy.json").read_text().replace('"classify_window": 2', '"classify_window": 3')
    )
    with pytest.raises(ArtifactError, match="integrity check"):
        Guard.load(folder, encoder=tiny_encoder)
    with pytest.raises(ArtifactError, match="integrity check"):
        ECOPolicy().save(folder)  # never blesses a folder someone edited


def test_signing_key_stops_a_rewrite_without_the_key(
    toy_guard, tmp_path, tiny_encoder, monkeypatch
) -> None:
    monkeypatch.setenv(GUARD_KEY_ENV, KEY)
    folder = toy_guard.save(tmp_path / "g")
    assert json.loads((folder / "integrity.json").read_text())["algorithm"] == "hmac-sha256"
    assert Guard.load(folder, encoder=tiny_encoder).target_names == ["harry-potter"]
    _edit_manifest(folder, lambda m: m["targets"][0].update(threshold=0.999999))
    monkeypatch.delenv(GUARD_KEY_ENV)
    _reseal_like_an_attacker(folder)  # without the key: a plain SHA-256 seal
    monkeypatch.setenv(GUARD_KEY_ENV, KEY)
    with pytest.raises(ArtifactError, match="not signed"):
        Guard.load(folder, encoder=tiny_encoder)
    monkeypatch.delenv(GUARD_KEY_ENV)
    assert Guard.load(
        folder, encoder=tiny_encoder
    )  # without a key the rewrite is only detectable, as documented
    signed = toy_guard.save(tmp_path / "signed")
    seal(signed, ["targets/000"], key=b"another key")
    monkeypatch.setenv(GUARD_KEY_ENV, KEY)
    with pytest.raises(ArtifactError, match="signature does not match"):
        Guard.load(signed, encoder=tiny_encoder)
    monkeypatch.delenv(GUARD_KEY_ENV)
    with pytest.raises(ArtifactError, match="is signed"):
        Guard.load(signed, encoder=tiny_encoder)


@pytest.mark.parametrize(
    "damage", ["not utf-8", "json array", "weights is a directory", "no integrity.json"]
)
def test_damaged_folders_give_clear_errors(toy_guard, tmp_path, tiny_encoder, damage) -> None:
    folder = toy_guard.save(tmp_path / "g")
    if damage == "not utf-8":
        (folder / "manifest.json").write_bytes(b'{"kind": "eco-guard\xff"}')
    elif damage == "json array":
        (folder / "manifest.json").write_text("[1, 2]")
    elif damage == "weights is a directory":
        weights = folder / "targets" / "000" / "weights.safetensors"
        weights.unlink()
        weights.mkdir()
    else:
        (folder / "integrity.json").unlink()
    with pytest.raises(ArtifactError) as err:
        Guard.load(folder, encoder=tiny_encoder)
    assert str(folder) in str(err.value) and (
        "Re-fit" in str(err.value) or "save the guard again" in str(err.value)
    )


def test_serve_refuses_an_exposed_port_without_keys_and_unsigned_guards(
    toy_guard, tmp_path, monkeypatch
) -> None:
    from eco_integrations.serving.cli import check_exposure, serve

    check_exposure("127.0.0.1", (), False)
    check_exposure("::1", (), False)
    check_exposure("0.0.0.0", ("k" * 20,), False)
    check_exposure("0.0.0.0", (), True)
    with pytest.raises(ConfigurationError, match="--allow-unauthenticated"):
        check_exposure("0.0.0.0", (), False)
    folder = toy_guard.save(tmp_path / "g")
    monkeypatch.delenv(GUARD_KEY_ENV, raising=False)
    with pytest.raises(ConfigurationError, match=GUARD_KEY_ENV):
        serve(folder, require_signed_guard=True)


# -- the guard commands ------------------------------------------------------------------------------
@pytest.fixture
def cli_guard(toy_guard, tiny_encoder, tmp_path, monkeypatch) -> Path:
    """A saved toy guard the ``eco guard`` commands load with the tiny encoder."""
    monkeypatch.setattr("eco_integrations.guard.SentenceEncoder", lambda *a, **k: tiny_encoder)
    return toy_guard.save(tmp_path / "g")


def _records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_guard_score_prints_one_record_per_line(cli_guard, capsys, monkeypatch) -> None:
    stdin = io.TextIOWrapper(
        io.BytesIO(b"Who is Harry Potter?\n\nHow do I bake bread?\ncaf\xe9 latin-1\n   \n"),
        encoding="utf-8",
    )
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["guard", "score", str(cli_guard), "--json"]) == 1  # some lines could not be scored
    records = _records(capsys)
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    assert "flagged" in records[0] and "flagged" in records[2]
    assert records[1]["error"].startswith("blank line") and records[4]["error"].startswith(
        "blank line"
    )
    assert "not valid UTF-8" in records[3]["error"]
    # Flags before the texts, as `eco guard score DIR --json TEXT` is typed.
    assert (
        main(
            [
                "guard",
                "score",
                str(cli_guard),
                "--json",
                "Who is Harry Potter?",
                "How do I bake bread?",
            ]
        )
        == 0
    )
    assert [r["line"] for r in _records(capsys)] == [1, 2]
    with pytest.raises(SystemExit):  # an unknown flag is still refused, not scored as text
        main(["guard", "score", str(cli_guard), "--bogus", "x"])


def test_guard_score_takes_the_folder_as_guard_option_too(cli_guard, capsys) -> None:
    texts = ["Who is Harry Potter?", "How do I bake bread?"]
    assert main(["guard", "score", str(cli_guard), "--json", *texts]) == 0
    positional = _records(capsys)
    # As `eco guard explain --guard G` takes it: every positional word is then a text.
    assert main(["guard", "score", "--guard", str(cli_guard), "--json", *texts]) == 0
    assert _records(capsys) == positional
    assert main(["guard", "score", "--json", texts[0], "--guard", str(cli_guard)]) == 0
    (alone,) = _records(capsys)  # a batch of one: the score may move in the last digits
    assert alone["flagged"] == positional[0]["flagged"]
    assert alone["score"] == pytest.approx(positional[0]["score"], abs=1e-6)
    assert main(["guard", "score"]) == 2
    assert "--guard GUARD" in capsys.readouterr().err


def test_add_and_remove_target_leave_other_targets_byte_identical(
    cli_guard, tiny_encoder_dir, tmp_path, capsys
) -> None:
    def digests(folder: Path) -> dict[str, str]:
        manifest = json.loads((folder / "manifest.json").read_text())
        return {
            t["name"]: hashlib.sha256(
                (folder / t["folder"] / "weights.safetensors").read_bytes()
            ).hexdigest()
            + hashlib.sha256((folder / t["folder"] / "vocabulary.json").read_bytes()).hexdigest()
            for t in manifest["targets"]
        }

    before = digests(cli_guard)
    (tmp_path / "f.txt").write_text(
        "How do I bake bread?\nBread needs yeast.\nKnead the dough.\nOven temperature for bread?\n"
        "Sourdough needs a starter.\nHow long does bread rise?\n"
    )
    (tmp_path / "r.txt").write_text(
        "Who is Gandalf?\nWhat is the capital of France?\nExplain photosynthesis.\nTell me about Rome.\n"
        "Who wrote Hamlet?\nHow far is the moon?\n"
    )
    assert (
        main(
            [
                "guard",
                "add-target",
                str(cli_guard),
                "--target",
                "baking",
                "--forget",
                str(tmp_path / "f.txt"),
                "--retain",
                str(tmp_path / "r.txt"),
                "--encoder",
                str(tiny_encoder_dir),
                "--target-fpr",
                "0.3",
            ]
        )
        == 0
    )
    added = digests(cli_guard)
    assert (
        set(added) == {"harry-potter", "baking"} and added["harry-potter"] == before["harry-potter"]
    )

    def remove(name: str) -> int:
        return main(
            [
                "guard",
                "remove-target",
                str(cli_guard),
                "--target",
                name,
                "--encoder",
                str(tiny_encoder_dir),
            ]
        )

    assert remove("harry-potter") == 0
    removed = digests(cli_guard)
    assert removed == {"baking": added["baking"]}
    assert sorted(p.name for p in (cli_guard / "targets").iterdir()) == ["000"]
    capsys.readouterr()
    assert remove("nope") == 2
    assert "No target 'nope'" in capsys.readouterr().err


def test_a_guard_fit_in_bfloat16_is_loaded_in_bfloat16_or_refused(
    tmp_path, tiny_encoder_dir, capsys
) -> None:
    from eco_integrations.encoder import SentenceEncoder

    (tmp_path / "f.txt").write_text("\n".join(TOY_FORGET * 2))
    (tmp_path / "r.txt").write_text("\n".join(TOY_RETAIN * 2))
    out = tmp_path / "guard"

    def fit(target: str, *extra: str) -> int:
        argv = ["guard", "fit", "--forget", str(tmp_path / "f.txt")]
        argv += ["--retain", str(tmp_path / "r.txt"), "--target", target, "--out", str(out)]
        return main([*argv, "--encoder", str(tiny_encoder_dir), "--target-fpr", "0.2", *extra])

    assert fit("hp", "--encoder-precision", "bfloat16") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encoder"]["precision"] == "bfloat16"
    # Given the encoder folder alone, the folder's own precision is used: no error, same scores.
    assert fit("hp-again") == 0
    loaded = Guard.load(out, encoder=SentenceEncoder(str(tiny_encoder_dir), precision="bfloat16"))
    assert loaded.encoder.precision == "bfloat16" and set(loaded.targets) == {"hp", "hp-again"}
    # Another precision would move every score against the fitted thresholds: refused by name.
    capsys.readouterr()
    assert fit("hp-32", "--encoder-precision", "float32") == 2
    err = capsys.readouterr().err
    assert "fit with its encoder in bfloat16" in err and "--encoder-precision bfloat16" in err
    with pytest.raises(ArtifactError, match="runs in float32"):
        Guard.load(out, encoder=SentenceEncoder(str(tiny_encoder_dir)))
    # remove-target reads the folder's precision too.
    argv = ["guard", "remove-target", str(out), "--target", "hp-again"]
    assert main([*argv, "--encoder", str(tiny_encoder_dir)]) == 0
    assert set(
        Guard.load(
            out, encoder=SentenceEncoder(str(tiny_encoder_dir), precision="bfloat16")
        ).targets
    ) == {"hp"}


def test_chat_skips_a_line_it_cannot_read_and_answers_the_next(
    cli_guard, tiny_model_dir, capsys, monkeypatch
) -> None:
    # Piped bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape).
    lines = "Who is Harry Potter?\ncaf\udcff au lait\nHow do I bake bread?\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    argv = ["chat", "--guard", str(cli_guard), "--model", str(tiny_model_dir)]
    assert main([*argv, "--max-new-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if line.startswith("[decision:")]) == 2
    assert "[skipped this message:" in err and "lone surrogate" in err


def test_an_interrupted_save_leaves_the_previous_guard_as_it_was(
    toy_guard, tiny_encoder, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eco_integrations.guard as guard_module

    folder = toy_guard.save(tmp_path / "g")
    ECOPolicy(threshold=0.4).save(folder)
    texts = [*TOY_FORGET, *TOY_RETAIN]
    before = Guard.load(folder, encoder=tiny_encoder).score(texts)
    toy_guard.add_target("second", TOY_FORGET[:4], TOY_RETAIN, cv=2, target_fpr=0.2)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(guard_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        toy_guard.save(folder)
    monkeypatch.undo()
    # The old guard (and its policy) loads as before; nothing half-written is left beside it.
    assert np.allclose(Guard.load(folder, encoder=tiny_encoder).score(texts), before)
    assert ECOPolicy.load(folder).threshold == 0.4
    assert [p.name for p in tmp_path.iterdir()] == ["g"]
    # A finished save keeps the policy, which its seal vouched for.
    toy_guard.save(folder)
    assert list(Guard.load(folder, encoder=tiny_encoder).targets) == ["harry-potter", "second"]
    assert ECOPolicy.load(folder).threshold == 0.4


def test_a_policy_save_is_swapped_in_whole_and_never_blesses_an_edit(
    toy_guard, tiny_encoder, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eco_integrations._integrity as integrity

    folder = toy_guard.save(tmp_path / "g")
    ECOPolicy(threshold=0.4).save(folder)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(integrity, "seal", crash)  # dies after writing, before sealing
    with pytest.raises(KeyboardInterrupt):
        ECOPolicy(threshold=0.6).save(folder)
    monkeypatch.undo()
    assert Guard.load(folder, encoder=tiny_encoder).version == toy_guard.version
    assert ECOPolicy.load(folder).threshold == 0.4
    # A policy edited by hand after the seal is not carried into the next guard save.
    edited = json.loads((folder / "policy.json").read_text()) | {"threshold": 0.99}
    (folder / "policy.json").write_text(json.dumps(edited))
    with pytest.raises(ArtifactError, match=r"policy\.json would be kept.*Delete"):
        toy_guard.save(folder)


def _permissions_as_for_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting an entry of a folder without its write bit fails, as it does for any user but
    root (the tests may run as root, for whom it would not)."""
    import os
    import stat

    def guarded(real: Any) -> Any:
        def call(name: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> Any:
            parent = os.fstat(dir_fd) if dir_fd is not None else os.stat(os.path.dirname(name))
            if not parent.st_mode & stat.S_IWUSR:
                raise PermissionError(13, "Permission denied", name)
            return real(name, *args, dir_fd=dir_fd, **kwargs)

        return call

    monkeypatch.setattr(os, "unlink", guarded(os.unlink))
    monkeypatch.setattr(os, "rmdir", guarded(os.rmdir))


def test_a_read_only_guard_folder_is_replaced_whole(
    toy_guard, tiny_encoder, tmp_path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import os
    import stat

    folder = toy_guard.save(tmp_path / "g")
    for path in [folder, *folder.rglob("*")]:  # chmod -R a-w, as an operator locks a folder
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    _permissions_as_for_a_user(monkeypatch)
    toy_guard.add_target("second", TOY_FORGET[:4], TOY_RETAIN, cv=2, target_fpr=0.2)
    toy_guard.save(folder)
    # The old contents went; the new folder keeps the folder's mode.
    assert [p.name for p in tmp_path.iterdir()] == ["g"]
    assert not os.stat(folder).st_mode & stat.S_IWUSR
    assert list(Guard.load(folder, encoder=tiny_encoder).targets) == ["harry-potter", "second"]
    # What cannot be deleted at all is named, not silently left.
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    toy_guard.save(folder)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "g"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".g.replaced-")
    assert f"Could not delete {tmp_path / leftovers[0]}" in caplog.text


def test_a_save_interrupted_between_its_renames_says_where_the_guard_went(
    toy_guard, tiny_encoder, tmp_path
) -> None:
    folder = toy_guard.save(tmp_path / "g")
    aside = tmp_path / ".g.replaced-123-abc"
    folder.rename(aside)
    with pytest.raises(ArtifactError, match=r"save over it was interrupted.*\.g\.replaced-123-abc"):
        Guard.load(folder, encoder=tiny_encoder)


def test_a_load_racing_a_save_reads_the_guard_again(
    toy_guard, tiny_encoder, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = toy_guard.save(tmp_path / "g")
    newer = Guard.load(folder, encoder=tiny_encoder)
    newer.add_target("second", TOY_FORGET[:4], TOY_RETAIN, cv=2, target_fpr=0.2)
    original = Guard._load_once.__func__  # type: ignore[attr-defined]
    calls: list[int] = []

    def racing(cls: type[Guard], root: Path, encoder: Any) -> Guard:
        loaded = original(cls, root, encoder)
        if not calls:
            newer.save(folder)  # lands while the first read was under way
        calls.append(1)
        return loaded

    monkeypatch.setattr(Guard, "_load_once", classmethod(racing))
    loaded = Guard.load(folder, encoder=tiny_encoder)
    assert len(calls) == 2 and list(loaded.targets) == ["harry-potter", "second"]


def test_two_changes_to_one_folder_do_not_drop_each_other(
    toy_guard, tiny_encoder, tmp_path
) -> None:
    folder = toy_guard.save(tmp_path / "g")
    first, second = (Guard.load(folder, encoder=tiny_encoder) for _ in range(2))
    first.add_target("baking", TOY_FORGET[:4], TOY_RETAIN, cv=2, target_fpr=0.2)
    second.add_target("other", TOY_FORGET[4:8], TOY_RETAIN, cv=2, target_fpr=0.2)
    first.save(folder)
    with pytest.raises(ArtifactError, match=r"saved by someone else.*Load it again"):
        second.save(folder)
    assert set(Guard.load(folder, encoder=tiny_encoder).targets) == {"harry-potter", "baking"}
    first.remove_target("baking")
    first.save(folder)  # its own save is not someone else's
    second.save(tmp_path / "elsewhere")  # another folder is free


def test_a_save_through_a_symlink_stays_in_the_shared_folder(
    toy_guard, tiny_encoder, tmp_path
) -> None:
    shared = toy_guard.save(tmp_path / "share" / "hp")
    link = tmp_path / "hp-link"
    link.symlink_to(shared)
    toy_guard.save(link)  # e.g. every replica's guard path points into a network volume
    assert link.is_symlink() and Guard.load(shared, encoder=tiny_encoder).targets


def test_a_save_keeps_the_folder_s_permissions(toy_guard, tmp_path) -> None:
    folder = toy_guard.save(tmp_path / "g")
    folder.chmod(0o2770)  # e.g. a folder the serving group shares
    toy_guard.save(folder)
    assert folder.stat().st_mode & 0o7777 == 0o2770


def test_numpy_parameters_are_saved_as_their_values(toy_guard, tiny_encoder, tmp_path) -> None:
    # Accepted when fitting (as the checks allow), so the fitted guard must save too.
    toy_guard.add_target(
        "second", TOY_FORGET[:4], TOY_RETAIN, cv=np.int64(2), target_fpr=np.float64(0.2)
    )
    folder = toy_guard.save(tmp_path / "g")
    loaded = Guard.load(folder, encoder=tiny_encoder)
    assert loaded.targets["second"].get_params()["cv"] == 2
    texts = [*TOY_FORGET, *TOY_RETAIN]
    assert np.allclose(loaded.score(texts), toy_guard.score(texts))


def test_a_threshold_load_would_refuse_is_refused_when_saved(toy_guard, tmp_path) -> None:
    from eco_integrations.exceptions import ConfigurationError

    toy_guard.targets["harry-potter"].threshold_ = 0.0  # as a conformal threshold can come out
    with pytest.raises(ConfigurationError, match=r"'harry-potter' has threshold 0\.0.*1e-6"):
        toy_guard.save(tmp_path / "g")
    assert not (tmp_path / "g").exists()
