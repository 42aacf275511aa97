#!/usr/bin/env bash
# Screen capture of the dgls extension in a real VS Code: code-server (VS Code 1.100.3 from npm) in headless
# Chromium, driven by screenshot.mjs with puppeteer-core against the real `dgls --stdio` (the repository's .venv).
#
#   editors/vscode/screenshot/screenshot.sh [out.png]      # default: editors/vscode/screenshot.png
#
# Needs: Node 20 + npm (registry access for the first run), chromium, ripgrep, a C++ toolchain and libkrb5-dev
# (Debian: apt-get install chromium ripgrep build-essential libkrb5-dev), and the repository's .venv with dgls
# and Pillow (the `test` extra). code-server and puppeteer-core are installed once into $CS_DIR (outside the
# repository). The file shown is a temporary copy of examples/fib.py; nothing in the repository is edited.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VSCODE=$(dirname "$HERE")
REPO=$(cd "$VSCODE/../.." && pwd)
OUT=${1:-$VSCODE/screenshot.png}
CS_VERSION=${CS_VERSION:-4.100.3}  # the newest code-server on npm that runs on Node 20 (VS Code 1.100.3)
PUPPETEER_VERSION=${PUPPETEER_VERSION:-24.43.1}
CS_DIR=${CS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dgls-screenshot/code-server-$CS_VERSION}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser)}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DGLS=${DGLS:-$REPO/.venv/bin/dgls}
PORT=${PORT:-18765}

# 1. code-server, installed by hand: its postinstall fetches ripgrep from GitHub (Debian's rg is used instead)
if [ ! -e "$CS_DIR/.installed" ]; then
  mkdir -p "$CS_DIR"
  cd "$CS_DIR"
  [ -f package.json ] || echo '{ "private": true }' > package.json
  npm install --no-audit --no-fund --ignore-scripts "code-server@$CS_VERSION" "puppeteer-core@$PUPPETEER_VERSION"
  npm rebuild argon2
  cd node_modules/code-server/lib/vscode
  npm install --omit=dev --ignore-scripts --no-audit --no-fund
  # the native modules; node-pty's post-install step also runs `npx node-gyp` (fetched from npm)
  npm_config_yes=true npm rebuild kerberos node-pty @vscode/spdlog native-watchdog @vscode/deviceid
  for m in kerberos/build/Release/kerberos.node node-pty/build/Release/pty.node \
           @vscode/spdlog/build/Release/spdlog.node native-watchdog/build/Release/watchdog.node; do
    [ -f "node_modules/$m" ] || { echo "not built: $m" >&2; exit 1; }
  done
  mkdir -p node_modules/@vscode/ripgrep/bin
  ln -sf "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
  ln -sfn node_modules node_modules.asar
  (cd bin/remote-cli && ln -sf code-linux.sh code-server)
  (cd bin/helpers && ln -sf browser-linux.sh browser.sh)
  (cd extensions && npm install --omit=dev --ignore-scripts --no-audit --no-fund)
  touch "$CS_DIR/.installed"
fi
CS="$CS_DIR/node_modules/.bin/code-server"

# 2. the extension, packaged from this checkout
(cd "$VSCODE" && npm run --silent package)

# 3. a private profile and workspace; the server found through dgls.server.path
TMP=$(mktemp -d /tmp/dgls-vscode-shot.XXXXXX)
CS_PID=
cleanup() {
  [ -n "$CS_PID" ] && kill -- "-$CS_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/ws/examples" "$TMP/user/User"
cp "$REPO/examples/fib.py" "$TMP/ws/examples/"
cat > "$TMP/user/User/settings.json" <<EOF
{
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.autoCheckUpdates": false,
  "extensions.ignoreRecommendations": true,
  "editor.cursorBlinking": "solid",
  "files.autoSave": "off",
  "files.hotExit": "off",
  "dgls.server.path": "$DGLS",
  "dgls.device": "cpu",
  "dgls.completionInStrings": true
}
EOF
"$CS" --config "$TMP/config.yaml" --user-data-dir "$TMP/user" --extensions-dir "$TMP/ext" --install-extension "$VSCODE/dist/dgls.vsix"

# 4. code-server in its own process group (killed as a whole at exit), then the browser
setsid "$CS" --config "$TMP/config.yaml" --auth none --bind-addr "127.0.0.1:$PORT" --disable-telemetry \
  --disable-workspace-trust --user-data-dir "$TMP/user" --extensions-dir "$TMP/ext" "$TMP/ws" \
  > "$TMP/code-server.log" 2>&1 &
CS_PID=$!
for _ in $(seq 60); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
  sleep 1
done
CS_DIR="$CS_DIR" CHROMIUM="$CHROMIUM" URL="http://127.0.0.1:$PORT/?folder=$TMP/ws" RAW="$TMP/raw.png" \
  node "$HERE/screenshot.mjs"

# 5. a palette PNG, to keep it small
"$PYTHON" - "$REPO/editors/tools" "$TMP/raw.png" "$OUT" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from PIL import Image
import ansi_png
ansi_png.save_png(Image.open(sys.argv[2]).convert("RGB"), sys.argv[3])
EOF
echo "wrote $OUT ($(stat -c %s "$OUT") bytes); code-server $CS_VERSION, VS Code $(node -p \
  "require('$CS_DIR/node_modules/code-server/lib/vscode/package.json').version")"
