"""What ECO costs on top of the plain model, measured side by side in one run.

Prints one JSON object as its last line (with --json):
  guard_p50_ms         median latency of one guard decision (single prompt)
  guard_prompts_per_s  guard throughput, batched
  benign_over_plain    time of a benign request through the engine / the same request to the plain model
  corrupt_over_benign  time per generated token of a flagged, corrupted request / the same request uncorrupted
Runs are interleaved (plain, engine, plain, engine, ...) so drift in machine load hits both sides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from eco_integrations import ECO, GenerationConfig
from eco_integrations._prompting import render
from eco_integrations.backends import PreparedRow
from eco_integrations.demo import fit_demo_guard, read_lines
from eco_integrations.encoder import PRECISIONS, SentenceEncoder


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved generation pairs")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--encoder-precision",
        choices=PRECISIONS,
        default="float32",
        help="the demo guard's encoder precision (its threshold is fit in it too)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    guard = fit_demo_guard(encoder=SentenceEncoder(precision=args.encoder_precision))
    eco = ECO.from_pretrained(guard=guard)
    guard, backend = eco.guard, eco.backend
    retain = read_lines("harry_potter_retain.txt")
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)

    for text in retain[:10]:  # warm-up
        guard.decide(text)
    single = [_timed(lambda t=t: guard.decide(t))[0] * 1000 for t in retain[:100]]
    batch_texts = (retain * 4)[:512]
    batch_seconds, _ = _timed(lambda: guard.decide_many(batch_texts))

    benign = "What is the capital of France, and what is it famous for?"
    flagged = "Who is Harry Potter and what happens in the first book?"
    assert not eco.decide(benign).flagged and eco.decide(flagged).flagged
    benign_ids = render(backend.tokenizer, benign).input_ids
    plain_times, engine_times, corrupt_per_token, clean_per_token = [], [], [], []
    eco.generate([benign], config=GenerationConfig(max_new_tokens=4))  # warm-up
    for _ in range(args.repeats):
        t, plain = _timed(lambda: backend.generate([PreparedRow(benign_ids)], config)[0])
        plain_times.append(t)
        t, through = _timed(lambda: eco.generate([benign], config=config)[0])
        engine_times.append(t)
        assert through.text == plain.text, "a benign answer must equal the plain model's"
        t, corrupted = _timed(lambda: eco.generate([flagged], config=config)[0])
        corrupt_per_token.append(t / max(corrupted.completion_tokens, 1))
        t, clean = _timed(lambda: eco.generate([flagged], config=config, mode="shadow")[0])
        clean_per_token.append(t / max(clean.completion_tokens, 1))

    result = {
        "guard_p50_ms": round(statistics.median(single), 2),
        "guard_prompts_per_s": round(len(batch_texts) / batch_seconds, 1),
        "benign_over_plain": round(
            statistics.median(engine_times) / statistics.median(plain_times), 3
        ),
        "corrupt_over_benign": round(
            statistics.median(corrupt_per_token) / statistics.median(clean_per_token), 3
        ),
        "plain_s": round(statistics.median(plain_times), 3),
        "engine_benign_s": round(statistics.median(engine_times), 3),
        "max_new_tokens": args.max_new_tokens,
        "encoder_precision": args.encoder_precision,
        "repeats": args.repeats,
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:22} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
