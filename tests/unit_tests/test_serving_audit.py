"""Gateway findings of a read-only audit: keys that open the gateway, settings changed after it is
built, a reload that reset a policy set in code, names the guard does not read, sampling values
that failed inside torch, and an error naming the wrong field (tiny model, toy guard)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from gateway_support import BENIGN, FLAGGED, MODEL, access_records, chat_request, gateway_engine
from starlette.testclient import TestClient

from eco_integrations import ECO, ECOPolicy
from eco_integrations.exceptions import ConfigurationError
from eco_integrations.serving.app import Gateway, GatewaySettings
from eco_integrations.serving.reload import GuardWatcher

KEY = "sk-test-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def engine(tiny_backend, toy_guard) -> ECO:
    return gateway_engine(tiny_backend, toy_guard)


def _settings(**changes: Any) -> GatewaySettings:
    return GatewaySettings(model_id=MODEL, default_max_tokens=6, max_tokens_limit=64, **changes)


def test_keys_that_would_open_the_gateway_are_refused(engine: ECO) -> None:
    # One string would be one key per character: "Bearer a" would get in.
    with pytest.raises(ConfigurationError, match="api_keys is one string"):
        _settings(api_keys=KEY)  # type: ignore[arg-type]
    for bad in ("", "short"):
        with pytest.raises(ConfigurationError, match="not usable"):
            _settings(api_keys=(bad,))
    from eco_integrations.serving.cli import serve

    with pytest.raises(ConfigurationError, match="api_keys is one string"):
        serve("no-such-guard", api_keys=KEY)  # type: ignore[arg-type]
    with TestClient(Gateway(engine, settings=_settings(api_keys=(KEY,))).app) as client:
        for header in ("Bearer ", "Bearer s", "Bearer"):
            answer = client.post(
                "/v1/chat/completions", json=chat_request(), headers={"Authorization": header}
            )
            assert answer.status_code == 401, header


def test_settings_cannot_be_changed_on_a_built_gateway(engine: ECO) -> None:
    gateway = Gateway(engine, settings=_settings())
    with pytest.raises(dataclasses.FrozenInstanceError):
        gateway.settings.api_keys = (KEY,)  # type: ignore[misc]


def test_a_change_to_the_engine_served_is_served(
    engine: ECO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    engine.mode = "shadow"
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        client.post("/v1/chat/completions", json=chat_request(FLAGGED))
        engine.mode = "enforce"  # the shadow rollout ends
        client.post("/v1/chat/completions", json=chat_request(FLAGGED))
    decisions = [r["decision"] for r in access_records(caplog)]
    assert [(d["mode"], d["corrupted"]) for d in decisions] == [
        ("shadow", False),
        ("enforce", True),
    ]


def test_a_reload_keeps_a_policy_set_in_code(tiny_backend, toy_guard, tmp_path) -> None:
    folder = toy_guard.save(tmp_path / "guard")  # no policy.json in it
    policy = ECOPolicy(threshold=0.99)
    gateway = Gateway(ECO(tiny_backend, toy_guard, policy=policy), settings=_settings())
    before = gateway.state.engine
    watcher = GuardWatcher(gateway, folder, interval=None)
    watcher.poke()  # SIGHUP: a check whether or not the folder changed
    watcher.check()
    assert watcher.last_error is None
    assert gateway.state.engine.policy.threshold == 0.99  # type: ignore[union-attr]
    assert gateway.state.engine.policy_version == before.policy_version  # type: ignore[union-attr]


def test_a_message_name_must_be_an_identifier(engine: ECO) -> None:
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        body = chat_request(BENIGN)
        body["messages"][0]["name"] = FLAGGED  # a template that renders names would show it
        refused = client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "messages.0.name"
        body["messages"][0]["name"] = "alice_01"
        assert client.post("/v1/chat/completions", json=body).status_code == 200


def test_sampling_values_that_would_fail_in_torch(engine: ECO) -> None:
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        greedy = client.post("/v1/chat/completions", json=chat_request()).json()
        tiny = client.post("/v1/chat/completions", json=chat_request(temperature=1e-45))
        assert tiny.status_code == 200  # below 1e-5 decodes greedily, as vLLM does
        assert tiny.json()["choices"][0]["message"] == greedy["choices"][0]["message"]
        for penalty in (1e-300, 1e300):
            answer = client.post(
                "/v1/chat/completions", json=chat_request(repetition_penalty=penalty)
            )
            assert answer.status_code == 400, penalty
            assert "repetition_penalty" in answer.json()["error"]["message"]


def test_a_completion_too_long_names_the_prompt(engine: ECO) -> None:
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        body = {"model": MODEL, "prompt": "bread " * 400, "max_tokens": 4}
        error = client.post("/v1/completions", json=body).json()["error"]
        assert (error["code"], error["param"]) == ("context_length_exceeded", "prompt")
