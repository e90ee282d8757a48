"""benchmarks/default_corruption.py keeps each measured candidate, so an interrupted run resumes."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from support import neutral_report

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "default_corruption.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("default_corruption", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _settings(bench: ModuleType, seed: int = 0) -> dict:
    args = argparse.Namespace(max_new_tokens=48, seed=seed, batch_size=16)
    return bench.run_settings(args, ["Who is Harry Potter?"], ["A wizard."])


def test_a_run_resumes_from_the_candidates_it_saved(bench, tmp_path) -> None:
    path = tmp_path / "cache" / "partial.json"
    first = bench.PartialRun(path, _settings(bench))
    assert first.done == {} and first.get("all: substitute_tokens") is None
    first.add("all: substitute_tokens", ["one", "two"], neutral_report(leak=0.5, fluency=0.9))
    assert json.loads(path.read_text())["schema_version"] == bench.PARTIAL_SCHEMA_VERSION
    # Interrupted here; started again with the same settings:
    again = bench.PartialRun(path, _settings(bench))
    answers, report = again.get("all: substitute_tokens")
    assert answers == ["one", "two"] and report == neutral_report(leak=0.5, fluency=0.9)
    # Other settings: refused with what changed, and the file is kept.
    with pytest.raises(SystemExit, match="other seed; delete it to start over"):
        bench.PartialRun(path, _settings(bench, seed=1))
    assert path.is_file()
    # A run of other candidates (--only) leaves the saved one for the run it belongs to.
    again.add("content: substitute_tokens", ["three"], neutral_report(leak=0.0))
    again.finish(["content: substitute_tokens"])
    assert list(bench.PartialRun(path, _settings(bench)).done) == ["all: substitute_tokens"]
    again.finish(["all: substitute_tokens"])
    assert not path.exists()


def test_an_unreadable_partial_file_is_named_not_overwritten(bench, tmp_path) -> None:
    path = tmp_path / "partial.json"
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="not a partial run this script wrote"):
        bench.PartialRun(path, _settings(bench))
    path.write_text(json.dumps({"schema_version": 0, "candidates": {}}))
    with pytest.raises(SystemExit, match="another version of this script"):
        bench.PartialRun(path, _settings(bench))
    assert path.read_text() == json.dumps({"schema_version": 0, "candidates": {}})
