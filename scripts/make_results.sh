#!/usr/bin/env bash
# Regenerate docs/results/: every guard task (JSON, Markdown, histogram and ROC PNGs), the MCQ
# evaluation (default 400 + 400 sample; resumable, so re-running continues an interrupted run;
# per-question results stay in the user cache, out of the repo), and
# docs/results/README_results.md built from the JSON the commands wrote.
#   usage: scripts/make_results.sh [DATA_DIR] [OUT]
set -euo pipefail
DATA_DIR="${1:-../shared/data}"
OUT="${2:-docs/results}"
cd "$(dirname "$0")/.."
. .venv/bin/activate
python -m eco_integrations.research.eval.report --data-dir "$DATA_DIR" --out "$OUT" --mcq
