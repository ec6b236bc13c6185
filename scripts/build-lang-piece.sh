#!/usr/bin/env bash
# Build one OmniFlow piece written in Python or JavaScript into a component.
#
#   scripts/build-lang-piece.sh python SRC_DIR OUT.wasm   # SRC_DIR/app.py defines `Handler`
#   scripts/build-lang-piece.sh js     SRC_DIR OUT.wasm   # SRC_DIR/piece.js exports `handler`
#
# Built against this repository's wit/ (world `piece`, deps under wit/deps)
# with the toolchains of scripts/lang-toolchains.sh (installed on first use).
# The SDK helper (sdk/python/omniflow_piece.py, sdk/js/omniflow-piece.js) is
# made importable: `from omniflow_piece import ...` / `import ... from
# './omniflow-piece.js'`.
#
# Environment:
#   PIECE_ENTRY        entry module: Python module name (default app) or JS file (default piece.js)
#   PIECE_PYTHON_PATH  extra directories (colon-separated) with pure-Python dependencies
#   OMNIFLOW_WIT_DIR   another WIT directory (default: <repo>/wit)
#
# Python components import wasi:sockets (componentize-py's runtime links it);
# the host denies every socket operation at run time (and componentize-py's
# standard library has no `socket` module): use omniflow_piece.http.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
[ $# -eq 3 ] || usage
LANG_NAME="$1" SRC="$2" OUT="$3"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
WIT="${OMNIFLOW_WIT_DIR:-$REPO/wit}"

case "$LANG_NAME" in python|py|js|javascript) ;; *)
  echo "build-lang-piece: unknown language '$LANG_NAME' (python or js)" >&2; exit 2 ;;
esac
[ -d "$SRC" ] || { echo "build-lang-piece: no directory $SRC" >&2; exit 2; }
[ -f "$WIT/piece.wit" ] || { echo "build-lang-piece: no $WIT/piece.wit" >&2; exit 2; }
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$(dirname "$OUT")"

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/omniflow-piece.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

# Copy the sources (not build outputs, tests, VCS or caches) into a staging directory
# next to the SDK helper, so the component contains nothing else.
stage_sources() {
  (cd "$SRC" && find . \( -name .git -o -name node_modules -o -name __pycache__ -o -name '*.wasm' \
     -o -name 'test_*.py' -o -name '*.test.js' -o -name '*.test.mjs' -o -name workflow.json \) -prune \
     -o -type f \( "$@" \) -print0) \
    | (cd "$SRC" && xargs -0 -r cp --parents -t "$STAGE")
}

case "$LANG_NAME" in
  python|py)
    eval "$("$HERE/lang-toolchains.sh" python)"
    ENTRY="${PIECE_ENTRY:-app}"
    [ -f "$SRC/$ENTRY.py" ] || [ -d "$SRC/$ENTRY" ] \
      || { echo "build-lang-piece: $SRC has no $ENTRY.py" >&2; exit 2; }
    stage_sources -name '*.py' -o -name '*.json' -o -name '*.txt'
    cp "$REPO/sdk/python/omniflow_piece.py" "$STAGE/"
    paths=(-p "$STAGE")
    if [ -n "${PIECE_PYTHON_PATH:-}" ]; then
      IFS=: read -r -a extra <<<"$PIECE_PYTHON_PATH"
      for d in "${extra[@]}"; do paths+=(-p "$d"); done
    fi
    # No VIRTUAL_ENV: componentize-py would add that venv's site-packages.
    (cd "$STAGE" && env -u VIRTUAL_ENV "$COMPONENTIZE_PY" -d "$WIT" -w piece \
        componentize "$ENTRY" "${paths[@]}" -o "$OUT")
    ;;
  js|javascript)
    eval "$("$HERE/lang-toolchains.sh" js)"
    ENTRY="${PIECE_ENTRY:-piece.js}"
    [ -f "$SRC/$ENTRY" ] || { echo "build-lang-piece: $SRC has no $ENTRY" >&2; exit 2; }
    stage_sources -name '*.js' -o -name '*.mjs' -o -name '*.json'
    cp "$REPO/sdk/js/omniflow-piece.js" "$STAGE/omniflow-piece.js"
    (cd "$STAGE" && "$COMPONENTIZE_JS" "$ENTRY" --wit "$WIT" --world-name piece -o "$OUT")
    ;;
  *)
    echo "build-lang-piece: unknown language '$LANG_NAME' (python or js)" >&2
    exit 2
    ;;
esac

echo "build-lang-piece: wrote $OUT ($(stat -c %s "$OUT") bytes)" >&2
