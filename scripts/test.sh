#!/usr/bin/env bash
# Install charnn with its test tools, then lint (ruff, import-linter's layer contracts) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -q -n 2 "$@"
