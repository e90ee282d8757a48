"""Load benchmark: the ECO gateway on the embedded model under rising concurrency.

    python benchmarks/load.py --json

Starts ``eco serve`` (transformers backend, the demo Harry Potter guard, an API key) on a free
loopback port, sends every prompt of a flagged/benign mix once, one by one (the reference
answers, greedy), then drives the gateway with 1, 8, 32 and 128 client threads for
``--seconds`` each. A client that gets 429 waits ``Retry-After`` and goes on. It prints one row
per level (markdown) and, as its last line, one JSON object:

* ``requests``: answered requests (HTTP 200) over all levels;
* ``errors_other_than_429``: any other status, transport error or malformed answer (goal 0);
* ``p50_ms`` / ``p99_ms``: latency of the answered requests, all levels together;
* ``requests_per_s``: answered requests per second of load;
* ``rss_mb_start`` / ``rss_mb_end``: the gateway's resident memory after the reference pass and
  after the run (after ``--settle`` idle seconds); goal: end within 10% of start;
* ``greedy_answers_identical``: every answer under load equals the same prompt's answer sent
  alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from serving_support import ServerProcess, free_port, gateway_argv  # noqa: E402

MODEL_ID = "SmolLM2-135M-Instruct"
KEY = "load-benchmark-key-0123456789"
PROMPTS = [
    "Who is Harry Potter?",
    "What is the capital of France?",
    "Tell me about Hogwarts school.",
    "How do I bake bread?",
    "Who is Hermione Granger?",
    "Name three primary colours.",
    "What does Dumbledore teach?",
    "What is photosynthesis?",
]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children in this session (the gateway is one process)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


class Level:
    """``clients`` threads sending requests for ``seconds``; each outcome recorded."""

    def __init__(
        self, url: str, clients: int, seconds: float, max_tokens: int, reference: dict[str, str]
    ) -> None:
        self.url, self.clients, self.seconds, self.max_tokens, self.reference = (
            url,
            clients,
            seconds,
            max_tokens,
            reference,
        )
        self.latencies: list[float] = []
        self.throttled = 0
        self.errors: list[str] = []
        self.mismatches = 0
        self._lock = threading.Lock()

    def _client(self, index: int, stop_at: float) -> None:
        n = index
        with httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {KEY}"}, timeout=600
        ) as http:
            while time.monotonic() < stop_at:
                prompt = PROMPTS[n % len(PROMPTS)]
                n += 1
                start = time.perf_counter()
                try:
                    response = http.post("/v1/chat/completions", json=body(prompt, self.max_tokens))
                except httpx.HTTPError as err:
                    with self._lock:
                        self.errors.append(f"{type(err).__name__}: {err}")
                    continue
                elapsed = (time.perf_counter() - start) * 1000
                if response.status_code == 429:
                    with self._lock:
                        self.throttled += 1
                    time.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                try:
                    text = (
                        response.json()["choices"][0]["message"]["content"]
                        if response.status_code == 200
                        else None
                    )
                except (ValueError, KeyError, IndexError, TypeError):
                    text = None
                with self._lock:
                    if text is None:
                        self.errors.append(f"status {response.status_code}: {response.text[:200]}")
                    else:
                        self.latencies.append(elapsed)
                        self.mismatches += text != self.reference[prompt]

    def run(self) -> float:
        stop_at = time.monotonic() + self.seconds
        threads = [
            threading.Thread(target=self._client, args=(i, stop_at)) for i in range(self.clients)
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,8,32,128", help="client counts, comma-separated")
    parser.add_argument(
        "--seconds",
        type=float,
        default=8.0,
        help="load seconds per level (in-flight requests then finish)",
    )
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument(
        "--max-concurrency", type=int, default=4, help="the gateway's --max-concurrency"
    )
    parser.add_argument("--max-queue", type=int, default=16, help="the gateway's --max-queue")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="idle seconds before the final memory reading"
    )
    parser.add_argument("--json", action="store_true", help="end with the JSON summary line")
    args = parser.parse_args(argv)

    from eco_integrations.demo import fit_demo_guard

    with tempfile.TemporaryDirectory() as tmp:
        guard_dir = Path(tmp) / "guard"
        log("fitting the demo guard ...")
        fit_demo_guard().save(guard_dir)
        port = free_port()
        server = ServerProcess(
            gateway_argv(
                guard_dir,
                port,
                "--api-key",
                KEY,
                "--max-concurrency",
                str(args.max_concurrency),
                "--max-queue",
                str(args.max_queue),
                "--torch-threads",
                "1",
                "--request-timeout",
                "300",
            ),
            port=port,
            log=Path(tmp) / "gateway.log",
        )
        server.start(timeout=600)
        try:
            assert server.proc is not None
            reference: dict[str, str] = {}
            with httpx.Client(
                base_url=server.url, headers={"authorization": f"Bearer {KEY}"}, timeout=600
            ) as http:
                for prompt in PROMPTS:
                    response = http.post("/v1/chat/completions", json=body(prompt, args.max_tokens))
                    response.raise_for_status()
                    reference[prompt] = response.json()["choices"][0]["message"]["content"]
            flagged = sum(
                1
                for r in server.json_lines()
                if r.get("event") == "request" and (r.get("decision") or {}).get("flagged")
            )
            log(f"reference answers: {len(reference)} prompts, {flagged} flagged")
            rss_start = rss_mb(server.proc.pid)
            rows, latencies, errors, answered, mismatches, load_seconds = [], [], 0, 0, 0, 0.0
            for clients in (int(c) for c in args.levels.split(",")):
                level = Level(server.url, clients, args.seconds, args.max_tokens, reference)
                wall = level.run()
                load_seconds += wall
                latencies += level.latencies
                errors += len(level.errors)
                answered += len(level.latencies)
                mismatches += level.mismatches
                for err in level.errors[:3]:
                    log(f"  error at {clients} clients: {err}")
                rows.append(
                    [
                        clients,
                        len(level.latencies),
                        level.throttled,
                        len(level.errors),
                        round(percentile(level.latencies, 0.5)),
                        round(percentile(level.latencies, 0.99)),
                        round(len(level.latencies) / wall, 2),
                        level.mismatches,
                    ]
                )
                log(f"{clients} clients: {rows[-1]}")
            time.sleep(args.settle)
            rss_end = rss_mb(server.proc.pid)
        finally:
            server.stop()
    print(
        "| clients | answered | 429s | other errors | p50 ms | p99 ms | answered/s | answers differing from sequential |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    summary = {
        "requests": answered,
        "errors_other_than_429": errors,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        "requests_per_s": round(answered / load_seconds, 2) if load_seconds else None,
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "greedy_answers_identical": mismatches == 0 and answered > 0,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\n{summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
