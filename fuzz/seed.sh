#!/usr/bin/env bash
# Seeds fuzz/corpus/ltx_decoder/ with the golden LTX files from shared/fixtures.
# Usage: fuzz/seed.sh [FIXTURES_DIR]   (default: <repo>/../shared/fixtures)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fixtures="${1:-$here/../../shared/fixtures}"
out="$here/corpus/ltx_decoder"
mkdir -p "$out"
shopt -s nullglob
n=0
for f in "$fixtures"/ltx-v1/*.ltx "$fixtures"/litefs-0.5.14-data/dbs/*/ltx/*.ltx; do
    # Name each seed after its source so files of the same name in different dbs don't collide.
    rel="${f#"$fixtures"/}"
    cp -f "$f" "$out/seed-${rel//\//_}"
    chmod u+w "$out/seed-${rel//\//_}"
    n=$((n + 1))
done
if [ "$n" -eq 0 ]; then
    echo "seed.sh: no .ltx files found under $fixtures" >&2
    exit 1
fi
echo "seed.sh: copied $n seed files into $out"
