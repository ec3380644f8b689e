#!/usr/bin/env bash
# Debian's chromium and chromium-driver, for the live page's browser test (tests/test_serve.py): installed
# with apt when missing (no browser is downloaded by a test tool at run time).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-browser: Chromium and ChromeDriver are needed at /usr/bin (Debian: apt-get install chromium chromium-driver)" >&2; exit 1; }
run=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-browser: root (or sudo) is needed to apt-get install chromium chromium-driver" >&2; exit 1; }
  run=(sudo)
fi
echo "installing Debian's chromium and chromium-driver (the live page's browser test) ..."
export DEBIAN_FRONTEND=noninteractive
"${run[@]}" apt-get update -qq || true  # a stale package list: the install says what is missing
"${run[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
