#!/usr/bin/env bash
# Install charnn with its test tools and what the browser tests need (Chromium, chromedriver, onnxruntime-web;
# each where it can be installed, else its tests skip saying why), then lint (ruff, import-linter's layer contracts) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser_deps.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -q -n 2 "$@"
