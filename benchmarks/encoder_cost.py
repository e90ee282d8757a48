"""Where the guard's milliseconds go: the embedded encoder's forward pass against prompt length.

Times one forward pass of the default encoder (the guard's largest cost; ``--encoder`` for
another, e.g. all-mpnet-base-v2 after ``make eval-encoder``) on single prompts of
several token counts and fits ``fixed + per_token * tokens`` by least squares. A large fixed part
is paid by every prompt, however short: per-operation overhead and the weights' memory traffic,
not arithmetic on the prompt's tokens.

Prints one JSON object as its last line (with --json):
  forward_ms_by_tokens  {tokens: median ms of one forward pass}
  fixed_ms              the fitted cost of a pass whatever the length
  per_token_ms          the fitted cost of each token more
  weight_mb             megabytes of float32 encoder weights (embedding tables excluded)
  encoder               the encoder's name
Measure on an otherwise idle machine; --threads sets torch's thread count (default: torch's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from eco_integrations.encoder import PRECISIONS, SentenceEncoder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default="4,11,32,64,128", help="token counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=40, help="timed passes per length")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--precision",
        default="float32",
        choices=PRECISIONS,
        help="the encoder's matmul precision (the guard's default is float32)",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="a sentence-transformers folder or all-mpnet-base-v2 (default: all-MiniLM-L6-v2)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    if any(n < 3 for n in lengths) or args.repeats < 1:
        parser.error("--lengths must be >= 3 tokens each (two are special tokens); --repeats >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    encoder = SentenceEncoder(args.encoder, precision=args.precision)
    model, tokenizer, *_ = encoder.load()
    forward = encoder._forward
    weight_mb = (
        sum(
            p.numel() * p.element_size()
            for n, p in model.named_parameters()
            if "embeddings" not in n
        )
        / 1e6
    )
    medians: dict[int, float] = {}
    for n in lengths:
        # One word piece per filler word, plus the two special tokens around them.
        batch = tokenizer([" ".join(["word"] * (n - 2))], return_tensors="pt")
        with torch.inference_mode():
            for _ in range(5):  # warm-up
                forward(batch)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                forward(batch)
                times.append((time.perf_counter() - start) * 1000)
        length = int(batch["input_ids"].shape[1])
        medians[length] = round(statistics.median(times), 2)
        if not args.json:
            print(f"{length:>5} tokens: {medians[length]} ms")

    tokens = np.array(list(medians), dtype=np.float64)
    ms = np.array(list(medians.values()))
    per_token, fixed = np.polyfit(tokens, ms, 1) if len(medians) > 1 else (float("nan"), ms[0])
    result = {
        "forward_ms_by_tokens": {str(k): v for k, v in medians.items()},
        "fixed_ms": round(float(fixed), 2),
        "per_token_ms": round(float(per_token), 3),
        "weight_mb": round(weight_mb, 1),
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "encoder": encoder.name,
    }
    print(json.dumps(result) if args.json else result)


if __name__ == "__main__":
    main()
