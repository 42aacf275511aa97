#!/usr/bin/env bash
# Runs a puppeteer-core script against the dgls extension in a real VS Code: code-server (VS Code 1.100.3 from
# npm) serving this checkout's packaged .vsix and a workspace to Debian's Chromium, with the real `dgls --stdio`.
# Used by tests/editors/test_vscode_browser.py (browser/ui-test.mjs) and screenshot/screenshot.sh.
#
#   editors/vscode/browser/code-server.sh DRIVER.mjs WORKSPACE PROFILE
#
# 1. code-server and puppeteer-core are installed once into $CS_DIR (outside the repository, keyed by their
#    versions; npm's registry is the only network used); 2. the extension is packaged (npm ci first in a fresh
#    clone); 3. PROFILE (created; the caller removes it) gets settings, the installed .vsix and code-server's log
#    (PROFILE/code-server.log; VS Code's own logs, the dgls output channel included, under PROFILE/user/logs);
#    4. code-server listens on a free loopback port; 5. `node DRIVER` runs with CS_DIR, CHROMIUM, URL (the
#    workbench with WORKSPACE open), WORKSPACE and PROFILE in its environment, and its exit status is this
#    script's. code-server is stopped on exit.
#
# Needs Node 20 + npm, chromium, ripgrep, curl, a C++ toolchain and libkrb5-dev (Debian: apt-get install chromium
# ripgrep curl build-essential libkrb5-dev), and dgls: $DGLS (default: the repository's .venv/bin/dgls) with
# the model $DGLS_MODEL (default dgls-tiny).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VSCODE=$(dirname "$HERE")
REPO=$(cd "$VSCODE/../.." && pwd)
DRIVER=$(realpath "$1")
WORKSPACE=$(realpath "$2")
PROFILE=$3
CS_VERSION=${CS_VERSION:-4.100.3}  # the newest code-server on npm that runs on Node 20 (VS Code 1.100.3)
PUPPETEER_VERSION=${PUPPETEER_VERSION:-24.43.1}
CS_DIR=${CS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dgls-vscode/code-server-$CS_VERSION-puppeteer-$PUPPETEER_VERSION}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser)}
DGLS=${DGLS:-$REPO/.venv/bin/dgls}
DGLS_MODEL=${DGLS_MODEL:-dgls-tiny}
log() { echo "[code-server.sh] $*" >&2; }

# 1. code-server, installed by hand: its postinstall fetches ripgrep from GitHub (Debian's rg is used instead).
#    Built in a scratch folder and moved into place when complete, so an interrupted install is redone.
if [ ! -e "$CS_DIR/.installed" ]; then
  log "installing code-server $CS_VERSION and puppeteer-core $PUPPETEER_VERSION into $CS_DIR"
  rm -rf "$CS_DIR.partial"
  mkdir -p "$CS_DIR.partial"
  (
    cd "$CS_DIR.partial"
    echo '{ "private": true }' > package.json
    npm install --no-audit --no-fund --ignore-scripts "code-server@$CS_VERSION" "puppeteer-core@$PUPPETEER_VERSION"
    npm rebuild argon2
    cd node_modules/code-server/lib/vscode
    npm install --omit=dev --ignore-scripts --no-audit --no-fund
    # the native modules; node-pty's post-install step also runs `npx node-gyp` (fetched from npm)
    npm_config_yes=true npm rebuild kerberos node-pty @vscode/spdlog native-watchdog @vscode/deviceid
    for m in kerberos/build/Release/kerberos.node node-pty/build/Release/pty.node \
             @vscode/spdlog/build/Release/spdlog.node native-watchdog/build/Release/watchdog.node; do
      [ -f "node_modules/$m" ] || { log "not built: $m"; exit 1; }
    done
    mkdir -p node_modules/@vscode/ripgrep/bin
    ln -sf "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
    ln -sfn node_modules node_modules.asar
    (cd bin/remote-cli && ln -sf code-linux.sh code-server)
    (cd bin/helpers && ln -sf browser-linux.sh browser.sh)
    (cd extensions && npm install --omit=dev --ignore-scripts --no-audit --no-fund)
  )
  touch "$CS_DIR.partial/.installed"
  rm -rf "$CS_DIR"
  mv "$CS_DIR.partial" "$CS_DIR"
fi
CS="$CS_DIR/node_modules/.bin/code-server"

# 2. the extension, packaged from this checkout
(
  cd "$VSCODE"
  [ -f node_modules/.package-lock.json ] || npm ci --no-audit --no-fund
  npm run --silent package > /dev/null
)

# 3. a private profile; the server found through dgls.server.path. code-server's own state (else in
#    ~/.local/share/code-server) and Chromium's (~/.config/chromium) go in it too.
mkdir -p "$PROFILE/user/User"
export XDG_DATA_HOME="$PROFILE/data" XDG_CONFIG_HOME="$PROFILE/config"
cat > "$PROFILE/user/User/settings.json" <<JSON
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
  "git.enabled": false,
  "dgls.server.path": "$DGLS",
  "dgls.server.extraArgs": ["-v"],
  "dgls.model": "$DGLS_MODEL",
  "dgls.device": "cpu",
  "dgls.completionInStrings": true
}
JSON
CS_ARGS=(--config "$PROFILE/config.yaml" --user-data-dir "$PROFILE/user" --extensions-dir "$PROFILE/ext")
"$CS" "${CS_ARGS[@]}" --install-extension "$VSCODE/dist/dgls.vsix" > "$PROFILE/install.log" 2>&1 \
  || { cat "$PROFILE/install.log" >&2; exit 1; }

# 4. code-server in its own process group (killed as a whole at exit), on a port the kernel picks
CS_PID=
stop() { [ -z "$CS_PID" ] || kill -- "-$CS_PID" 2>/dev/null || true; }
trap stop EXIT
trap 'exit 143' TERM INT  # a signal ends the script through the EXIT trap
setsid "$CS" "${CS_ARGS[@]}" --auth none --bind-addr 127.0.0.1:0 --disable-telemetry --disable-update-check \
  --disable-workspace-trust --ignore-last-opened "$WORKSPACE" > "$PROFILE/code-server.log" 2>&1 &
CS_PID=$!
URL=
for _ in $(seq 300); do
  URL=$(sed -n 's|.*HTTP server listening on \(http://127\.0\.0\.1:[0-9]*\)/.*|\1|p' "$PROFILE/code-server.log")
  [ -n "$URL" ] && curl -fs -o /dev/null "$URL/healthz" && break
  kill -0 "$CS_PID" 2>/dev/null || break
  URL=
  sleep 0.2
done
[ -n "$URL" ] || { log "code-server did not start; its log:"; cat "$PROFILE/code-server.log" >&2; exit 1; }
log "code-server $CS_VERSION at $URL (log: $PROFILE/code-server.log)"

# 5. the driver (Chromium's cache in the profile too; not the server's, which may hold a Hugging Face model)
CS_DIR="$CS_DIR" CHROMIUM="$CHROMIUM" URL="$URL/?folder=$WORKSPACE" WORKSPACE="$WORKSPACE" PROFILE="$PROFILE" \
  XDG_CACHE_HOME="$PROFILE/cache" node "$DRIVER"
