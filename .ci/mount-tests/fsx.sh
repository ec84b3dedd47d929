#!/usr/bin/env bash
# fsx against a mount: `fsx.sh TARGET` (TARGET: see lib.sh). Runs fsx with fixed seeds
# (FSX_SEEDS, FSX_OPS operations each; 5 x 25,000 by default) on one file per seed, with the
# settings in fsx.toml beside this script, and requires "All operations completed A-OK!"
# from every run. A failing run's artifacts (fsx's log and good/bad file images) are kept
# in FSX_ARTIFACTS (default: a fresh temporary directory, printed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

target=${1:?usage: fsx.sh TARGET}
seeds=${FSX_SEEDS:-1 2 3 42 1234}
ops=${FSX_OPS:-25000}
artifacts=${FSX_ARTIFACTS:-$(mktemp -d -t fsx-artifacts.XXXXXX)}

target_setup "$target"

failed=0
total=0
start=$(date +%s)
for seed in $seeds; do
    t0=$(date +%s)
    out=$(fsx -f "$here/fsx.toml" -N "$ops" -S "$seed" -P "$artifacts" "$MNT/fsx.$seed" 2>&1) || true
    if grep -q 'All operations completed A-OK!' <<<"$out"; then
        echo "fsx seed $seed: $ops operations A-OK ($(($(date +%s) - t0)) s)"
        rm -f "$MNT/fsx.$seed"
    else
        echo "fsx seed $seed: FAILED; the last lines of its output:"
        tail -25 <<<"$out"
        failed=$((failed + 1))
    fi
    total=$((total + ops))
done
echo "fsx: $total operations over $(wc -w <<<"$seeds") seeds, $failed failed, $(($(date +%s) - start)) s"
if [ $failed -eq 0 ]; then
    rm -rf "$artifacts"
else
    echo "fsx artifacts kept in $artifacts"
    exit 1
fi
