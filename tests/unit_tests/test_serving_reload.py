"""Forget targets changed live: the gateway watches its guard folder and swaps atomically.

Requests in flight finish with the guard they started with, the next one sees the new guard,
every decision record names its guard version, a bad folder is refused while the old guard keeps
serving, and two replicas watching one folder both pick up a change without a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "starlette", reason="pip install 'eco-integrations[serve]' to run the gateway tests"
)
pytest.importorskip(
    "prometheus_client", reason="pip install 'eco-integrations[serve]' to run the gateway tests"
)
from gateway_support import MODEL, chat_request
from starlette.testclient import TestClient

from eco_integrations import ECO, CorruptionConfig, ECOPolicy, Guard
from eco_integrations.serving.app import Gateway, GatewaySettings
from eco_integrations.serving.reload import GuardWatcher

BAKING = "How do I bake bread?"
BAKING_FORGET = [
    "How do I bake bread?",
    "Bread needs yeast.",
    "Knead the dough.",
    "Oven temperature for bread?",
]


@pytest.fixture
def folder(toy_guard, tmp_path) -> Path:
    return toy_guard.save(tmp_path / "guard")


def _gateway(tiny_backend, folder: Path, tiny_encoder) -> Gateway:
    engine = ECO(
        tiny_backend,
        Guard.load(folder, encoder=tiny_encoder),
        policy=ECOPolicy(
            corruption=CorruptionConfig(name="rand_noise_first_n", dims=8, strength=50.0)
        ),
    )
    return Gateway(engine, settings=GatewaySettings(model_id=MODEL, max_tokens_limit=200))


def _add_baking(folder: Path, tiny_encoder) -> int:
    from toy_data import TOY_FORGET, TOY_RETAIN

    guard = Guard.load(folder, encoder=tiny_encoder)
    guard.add_target(
        "baking",
        BAKING_FORGET,
        TOY_RETAIN[:1] + TOY_RETAIN[2:] + TOY_FORGET[:2],
        cv=2,
        target_fpr=0.2,
    )
    guard.save(folder)
    return guard.version


def test_swap_is_atomic_and_every_record_names_its_guard(
    tiny_backend, tiny_model, tiny_encoder, folder, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    gateway = _gateway(tiny_backend, folder, tiny_encoder)
    watcher = GuardWatcher(gateway, folder, interval=None)
    assert watcher.check() is False  # nothing changed yet
    original = tiny_model.forward

    def slow_forward(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "forward", slow_forward)
    with TestClient(gateway.app) as client:
        in_flight: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: in_flight.update(
                r=client.post("/v1/chat/completions", json=chat_request(BAKING, max_tokens=30))
            )
        )
        worker.start()
        time.sleep(0.3)  # the request is generating with guard version 1
        new_version = _add_baking(folder, tiny_encoder)
        assert watcher.check() is True
        after = client.post("/v1/chat/completions", json=chat_request(BAKING, max_tokens=4))
        worker.join(timeout=30)
        assert in_flight["r"].status_code == 200 and after.status_code == 200
        ready = client.get("/ready").json()
        assert ready["policy_version"].startswith(f"toyguard0001@{new_version}/")
        assert 'eco_guard_reloads_total{outcome="swapped"} 1.0' in client.get("/metrics").text
    records = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "eco_integrations.serving.access"
    ]
    versions = {r["request_id"]: r["decision"]["guard_version"] for r in records}
    assert versions[in_flight["r"].json()["id"]] == 1  # finished with the guard it started with
    assert versions[after.json()["id"]] == new_version


@pytest.mark.parametrize("damage", ["tampered file", "bad threshold", "half-written"])
def test_a_bad_folder_is_refused_and_the_old_guard_keeps_serving(
    tiny_backend, tiny_encoder, folder, damage, caplog
) -> None:
    gateway = _gateway(tiny_backend, folder, tiny_encoder)
    watcher = GuardWatcher(gateway, folder, interval=None)
    serving = gateway.state.engine.policy_version
    if damage == "tampered file":
        vocab = folder / "targets" / "000" / "vocabulary.json"
        vocab.write_text(vocab.read_text().replace('"word": ["', '"word": ["tampered', 1))
        (folder / "manifest.json").touch()
        (folder / "manifest.json").write_text((folder / "manifest.json").read_text() + "\n")
    elif damage == "bad threshold":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["targets"][0]["threshold"] = 2.0
        (folder / "manifest.json").write_text(json.dumps(manifest))
    else:
        (folder / "manifest.json").write_text(
            '{"schema_version": 2, "kind": "eco-guard", "guard_id": "toyg'
        )
    with caplog.at_level(logging.ERROR, logger="eco_integrations.serving.reload"):
        assert watcher.check() is False
    assert (
        watcher.last_error
        and "ArtifactError" in watcher.last_error
        and "old guard keeps serving" in caplog.text
    )
    with TestClient(gateway.app) as client:
        assert (
            client.post("/v1/chat/completions", json=chat_request(BAKING, max_tokens=4)).status_code
            == 200
        )
        assert client.get("/ready").json()["policy_version"] == serving
        assert 'eco_guard_reloads_total{outcome="refused"} 1.0' in client.get("/metrics").text


def test_two_replicas_watching_one_folder_both_swap(tiny_backend, tiny_encoder, folder) -> None:
    replicas = [_gateway(tiny_backend, folder, tiny_encoder) for _ in range(2)]
    watchers = [GuardWatcher(g, folder, interval=0.1) for g in replicas]
    for w in watchers:
        w.start()
    try:
        with TestClient(replicas[0].app) as first, TestClient(replicas[1].app) as second:
            before = [c.get("/ready").json()["policy_version"] for c in (first, second)]
            new_version = _add_baking(folder, tiny_encoder)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                now = [c.get("/ready").json()["policy_version"] for c in (first, second)]
                if all(v.startswith(f"toyguard0001@{new_version}/") for v in now):
                    break
                time.sleep(0.1)
            assert before[0] == before[1] and now[0] == now[1] and now[0] != before[0]
            for client in (first, second):
                body = client.post(
                    "/v1/chat/completions", json=chat_request(BAKING, max_tokens=4)
                ).json()
                assert body["object"] == "chat.completion"
    finally:
        for w in watchers:
            w.stop()


def test_sighup_poke_reloads_without_polling(tiny_backend, tiny_encoder, folder) -> None:
    gateway = _gateway(tiny_backend, folder, tiny_encoder)
    watcher = GuardWatcher(gateway, folder, interval=None)  # eco serve without --watch: SIGHUP only
    watcher.start()
    try:
        new_version = _add_baking(folder, tiny_encoder)
        time.sleep(0.5)
        assert gateway.state.engine.guard.version == 1  # nothing polls
        watcher.poke()  # what the SIGHUP handler calls
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and gateway.state.engine.guard.version != new_version:
            time.sleep(0.1)
        assert gateway.state.engine.guard.version == new_version
    finally:
        watcher.stop()


def test_a_refit_keeping_its_id_and_version_is_swapped_in(
    tiny_backend, tiny_encoder, folder
) -> None:
    from toy_data import TOY_FORGET, TOY_RETAIN

    gateway = _gateway(tiny_backend, folder, tiny_encoder)
    watcher = GuardWatcher(gateway, folder, interval=None)
    before = gateway.state.engine.guard
    # Re-fit under the same id at version 1, with another rate: another threshold, same label.
    refit = Guard(tiny_encoder, guard_id=before.guard_id)
    refit.add_target("harry-potter", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.4)
    assert refit.version == before.version
    refit.save(folder)
    assert watcher.check() is True
    served = gateway.state.engine.guard
    assert served.content_sha256 != before.content_sha256
    assert served.targets["harry-potter"].threshold_ == refit.targets["harry-potter"].threshold_
    # Touching the files without changing them swaps nothing.
    Guard.load(folder, encoder=tiny_encoder).save(folder)
    assert watcher.check() is False
