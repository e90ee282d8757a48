#!/usr/bin/env bash
# The architecture as the layout shows it: the library never imports the research side, the CLI
# is a leaf, only the skins and the gateway import a framework, no import cycles.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" scripts/check_imports.py eco_integrations
echo "lint_imports: library free of research and framework imports, CLI a leaf, no cycles"
