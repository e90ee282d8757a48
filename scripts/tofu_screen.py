"""Screen corruption settings on TOFU's calibration half before running the full comparison.

Usage (after ``eco eval tofu`` has fine-tuned the models for the split, or it fine-tunes them)::

    python scripts/tofu_screen.py --split forget05 --data-dir ../shared/data --out /tmp/tofu-screen

Every setting corrupts every calibration question (prompt and answer tokens, as the search
does) and is compared with the retained model by the folded and unfolded forget quality (KS
p-value of the truth ratios) and by the distance between log truth ratios that the search
minimises. Only the calibration half is scored, the half the strength
search itself sees, so picking a corruption family with this script does not peek at the
evaluation half that ``eco eval tofu`` reports. Prints a Markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# name:key=value:key=value ... as the CorruptionConfig fields.
DEFAULT_SETTINGS = (
    "rand_noise_first_n:dims=1:strength=3",
    "rand_noise_first_n:dims=1:strength=10",
    "zero_out_top_k:dims=24",
    "zero_out_top_k:dims=48",
    "zero_out_top_k:dims=144",
    "flip_sign_top_k:dims=48",
    "rand_noise_full:strength=0.1",
    "rand_noise_full:strength=0.25",
)


def parse_setting(text: str) -> dict[str, Any]:
    """``"zero_out_top_k:dims=48"`` -> ``{"name": "zero_out_top_k", "dims": 48}``."""
    name, *pairs = text.split(":")
    setting: dict[str, Any] = {"name": name}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in ("dims", "strength"):
            msg = f"Bad setting {text!r}: write name:dims=K and/or name:strength=S, e.g. rand_noise_full:strength=0.25."
            raise SystemExit(msg)
        setting[key] = int(value) if key == "dims" else float(value)
    return setting


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="forget05", choices=["forget01", "forget05", "forget10"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--out",
        default="eco-tofu-screen",
        help="folder for the guard and the scorers' caches (an `eco eval tofu --out` folder is fine)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=None,
        help=f"corruption to try (repeat); default: {', '.join(DEFAULT_SETTINGS)}",
    )
    parser.add_argument("--selector", default="content", choices=["content", "all", "entities"])
    parser.add_argument(
        "--shared-draws",
        action="store_true",
        help="score every answer against one corrupted question, as `eco eval tofu --shared-draws`",
    )
    parser.add_argument(
        "--corruption-draws",
        type=int,
        default=1,
        metavar="K",
        help="score each answer under K draws of the corruption (log mean probability), as `eco eval tofu --corruption-draws`",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from eco_integrations.config import CorruptionConfig, ECOPolicy, SelectionConfig
    from eco_integrations.exceptions import ConfigurationError
    from eco_integrations.research.tofu.pipeline import (
        TofuOptions,
        _check_options,
        _model_scorer,
        _prepare,
        calibration_ratios,
        fit_guard,
        match_scores,
    )
    from eco_integrations.research.tofu.scoring import ECOScorer
    from eco_integrations.research.tofu.training import train_models

    options = TofuOptions(
        split=args.split,
        data_dir=args.data_dir,
        shared_draws=args.shared_draws,
        corruption_draws=args.corruption_draws,
    )
    try:
        _check_options(options)  # the bounds `eco eval tofu` checks, before any work
    except ConfigurationError as error:
        raise SystemExit(str(error)) from None
    settings = [parse_setting(s) for s in (args.setting or DEFAULT_SETTINGS)]
    policies = [
        ECOPolicy(corruption=CorruptionConfig(**s), selection=SelectionConfig(name=args.selector))
        for s in settings
    ]  # fail before any work
    out = Path(args.out)
    setting, _, _, cal_rows, _ = _prepare(options)
    runs = train_models(
        setting,
        model=options.model,
        config=options.finetune,
        out=options.finetune_out,
        show_progress=True,
    )
    original = _model_scorer(
        runs["original"].model_folder, "original", options.finetune.system_prompt, options, out
    )
    retained = _model_scorer(
        runs["retained"].model_folder, "retained", options.finetune.system_prompt, options, out
    )
    guard = fit_guard(
        setting, options, out / "guard"
    )  # not consulted (every question is corrupted), but the scorer needs one

    def ratios(scorer: Any) -> list[float]:
        return calibration_ratios(scorer, cal_rows, options)

    reference = ratios(retained)

    def row(label: str, values: list[float], seconds: float) -> dict[str, Any]:
        q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
        scores = match_scores(values, reference)
        return {
            "setting": label,
            "forget_quality": scores["folded"],
            "forget_quality_unfolded": scores["unfolded"],
            "log_ratio_distance": scores["distance"],
            "ratio_p10": float(q10),
            "ratio_p50": float(q50),
            "ratio_p90": float(q90),
            "seconds": round(seconds, 1),
        }

    rows = [row("retained (reference)", reference, 0.0)]
    started = time.perf_counter()
    rows.append(row("original (no corruption)", ratios(original), time.perf_counter() - started))
    for text, policy in zip(args.setting or DEFAULT_SETTINGS, policies, strict=True):
        started = time.perf_counter()
        rows.append(
            row(
                text,
                ratios(
                    ECOScorer(
                        original,
                        guard,
                        policy,
                        force=True,
                        shared_draws=options.shared_draws,
                        corruption_draws=options.corruption_draws,
                    )
                ),
                time.perf_counter() - started,
            )
        )
        print(
            f"{text}: folded forget quality {rows[-1]['forget_quality']:.3g} ({rows[-1]['seconds']} s)",
            file=sys.stderr,
            flush=True,
        )

    print(
        f"{args.split}, calibration half ({len(cal_rows)} questions), selector {args.selector}, every question corrupted"
        f"{', one draw of the question for every answer' if args.shared_draws else ''}"
        f"{f', each answer scored under {args.corruption_draws} draws' if args.corruption_draws > 1 else ''}\n"
    )
    print(
        "| setting | forget quality (folded) | forget quality (unfolded) | log-ratio distance | truth ratio p10 / p50 / p90 | seconds |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['forget_quality']:.3g} | {r['forget_quality_unfolded']:.3g} | {r['log_ratio_distance']:.3f} | "
            f"{r['ratio_p10']:.2f} / {r['ratio_p50']:.2f} / {r['ratio_p90']:.2f} | {r['seconds']} |"
        )
    print(
        json.dumps(
            {
                "split": args.split,
                "n_calibration": len(cal_rows),
                "selector": args.selector,
                "shared_draws": args.shared_draws,
                "corruption_draws": args.corruption_draws,
                "settings": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
