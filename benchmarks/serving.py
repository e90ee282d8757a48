"""Serving benchmark: vLLM prompt embeddings vs text, and the ECO gateway's overhead and throughput.

Run in the vLLM environment (``bash scripts/setup_vllm_env.sh`` builds it)::

    .venv-vllm/bin/python benchmarks/serving.py --json

It starts a vLLM OpenAI-compatible server (``--enable-prompt-embeds``) and an ECO gateway in
front of it, both on loopback, measures, and stops both. The last stdout line is one JSON object:

* ``vllm_embeds_over_text``: throughput of 32 concurrent flagged requests sent as (corrupted)
  prompt embeddings over the same requests sent as token ids; rounds alternate and the median
  ratio is reported. ``ignore_eos`` makes both sides generate exactly ``--max-tokens`` tokens,
  so the ratio compares equal work. Goal >= 0.8.
* ``gateway_overhead_ms_p50``: median over paired requests of (client -> gateway -> vLLM) minus
  (client -> vLLM ``/v1/chat/completions``) for the same benign messages. Goal <= 15 ms.
* ``gateway_requests_per_s``: completed requests per second through the gateway under 32
  concurrent clients (a quarter of the prompts flagged).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from serving_support import LOOPBACK, ServerProcess, free_port, gateway_argv, vllm_argv  # noqa: E402

from eco_integrations import ECO, GenerationConfig  # noqa: E402
from eco_integrations._models import default_model_folder  # noqa: E402
from eco_integrations._prompting import (  # noqa: E402
    render,
    select_positions,
)
from eco_integrations.backends import PreparedRow  # noqa: E402
from eco_integrations.backends.vllm import VLLMBackend  # noqa: E402
from eco_integrations.corruption import apply_corruption  # noqa: E402
from eco_integrations.demo import fit_demo_guard, read_lines  # noqa: E402

MODEL_ID = "SmolLM2-135M-Instruct"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def corrupted_rows(eco: ECO, prompts: list[str], seed: int = 0) -> list[PreparedRow]:
    """The rows ECO would send for these prompts if all were flagged (same selection and corruption)."""
    rows = []
    policy = eco.policy
    terms = eco.guard.terms.get("harry-potter", []) if eco.guard else []
    for i, prompt in enumerate(prompts):
        rendered = render(eco.backend.tokenizer, prompt)
        mask = select_positions(rendered, policy.selection, terms)
        c = policy.corruption
        embeds = apply_corruption(
            c.name,
            eco.backend.embed(rendered.input_ids),
            mask,
            dims=c.dims,
            strength=c.strength,
            generator=torch.Generator().manual_seed(seed + i),
        )
        rows.append(PreparedRow(rendered.input_ids, embeds, seed + i))
    return rows


def throughput(client: httpx.Client, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """Requests per second for ``bodies`` sent ``concurrency`` at a time to vLLM's completions."""

    def send(body: dict[str, Any]) -> None:
        response = client.post("/v1/completions", json=body)
        response.raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, bodies))
    return len(bodies) / (time.perf_counter() - start)


