#!/usr/bin/env bash
# Browser test of the web console: real headless Chromium driven by playwright-core.
# Needs the local broker on 127.0.0.1:9092 (./scripts/test starts it). Installs what is
# missing: Debian's chromium, kcat and a CJK font (apt), playwright-core (npm ci, pinned in
# package-lock.json; it never downloads a browser). Builds target/debug/riskstream.
# Exits non-zero on any failure; prints what it checked. Screenshots: docs/console/*.png
#   tests/console/run.sh
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v kcat >/dev/null || need_apt+=(kcat)
# A CJK font, so the region names in the screenshots are not empty boxes.
fc-list :lang=zh 2>/dev/null | grep -q . || need_apt+=(fonts-wqy-zenhei)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund --loglevel=error
(cd "$root" && cargo build --quiet --bin riskstream)
RISKSTREAM_BIN="$root/target/debug/riskstream" node --test --test-reporter=spec console.test.mjs
