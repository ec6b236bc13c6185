#!/usr/bin/env bash
# Create a piece project from sdk/templates (what `omniflow piece new` will do).
#
#   scripts/piece-from-template.sh rust|python|js NAME DEST_DIR
#
# NAME: lowercase letters, digits and dashes, starting with a letter.
# For rust, {{sdk_dependency}} is OMNIFLOW_SDK_DEPENDENCY when set, else a
# path dependency on this checkout's sdk/ ({ path = "<repo>/sdk" }).
set -euo pipefail
[ $# -eq 3 ] || { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
lang="$1" name="$2" dest="$3"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/sdk/templates/$lang"
[ -d "$src" ] || { echo "piece-from-template: no template for '$lang' (rust, python, js)" >&2; exit 2; }
[[ "$name" =~ ^[a-z][a-z0-9-]*$ ]] || { echo "piece-from-template: '$name' is not lowercase-with-dashes" >&2; exit 2; }
[ ! -e "$dest" ] || [ -z "$(ls -A "$dest")" ] || { echo "piece-from-template: $dest is not empty" >&2; exit 2; }
sdk_dep="${OMNIFLOW_SDK_DEPENDENCY:-{ path = \"$repo/sdk\" \}}"

mkdir -p "$dest"
(cd "$src" && find . -type f -print0) | while IFS= read -r -d '' f; do
  mkdir -p "$dest/$(dirname "$f")"
  text="$(cat "$src/$f"; printf x)"
  text="${text%x}"
  text="${text//\{\{name\}\}/$name}"
  text="${text//\{\{sdk_dependency\}\}/$sdk_dep}"
  printf '%s' "$text" >"$dest/$f"
done
echo "piece-from-template: $lang piece '$name' in $dest" >&2
