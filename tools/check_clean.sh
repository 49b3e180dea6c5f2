#!/usr/bin/env bash
# Fail when `nbdev-clean` or `nbdev-export` would change any file: notebooks must be committed
# clean, and medllm/ must be exactly what the notebooks export (CI's check, like nbdev's own).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
snapshot() { find nbs medllm -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha256sum; }
before=$(snapshot)
"$BIN/nbdev-clean"
after_clean=$(snapshot)
if [ "$before" != "$after_clean" ]; then
  echo "check: nbdev-clean changed these notebooks (run nbdev-clean and commit):"
  diff <(echo "$before") <(echo "$after_clean") | grep '^>' | awk '{print "  " $3}'
  exit 1
fi
"$BIN/nbdev-export"
after_export=$(snapshot)
if [ "$after_clean" != "$after_export" ]; then
  echo "check: nbdev-export changed the library (medllm/ is out of sync with nbs/; export and commit):"
  diff <(echo "$after_clean") <(echo "$after_export") | grep '^>' | awk '{print "  " $3}'
  exit 1
fi
echo "check: notebooks clean, library in sync"
