#!/usr/bin/env bash
# The engine must stay framework-free: only the integration packages may import LangChain or LlamaIndex.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(grep -rnE '^\s*(from|import)\s+(langchain|langchain_core|langgraph|llama_index)\b' eco_integrations \
      --include='*.py' | grep -vE '^eco_integrations/(langchain|llama_index)/' || true)
if [ -n "$bad" ]; then
  echo "Framework imports outside eco_integrations/langchain and eco_integrations/llama_index:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "lint_imports: engine is framework-free"
