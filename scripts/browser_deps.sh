#!/usr/bin/env bash
# What the browser tests need beside Python: Debian's Chromium and chromedriver (with apt, where this runs as
# root) and onnxruntime-web from npm. Whatever cannot be installed here makes its tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
      >/dev/null 2>&1 || echo "note: could not install chromium and chromium-driver; browser tests will skip"
  else
    echo "note: chromium and chromium-driver are missing and cannot be installed here; browser tests will skip"
  fi
fi
bash scripts/web_deps.sh
