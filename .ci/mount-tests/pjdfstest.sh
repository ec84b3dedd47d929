#!/usr/bin/env bash
# pjdfstest against a mount: `pjdfstest.sh TARGET [EXCLUDE-FILE]` (TARGET: see lib.sh).
#
# EXCLUDE-FILE (default pjdfstest-exclude beside this script) lists test cases that are
# expected to fail, one per line as `NAME  # REASON`; an entry without a reason is refused.
# They become pjdfstest's expected_failures, so an excluded test that passes fails the run
# too (the list must shrink as things are fixed). Prints pjdfstest's summary line; fails on
# any failure outside the list.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

target=${1:?usage: pjdfstest.sh TARGET [EXCLUDE-FILE]}
exclude=${2:-$here/pjdfstest-exclude}

names=()
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in '' | '#'*) continue ;; esac
    name=$(echo "${line%%#*}" | tr -d '[:space:]')
    reason=$(echo "${line#*#}" | sed 's/^ *//')
    if [[ "$line" != *'#'* || -z "$reason" ]]; then
        echo "pjdfstest exclude list: '$name' has no reason" >&2
        exit 2
    fi
    names+=("$name")
done <"$exclude"

target_setup "$target"

config=$(mktemp -t pjdfstest.XXXXXX.toml)
trap 'rm -f "$config"; target_teardown' EXIT
{
    echo '[features]'
    echo 'posix_fallocate = {}'
    echo 'utime_now = {}'
    echo 'utimensat = {}'
    echo 'rename_ctime = {}'
    echo '[settings]'
    # Timestamps are in nanoseconds; 20 ms is plenty to see them move.
    echo 'naptime = 0.02'
    echo 'expected_failures = ['
    for n in "${names[@]}"; do echo "  \"$n\","; done
    echo ']'
    echo '[dummy_auth]'
    echo 'entries = [["nobody", "nogroup"], ["tests", "nogroup"]]'
} >"$config"

log=$(mktemp -t pjdfstest.XXXXXX.log)
start=$(date +%s)
set +e
# A directory on another file system, for the cross-device (EXDEV) tests of rename and
# link: the temporary folder the mount point is in.
secondary=()
if [ -n "$WORK" ]; then
    mkdir -p "$WORK/secondary"
    secondary=(-s "$WORK/secondary")
fi
(cd "$MNT" && pjdfstest -c "$config" -p "$MNT" "${secondary[@]}") >"$log" 2>&1
rc=$?
set -e
# The summary and every failure, without the colours.
sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E -A3 'FAILED|PASSED UNEXPECTEDLY' || true
sed 's/\x1b\[[0-9;]*m//g' "$log" | grep '^Summary' || { tail -20 "$log"; rc=1; }
echo "pjdfstest: $(($(date +%s) - start)) s, ${#names[@]} excluded, exit $rc"
rm -f "$log"
exit $rc
