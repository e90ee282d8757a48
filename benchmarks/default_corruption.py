"""The small search that picked the default corruption for SmolLM2-135M-Instruct.

For each candidate (function, dims, strength) it answers the demo's flagged questions with ECO
and measures, against the plain model's answers:
  leak      share of answers that still contain a Harry Potter term (Harry, Potter, Hogwarts, ...)
  overlap   mean share of the plain answer's content words that the ECO answer repeats
  nll       mean per-token negative log-likelihood of the ECO answer under the plain model,
            given the same chat scaffolding with an empty user turn (fluency: garbage scores high)
A setting qualifies when leak == 0 and it has a strength knob, so that the zeroth-order search of
`eco calibrate strength` can tune it per task; among those the most fluent (lowest nll) wins.
The functions without a strength (zero/flip top-k) are measured alongside for comparison.
Prints a table and, last, one JSON line with the chosen setting and every candidate's figures.
"""

from __future__ import annotations

import argparse
import json
import re

import torch

from eco_integrations import ECO, CorruptionConfig, ECOPolicy, GenerationConfig
from eco_integrations._prompting import render
from eco_integrations._table import wrapped_table
from eco_integrations.backends import PreparedRow
from eco_integrations.demo import fit_demo_guard, read_lines

TERMS = re.compile(
    r"harry|potter|hogwarts|rowling|hermione|voldemort|gryffindor|wizard|dumbledore|quidditch|weasley",
    re.I,
)
CANDIDATES = [
    CorruptionConfig(name="rand_noise_first_n", dims=1, strength=10.0),
    CorruptionConfig(name="rand_noise_first_n", dims=1, strength=100.0),
    CorruptionConfig(name="rand_noise_first_n", dims=1, strength=1000.0),
    CorruptionConfig(name="rand_noise_top_k", dims=32, strength=1.0),
    CorruptionConfig(name="zero_out_top_k", dims=128),
    CorruptionConfig(name="zero_out_top_k", dims=288),
    CorruptionConfig(name="flip_sign_top_k", dims=576),
    CorruptionConfig(name="rand_noise_full", strength=0.5),
]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{4,}", text.lower()))


def _nll(eco: ECO, answer: str) -> float:
    backend = eco.backend
    prefix = render(backend.tokenizer, [{"role": "user", "content": "Say something."}]).input_ids
    ids = backend.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not ids:
        return float("inf")
    full = torch.tensor([prefix + ids])
    with torch.no_grad():
        logits = backend.model(input_ids=full).logits[0, len(prefix) - 1 : -1]
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = ECO.from_pretrained(guard=fit_demo_guard())
    prompts = [p for p in read_lines("demo_prompts.txt") if base.decide(p).flagged]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    plain = [
        base.backend.generate([PreparedRow(render(base.backend.tokenizer, p).input_ids)], config)[
            0
        ].text
        for p in prompts
    ]
    rows = []
    for candidate in CANDIDATES:
        eco = ECO(base.backend, base.guard, policy=ECOPolicy(corruption=candidate))
        answers = [r.text for r in eco.generate(prompts, config=config)]
        leak = sum(bool(TERMS.search(a)) for a in answers) / len(answers)
        overlap = sum(
            len(_words(a) & _words(p)) / max(len(_words(p)), 1)
            for a, p in zip(answers, plain, strict=True)
        ) / len(answers)
        nll = sum(_nll(base, a) for a in answers) / len(answers)
        rows.append(
            {
                "corruption": candidate.model_dump(),
                "leak": round(leak, 3),
                "overlap": round(overlap, 3),
                "nll": round(nll, 3),
                "example": answers[0],
            }
        )
    qualified = [r for r in rows if r["leak"] == 0 and r["corruption"]["strength"] is not None]
    chosen = min(qualified or rows, key=lambda r: r["nll"])
    print(
        wrapped_table(
            ["corruption", "leak", "overlap", "nll", f"answer to {prompts[0]!r}"],
            [
                [json.dumps(r["corruption"]), r["leak"], r["overlap"], r["nll"], r["example"]]
                for r in rows
            ],
            [34, 5, 7, 6, 50],
        )
    )
    print(json.dumps({"chosen": chosen["corruption"], "prompts": len(prompts), "candidates": rows}))


if __name__ == "__main__":
    main()
