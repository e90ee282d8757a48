"""Prometheus metrics of one gateway, from ``prometheus-client`` (served at ``GET /metrics``).

Every label value is chosen by the operator or the gateway (route templates, status codes,
target names, guard ids), never by a client: no prompt text, no key, no client-sent model name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import Decision

ROUTES = (
    "/health",
    "/ready",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
)
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


def route_label(path: str) -> str:
    """The route template a path belongs to (a fixed set, so clients cannot grow the label space)."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"


class GatewayMetrics:
    """The gateway's counters, histograms and gauges in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "eco_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.decisions = Counter(
            "eco_decisions", "Guard decisions by outcome.", ["flagged", "corrupted"], registry=r
        )
        self.flagged = Counter(
            "eco_flagged", "Requests the guard flagged, by target.", ["target"], registry=r
        )
        self.corrupted = Counter(
            "eco_corrupted",
            "Requests answered from corrupted embeddings, by target.",
            ["target"],
            registry=r,
        )
        self.guard_errors = Counter(
            "eco_guard_errors",
            "Requests whose guard raised or gave a non-finite score.",
            registry=r,
        )
        self.rejected = Counter(
            "eco_rejected", "Requests refused before generation, by reason.", ["reason"], registry=r
        )
        self.guard_latency = Histogram(
            "eco_guard_decision_seconds",
            "Guard decision time per request.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.generation_latency = Histogram(
            "eco_generation_seconds",
            "Time from admission to the last token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "eco_tokens", "Tokens in (prompt) and out (completion).", ["direction"], registry=r
        )
        self.queue_depth = Gauge(
            "eco_queue_depth", "Requests waiting for a generation slot.", registry=r
        )
        self.in_flight = Gauge("eco_in_flight", "Requests holding a generation slot.", registry=r)
        self.guard_info = Info("eco_guard", "The guard and policy currently serving.", registry=r)
        self.guard_reloads = Counter(
            "eco_guard_reloads", "Guard reloads by outcome.", ["outcome"], registry=r
        )

    def observe_decisions(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            self.decisions.labels(
                flagged=str(d.flagged).lower(), corrupted=str(d.corrupted).lower()
            ).inc()
            if d.flagged and d.score is None:  # --on-guard-error corrupt: counted, then corrupted
                self.guard_errors.inc()
            if d.flagged:
                self.flagged.labels(target=d.target or "(guard error)").inc()
            if d.corrupted:
                self.corrupted.labels(target=d.target or "(guard error)").inc()
            self.guard_latency.observe(d.latency_ms / 1000)

    def observe_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens.labels(direction="in").inc(prompt_tokens)
        self.tokens.labels(direction="out").inc(completion_tokens)

    def set_guard(self, engine: Any) -> None:
        guard = engine.guard
        self.guard_info.info(
            {
                "guard_id": str(guard.guard_id if guard else "none"),
                "guard_version": str(guard.version if guard else "none"),
                "policy_version": str(engine.policy_version),
                "targets": ",".join(guard.target_names) if guard else "",
            }
        )

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
