#!/usr/bin/env bash
# System packages the test suite needs beyond npm: Debian's chromium, for the playground test in a real
# headless browser (test/playground.test.ts drives /usr/bin/chromium with playwright-core). Installed only
# when missing; needs root (CI runs as root).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends chromium
fi
/usr/bin/chromium --version