def timed_post(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    response = client.post(url, json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--json", action="store_true", help="print only the JSON summary line on stdout"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating text/embeds rounds")
    parser.add_argument("--pairs", type=int, default=40, help="paired requests for the overhead")
    parser.add_argument("--gateway-requests", type=int, default=96)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    folder = default_model_folder()
    work = Path(tempfile.mkdtemp(prefix="eco-bench-"))
    guard = fit_demo_guard()
    guard.save(work / "guard")
    vllm_port, gateway_port = free_port(), free_port()
    vllm = ServerProcess(
        vllm_argv(folder, vllm_port, "--served-model-name", MODEL_ID),
        port=vllm_port,
        log=work / "vllm.log",
        ready_path="/health",
    )
    gateway = ServerProcess(
        gateway_argv(
            work / "guard",
            gateway_port,
            "--vllm-url",
            f"http://{LOOPBACK}:{vllm_port}",
            "--model",
            str(folder),
            "--model-id",
            MODEL_ID,
        ),
        port=gateway_port,
        log=work / "gateway.log",
    )
    try:
        log("starting vLLM (CPU, float32) ...")
        vllm.start(timeout=900)
        log("starting the ECO gateway ...")
        gateway.start(timeout=300)
        backend = VLLMBackend.from_server(vllm.url, model=str(folder))
        eco = ECO(backend, guard)
        limits = httpx.Limits(
            max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2
        )
        client = httpx.Client(base_url=vllm.url, timeout=600, limits=limits)

        # 1. prompt embeddings vs token ids, same flagged prompts, equal generated length.
        forget = read_lines("harry_potter_forget.txt")[: args.concurrency]
        rows = corrupted_rows(eco, forget)
        config = GenerationConfig(max_new_tokens=args.max_tokens, temperature=0.0)
        transport = backend.transport
        as_text = [
            {**transport.body(PreparedRow(r.input_ids), config), "ignore_eos": True} for r in rows
        ]
        as_embeds = [{**transport.body(r, config), "ignore_eos": True} for r in rows]
        throughput(client, as_text[:4], 4)  # warm-up
        ratios, text_rps, embeds_rps = [], [], []
        for i in range(args.rounds):
            t = throughput(client, as_text, args.concurrency)
            e = throughput(client, as_embeds, args.concurrency)
            text_rps.append(t)
            embeds_rps.append(e)
            ratios.append(e / t)
            log(f"round {i + 1}: text {t:.2f} req/s, embeds {e:.2f} req/s, ratio {e / t:.3f}")
        prompt_tokens = statistics.mean(len(r.input_ids) for r in rows)
        text_bytes = statistics.mean(len(json.dumps(b["prompt"])) for b in as_text)
        embeds_bytes = statistics.mean(len(b["prompt_embeds"]) for b in as_embeds)
        raw_embed_bytes = statistics.mean(r.embeds.numel() * 4 for r in rows)  # type: ignore[union-attr]

        # 2. gateway overhead: paired sequential requests, order alternating.
        benign = read_lines("harry_potter_retain.txt")
        gw = httpx.Client(base_url=gateway.url, timeout=600)
        direct_ms, gateway_ms, deltas = [], [], []
        for i in range(args.pairs + 2):
            body = {
                "model": MODEL_ID,
                "messages": [{"role": "user", "content": benign[i % len(benign)]}],
                "max_tokens": 8,
                "temperature": 0,
            }
            if i % 2:
                g = timed_post(gw, "/v1/chat/completions", body)
                d = timed_post(client, "/v1/chat/completions", body)
            else:
                d = timed_post(client, "/v1/chat/completions", body)
                g = timed_post(gw, "/v1/chat/completions", body)
            if i >= 2:  # the first pairs warm caches and connections
                direct_ms.append(d)
                gateway_ms.append(g)
                deltas.append(g - d)
        overhead = statistics.median(deltas)
        log(
            f"latency p50: direct {statistics.median(direct_ms):.1f} ms, via gateway {statistics.median(gateway_ms):.1f} ms, "
            f"paired overhead p50 {overhead:.1f} ms"
        )

        # 3. gateway throughput under concurrent clients.
        prompts = [(forget if i % 4 == 0 else benign)[i % 32] for i in range(args.gateway_requests)]
        gw_pool = httpx.Client(base_url=gateway.url, timeout=600, limits=limits)

        def ask(prompt: str) -> None:
            response = gw_pool.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL_ID,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 8,
                    "temperature": 0,
                },
            )
            response.raise_for_status()

        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(ask, prompts))
        gateway_rps = len(prompts) / (time.perf_counter() - start)
        log(f"gateway: {gateway_rps:.2f} req/s under {args.concurrency} concurrent clients")
        flagged = sum(1 for r in gateway.json_lines() if r.get("decision", {}).get("corrupted"))
    finally:
        gateway.stop()
        vllm.stop(grace=60)

    summary = {
        "vllm_embeds_over_text": round(statistics.median(ratios), 3),
        "vllm_text_requests_per_s": round(statistics.median(text_rps), 2),
        "vllm_embeds_requests_per_s": round(statistics.median(embeds_rps), 2),
        "gateway_overhead_ms_p50": round(overhead, 2),
        "direct_latency_ms_p50": round(statistics.median(direct_ms), 1),
        "gateway_latency_ms_p50": round(statistics.median(gateway_ms), 1),
        "gateway_requests_per_s": round(gateway_rps, 2),
        "gateway_flagged_requests": flagged,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "mean_prompt_tokens": round(prompt_tokens, 1),
        "token_ids_json_bytes": round(text_bytes),
        "prompt_embeds_raw_bytes": round(raw_embed_bytes),
        "prompt_embeds_base64_bytes": round(embeds_bytes),
        "cpu_count": os.cpu_count(),
    }
    if not args.json:
        for key, value in summary.items():
            print(f"{key:30} {value}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
