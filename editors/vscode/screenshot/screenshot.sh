#!/usr/bin/env bash
# Screen capture of the dgls extension in a real VS Code: code-server (VS Code 1.100.3 from npm) in headless
# Chromium, driven by screenshot.mjs with puppeteer-core against the real `dgls --stdio` (the repository's .venv).
#
#   editors/vscode/screenshot/screenshot.sh [out.png]      # default: editors/vscode/screenshot.png
#
# Needs what browser/code-server.sh needs (Node 20 + npm, chromium, ripgrep, curl, a C++ toolchain and
# libkrb5-dev; it installs code-server and puppeteer-core once, outside the repository), and Pillow in the
# repository's .venv (the `test` extra). The file shown is a temporary copy of examples/fib.py; nothing in the
# repository is edited.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VSCODE=$(dirname "$HERE")
REPO=$(cd "$VSCODE/../.." && pwd)
OUT=${1:-$VSCODE/screenshot.png}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}

TMP=$(mktemp -d /tmp/dgls-vscode-shot.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/ws/examples"
cp "$REPO/examples/fib.py" "$TMP/ws/examples/"
RAW="$TMP/raw.png" "$VSCODE/browser/code-server.sh" "$HERE/screenshot.mjs" "$TMP/ws" "$TMP/profile"

# a palette PNG, to keep it small
"$PYTHON" - "$REPO/editors/tools" "$TMP/raw.png" "$OUT" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from PIL import Image
import ansi_png
ansi_png.save_png(Image.open(sys.argv[2]).convert("RGB"), sys.argv[3])
PY
echo "wrote $OUT ($(stat -c %s "$OUT") bytes)"
