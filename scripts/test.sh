#!/usr/bin/env bash
# The test command: a virtual environment with the train + test extras, then pytest.
# Where it runs as root with apt (CI, fresh machines), it first installs Debian's
# chromium + chromium-driver for the browser test; elsewhere that test skips.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
    || echo "chromium not installed: the browser test will skip" >&2
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[train,test]'
exec .venv/bin/python -m pytest "$@"
