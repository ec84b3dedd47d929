#!/usr/bin/env bash
# fio data-integrity run against a mount: `fio.sh TARGET` (TARGET: see lib.sh). The jobs
# in fio-verify.fio write with verify=crc32c and read everything back; fio fails on the
# first block whose checksum or header does not match. A second pass drops the page cache
# and verifies every file again (verify_only), so the data checked the second time comes
# from the filesystem, not from the kernel's cache of what was written.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

target=${1:?usage: fio.sh TARGET}
target_setup "$target"

export FIO_DIR=$MNT/fio
mkdir -p "$FIO_DIR"
start=$(date +%s)

# run_pass LABEL [FIO-ARGS]: prints one line per job; returns fio's status.
run_pass() {
    local label=$1 out rc
    shift
    set +e
    # In FIO_DIR: fio leaves its verify state files in the working directory.
    out=$(cd "$FIO_DIR" && fio --output-format=terse --terse-version=3 "$@" "$here/fio-verify.fio" 2>&1)
    rc=$?
    set -e
    # terse v3: field 3 is the job name, 5 its error, 6 the KiB read, 47 the KiB written.
    awk -F';' -v l="$label" 'NF > 50 { printf "fio %-12s %-26s err %s  read %7d KiB  write %7d KiB\n", l, $3, $5, $6, $47 }' <<<"$out"
    grep -v '^3;' <<<"$out" | grep -v '^$' || true
    return $rc
}

rc=0
run_pass write+verify || rc=$?
if [ $rc -eq 0 ]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
    run_pass reverify --verify_only || rc=$?
fi
rm -rf "$FIO_DIR"
echo "fio: exit $rc, $(($(date +%s) - start)) s"
exit $rc
