#!/usr/bin/env bash
# Install (only what is missing) the toolchains that build OmniFlow pieces
# written in Python (componentize-py) and JavaScript (ComponentizeJS + jco),
# at pinned versions, under $OMNIFLOW_TOOLCHAINS_DIR
# (default: $HOME/.cache/omniflow-toolchains):
#
#   py/   a virtualenv with componentize-py
#   js/   an npm prefix with @bytecodealliance/componentize-js and /jco
#
# Usage:
#   scripts/lang-toolchains.sh [python|js|all]         # default: all
#   eval "$(scripts/lang-toolchains.sh)"               # install, then export
#
# Progress goes to stderr; stdout is only `export NAME=...` lines:
#   OMNIFLOW_TOOLCHAINS_DIR, COMPONENTIZE_PY, COMPONENTIZE_JS, JCO, PATH.
# Idempotent: a second run checks the stamps and installs nothing.
# On a fresh Debian 12 it installs python3-venv/python3-pip and nodejs/npm
# with apt-get (non-interactive) when they are missing.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0
JCO_VERSION=1.35.0

ROOT="${OMNIFLOW_TOOLCHAINS_DIR:-$HOME/.cache/omniflow-toolchains}"
PY_DIR="$ROOT/py"
JS_DIR="$ROOT/js"
WHAT="${1:-all}"

say() { printf 'lang-toolchains: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

case "$WHAT" in
  python|js|all) ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown toolchain '$WHAT' (python, js or all)" ;;
esac

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

install_js() {
  local stamp="$JS_DIR/.omniflow-stamp"
  local want="@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION @bytecodealliance/jco@$JCO_VERSION"
  if [ -x "$JS_DIR/node_modules/.bin/componentize-js" ] && [ -x "$JS_DIR/node_modules/.bin/jco" ] \
     && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && command -v node >/dev/null; then
    say "js: $want already in $JS_DIR"
    return
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    local pkgs=()
    command -v node >/dev/null || pkgs+=(nodejs)
    command -v npm >/dev/null || pkgs+=(npm)
    apt_install "${pkgs[@]}"
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
  say "js: npm install $want"
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
  exports+=("COMPONENTIZE_JS=$JS_DIR/node_modules/.bin/componentize-js" "JCO=$JS_DIR/node_modules/.bin/jco")
  path_add="${path_add:+$path_add:}$JS_DIR/node_modules/.bin"
fi
for e in "${exports[@]}"; do
  printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
done
printf 'export PATH=%q"${PATH:+:$PATH}"\n' "$path_add"
