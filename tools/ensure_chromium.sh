#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser test (tests/test_browser.py) when it is missing.
# Uses apt-get directly as root, or through sudo when that is available; prints the browser's path.
set -euo pipefail
find_chromium() { command -v chromium || command -v chromium-browser || command -v google-chrome || true; }
exe=$(find_chromium)
if [ -z "$exe" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "ensure_chromium: chromium is missing and neither root nor sudo is available to install it" >&2; exit 1; fi
  echo "ensure_chromium: installing chromium with apt-get" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
  exe=$(find_chromium)
fi
[ -n "$exe" ] || { echo "ensure_chromium: chromium not found after installing" >&2; exit 1; }
echo "$exe"
