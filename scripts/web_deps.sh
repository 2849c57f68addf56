#!/usr/bin/env bash
# Install what `charnn export --format web` bundles and the browser tests load: onnxruntime-web, at the
# version pinned in web/package.json (web/package-lock.json holds its integrity hash), into web/node_modules
# (ignored by git). Without npm this says so and the web export and its tests are skipped; the rest of
# charnn never needs npm.
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v npm >/dev/null; then
  echo "note: npm is missing; export --format web and its browser tests will skip (install Node.js for them)"
  exit 0
fi
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error \
  || echo "note: could not install onnxruntime-web from npm; export --format web and its tests will skip"
