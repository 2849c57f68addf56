#!/usr/bin/env bash
# Install charnn, train the `small` preset on the built-in tiny Shakespeare (~2 minutes on 2 CPU cores),
# then generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/charnn train --preset small --out runs/demo --overwrite
.venv/bin/charnn evaluate runs/demo
.venv/bin/charnn generate runs/demo --start "ROMEO: " --length 500 --seed 1
