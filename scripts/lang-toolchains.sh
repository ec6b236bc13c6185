#!/usr/bin/env bash
# Install (only what is missing) the toolchains that build OmniFlow pieces
# written in Python (componentize-py) and JavaScript (ComponentizeJS + jco),
# at pinned versions, under $OMNIFLOW_TOOLCHAINS_DIR
# (default: $HOME/.cache/omniflow-toolchains):
#
#   py/   a virtualenv with componentize-py
#   js/   an npm prefix with @bytecodealliance/componentize-js and /jco
#   node/ only when the system's node is older than 20 (Debian 12 ships 18,
#         too old for ComponentizeJS): Node from the npm package node-linux-<arch>
#
# Usage:
#   scripts/lang-toolchains.sh [python|js|all]         # default: all
#   eval "$(scripts/lang-toolchains.sh)"               # install, then export
#
# Progress goes to stderr; stdout is only `export NAME=...` lines:
#   OMNIFLOW_TOOLCHAINS_DIR, COMPONENTIZE_PY, COMPONENTIZE_JS, JCO, OMNIFLOW_NODE, PATH.
# Idempotent: a second run checks the stamps and installs nothing.
# On a fresh Debian 12 it installs python3-venv/python3-pip and nodejs/npm
# with apt-get (non-interactive) when they are missing.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0
JCO_VERSION=1.35.0
NODE_MIN_MAJOR=20          # oxc-parser (ComponentizeJS's JS parser) needs node >= 20
NODE_PKG_VERSION=22.23.5   # npm package node-linux-<arch>, used only below NODE_MIN_MAJOR

ROOT="${OMNIFLOW_TOOLCHAINS_DIR:-$HOME/.cache/omniflow-toolchains}"
PY_DIR="$ROOT/py"
JS_DIR="$ROOT/js"
NODE_DIR="$ROOT/node"
NODE_BIN_DIR=""
WHAT="${1:-all}"

say() { printf 'lang-toolchains: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

case "$WHAT" in
  python|js|all) ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 0 ;;
  *) die "unknown toolchain '$WHAT' (python, js or all)" ;;
esac

# One installer at a time (tests build Python and JS pieces in parallel).
mkdir -p "$ROOT"
exec 9>"$ROOT/.install.lock"
flock 9

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "missing $*, and no apt-get to install it: install $* yourself"
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "missing $*: run as root or install sudo"
    sudo=(sudo -n)
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  say "apt-get install -y $*"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >&2
}

install_python() {
  local stamp="$PY_DIR/.omniflow-stamp" want="componentize-py==$COMPONENTIZE_PY_VERSION"
  if [ -x "$PY_DIR/bin/componentize-py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "python: $want already in $PY_DIR"
    return
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv python3-pip
  rm -rf "$PY_DIR"
  mkdir -p "$ROOT"
  # Debian's python3 has no ensurepip without python3-venv: venv fails.
  if ! python3 -m venv "$PY_DIR" >/dev/null 2>&1; then
    rm -rf "$PY_DIR"
    apt_install python3-venv python3-pip
    python3 -m venv "$PY_DIR" >&2 || die "python3 -m venv $PY_DIR failed"
  fi
  say "python: pip install $want"
  "$PY_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "$want" >&2
  "$PY_DIR/bin/componentize-py" --version >/dev/null 2>&1 \
    || die "componentize-py does not run after install"
  printf '%s\n' "$want" >"$stamp"
}

node_major() {
  "$1" -e 'process.stdout.write(process.versions.node.split(".")[0])' 2>/dev/null || echo 0
}

# A node >= NODE_MIN_MAJOR for npm and ComponentizeJS: the system's, else one
# from the npm registry under $NODE_DIR (sets NODE_BIN_DIR to its bin/).
ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    local pkgs=()
    command -v node >/dev/null || pkgs+=(nodejs)
    command -v npm >/dev/null || pkgs+=(npm)
    apt_install "${pkgs[@]}"
  fi
  if [ "$(node_major node)" -ge "$NODE_MIN_MAJOR" ]; then
    return
  fi
  local arch
  case "$(uname -m)" in
    x86_64|amd64) arch=x64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) die "node $(node --version) is older than $NODE_MIN_MAJOR and there is no node-linux package for $(uname -m)" ;;
  esac
  local want="node-linux-$arch@$NODE_PKG_VERSION"
  if [ ! -x "$NODE_DIR/bin/node" ] || [ "$(cat "$NODE_DIR/.omniflow-stamp" 2>/dev/null)" != "$want" ]; then
    say "js: node $(node --version) is older than $NODE_MIN_MAJOR (ComponentizeJS needs it): npm install $want"
    rm -rf "$NODE_DIR"
    mkdir -p "$NODE_DIR/bin"
    printf '{ "private": true, "dependencies": { "node-linux-%s": "%s" } }\n' "$arch" "$NODE_PKG_VERSION" \
      >"$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error >&2)
    ln -s "../node_modules/node-linux-$arch/bin/node" "$NODE_DIR/bin/node"
    "$NODE_DIR/bin/node" --version >/dev/null || die "the node of $want does not run"
    printf '%s\n' "$want" >"$NODE_DIR/.omniflow-stamp"
  fi
  NODE_BIN_DIR="$NODE_DIR/bin"
  export PATH="$NODE_BIN_DIR:$PATH"
}

install_js() {
  ensure_node
  local stamp="$JS_DIR/.omniflow-stamp"
  local want="@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION @bytecodealliance/jco@$JCO_VERSION"
  if [ -x "$JS_DIR/node_modules/.bin/componentize-js" ] && [ -x "$JS_DIR/node_modules/.bin/jco" ] \
     && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "js: $want already in $JS_DIR (node $(node --version))"
    return
  fi
  rm -rf "$JS_DIR"
  mkdir -p "$JS_DIR"
  cat >"$JS_DIR/package.json" <<JSON
{
  "name": "omniflow-toolchains",
  "private": true,
  "description": "written by scripts/lang-toolchains.sh",
  "dependencies": {
    "@bytecodealliance/componentize-js": "$COMPONENTIZE_JS_VERSION",
    "@bytecodealliance/jco": "$JCO_VERSION"
  }
}
JSON
  # npm runs on the node found above: an older one would skip the native
  # parser bindings (optional dependencies whose engines do not match).
  say "js: npm install $want (node $(node --version))"
  (cd "$JS_DIR" && npm install --no-audit --no-fund --loglevel=error >&2)
  "$JS_DIR/node_modules/.bin/componentize-js" --help >/dev/null 2>&1 \
    || die "componentize-js does not run after install (node $(node --version))"
  printf '%s\n' "$want" >"$stamp"
}

case "$WHAT" in
  python) install_python ;;
  js) install_js ;;
  all) install_python; install_js ;;
esac

path_add=""
exports=("OMNIFLOW_TOOLCHAINS_DIR=$ROOT")
if [ "$WHAT" != js ]; then
  exports+=("COMPONENTIZE_PY=$PY_DIR/bin/componentize-py")
  path_add="$PY_DIR/bin"
fi
if [ "$WHAT" != python ]; then
  exports+=("COMPONENTIZE_JS=$JS_DIR/node_modules/.bin/componentize-js" "JCO=$JS_DIR/node_modules/.bin/jco"
    "OMNIFLOW_NODE=$(command -v node)")
  path_add="${path_add:+$path_add:}${NODE_BIN_DIR:+$NODE_BIN_DIR:}$JS_DIR/node_modules/.bin"
fi
for e in "${exports[@]}"; do
  printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
done
printf 'export PATH=%q"${PATH:+:$PATH}"\n' "$path_add"
