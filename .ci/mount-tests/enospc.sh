#!/usr/bin/env bash
# ENOSPC and recovery through a real mount: `enospc.sh scoutfs` (only the scoutfs target:
# it fills a fresh volume of its own; see lib.sh).
#
# Scenario A (metadata): on a fresh volume with a small metadata device, files each with
# one large xattr (setfattr, ENOSPC_XATTR_BYTES, 60,000 bytes by default) are made until
# the mount says ENOSPC; then every file is deleted and, without an unmount, creating one
# more such file must succeed again within ENOSPC_RECOVER_SECS (60) and statfs of the mount
# point must show the metadata space back (its free-inode count, which is free metadata
# blocks scaled, back to ENOSPC_BACK_PCT percent (90) of what it was on the fresh mount).
# Then the volume is unmounted, `scoutfs check` must find it clean, and `scoutfs df` must
# show the metadata no more than ENOSPC_DF_MAX_PCT percent (50) used (df counts the
# server's reserve, a quarter of a small device, as used; a stuck volume shows 100%).
#
# Scenario B (data and metadata): on another fresh volume with a small data device, files
# of data are written (dd, conv=fsync) until ENOSPC, then xattr files as in A until ENOSPC;
# every file is deleted and, without an unmount, within ENOSPC_RECOVER_SECS an xattr file
# can be made and ENOSPC_DATA_BACK_PCT percent (50) of the data device written again, and
# statfs shows the data and the metadata space back; then unmount, check and df as in A.
#
# Sizes (ENOSPC_META_SIZE 512M, ENOSPC_DATA_SIZE 256M by default): the issue's 512M of
# metadata (8,192 blocks of 64 KiB) fills in 3,650-3,850 files, 13-28 s here, and a run
# takes about 95 s when both scenarios recover (130-150 s when one waits out its minute).
# Smaller is faster but tests less: at 256M (about 1,500 files) the log merge had room
# to finish in all our runs, while at 512M it ran out of room mid-merge in one of the two
# scenarios in four runs of five -- the stall of issue 12 this test is here to catch.
# The data device only needs to fill quickly (256M: about a second).
#
# Exit status: 0 when both scenarios recover, 1 when one does not (with a message saying
# what did not come back, and the mount's statfs, `scoutfs df` and the log trees and merge
# state of `scoutfs print` for the record); "skipped: REASON" and 77 (lib.sh's `skip`)
# only when the test cannot run at all (not root, no /dev/fuse). ENOSPC_KEEP=DIR keeps
# sparse copies of each scenario's images, taken after its unmount, in DIR (for `scoutfs
# print` and friends).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

target=${1:?usage: enospc.sh scoutfs}
if [ "$target" != scoutfs ]; then
    echo "enospc.sh: only the scoutfs target (the test fills a fresh volume of its own)" >&2
    exit 2
fi
. "$here/lib.sh"
require_mount
if ! command -v setfattr >/dev/null; then
    echo "enospc: setfattr is missing (apt-get install attr; .ci/install-mount-tools does)" >&2
    exit 1
fi

META_SIZE=${ENOSPC_META_SIZE:-512M}
DATA_SIZE=${ENOSPC_DATA_SIZE:-256M}
XATTR_BYTES=${ENOSPC_XATTR_BYTES:-60000}
RECOVER_SECS=${ENOSPC_RECOVER_SECS:-60}
BACK_PCT=${ENOSPC_BACK_PCT:-90}
DATA_BACK_PCT=${ENOSPC_DATA_BACK_PCT:-50}
DF_MAX_PCT=${ENOSPC_DF_MAX_PCT:-50}
KEEP=${ENOSPC_KEEP:-}
# A guard against a fill that never ends (a volume that never says ENOSPC).
MAX_FILES=200000

export SCOUTFS_META_SIZE=$META_SIZE SCOUTFS_DATA_SIZE=$DATA_SIZE
target_setup scoutfs
start=$(date +%s)
failures=()
VAL=$(head -c "$XATTR_BYTES" /dev/zero | tr '\0' x)

fail() {
    echo "FAIL: $*"
    failures+=("$*")
}

# statfs of the mount point: "free-inodes total-inodes free-blocks total-blocks" (free
# inodes are free metadata blocks scaled by the block size; blocks are data blocks).
statfs() { stat -f -c '%d %c %f %b' "$MNT"; }

# Time since $1 (from `now`) in seconds with a tenth.
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Whether command output $1 says ENOSPC.
is_enospc() { grep -q 'No space left on device' <<<"$1"; }

# Make files DIR/x0, x1, ... each with xattr user.big of XATTR_BYTES until ENOSPC; sets
# FILLED to the number made (the file whose xattr failed stays, without it). Any other
# error, or no ENOSPC within MAX_FILES, fails the test.
fill_xattrs() {
    local dir=$1 i=0 out t0
    t0=$(now)
    mkdir -p "$dir"
    while [ $i -lt $MAX_FILES ]; do
        if ! out=$( { : >"$dir/x$i"; } 2>&1); then
            is_enospc "$out" && break
            fail "creating $dir/x$i: $out"
            return 1
        fi
        if ! out=$(setfattr -n user.big -v "$VAL" "$dir/x$i" 2>&1); then
            is_enospc "$out" && break
            fail "setfattr $dir/x$i: $out"
            return 1
        fi
        i=$((i + 1))
    done
    FILLED=$i
    if [ $i -ge $MAX_FILES ]; then
        fail "no ENOSPC after $i files with ${XATTR_BYTES}-byte xattrs"
        return 1
    fi
    echo "$i files with a ${XATTR_BYTES}-byte xattr, then ENOSPC ($(since "$t0") s); statfs: $(statfs)"
}

# Write 16 MiB files DIR/d0, d1, ... (dd conv=fsync) until ENOSPC; sets WRITTEN_MB.
fill_data() {
    local dir=$1 i=0 out t0
    t0=$(now)
    mkdir -p "$dir"
    while [ $i -lt $MAX_FILES ]; do
        if ! out=$(dd if=/dev/zero of="$dir/d$i" bs=1M count=16 conv=fsync status=none 2>&1); then
            is_enospc "$out" && break
            fail "dd to $dir/d$i: $out"
            return 1
        fi
        i=$((i + 1))
    done
    WRITTEN_MB=$(du -sm --apparent-size "$dir" | cut -f1)
    echo "$WRITTEN_MB MiB of data in $i full files, then ENOSPC ($(since "$t0") s); statfs: $(statfs)"
}

# Delete everything under the mount point (and say how long it took).
delete_all() {
    local t0
    t0=$(now)
    find "$MNT" -mindepth 1 -delete
    sync -f "$MNT"
    echo "deleted every file ($(since "$t0") s); statfs: $(statfs)"
}

# Poll, without unmounting, until command "$@" succeeds (cleaning up with $CLEANUP after
# each failed try) or RECOVER_SECS pass since $T0; true if it succeeded.
until_ok() {
    local out
    while :; do
        if out=$("$@" 2>&1); then
            return 0
        fi
        [ -n "${CLEANUP:-}" ] && eval "$CLEANUP"
        LAST_ERR=$out
        if [ "$(awk -v a="$T0" -v b="$(now)" 'BEGIN { print (b - a >= '"$RECOVER_SECS"') }')" = 1 ]; then
            return 1
        fi
        sleep 1
    done
}

make_xattr_file() { : >"$1" && setfattr -n user.big -v "$VAL" "$1"; }
# Free metadata (as statfs counts it) back to BACK_PCT percent of $FFREE0, and, with $2,
# free data back to BACK_PCT percent of $BFREE0.
space_back() {
    local s
    read -r -a s <<<"$(statfs)"
    [ $((s[0] * 100)) -ge $((FFREE0 * BACK_PCT)) ] || return 1
    [ -z "${1:-}" ] || [ $((s[2] * 100)) -ge $((BFREE0 * BACK_PCT)) ]
}

# Unmount, wait for the daemon's final commit, then `check` (must be clean) and `df` (the
# metadata must be no more than DF_MAX_PCT percent used); with ENOSPC_KEEP, copy the images.
unmount_and_check() {
    local name=$1 df pct
    cd /
    umount "$MNT"
    MOUNTED=
    for _ in $(seq 1 300); do alive "$DAEMON_PID" || break; sleep 0.1; done
    if alive "$DAEMON_PID"; then
        fail "$name: the daemon did not exit after umount"
        kill -9 "$DAEMON_PID"
        return
    fi
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP"
        cp --sparse=always "$WORK/meta.img" "$KEEP/$name-meta.img"
        cp --sparse=always "$WORK/data.img" "$KEEP/$name-data.img"
        echo "images kept in $KEEP/$name-{meta,data}.img"
    fi
    echo "== scoutfs check after umount ($name)"
    "$SCOUTFS" check "$WORK/meta.img" "$WORK/data.img" || fail "$name: check found problems"
    df=$("$SCOUTFS" df "$WORK/meta.img" "$WORK/data.img")
    echo "$df"
    pct=$(awk '$1 == "MetaData" { sub("%", "", $6); print $6 }' <<<"$df")
    if [ -z "$pct" ] || [ "${pct%.*}" -gt "$DF_MAX_PCT" ]; then
        fail "$name: df shows the metadata ${pct:-?}% used after every file was deleted (at most $DF_MAX_PCT% expected)"
        # What holds the space: the roots and allocators of the super, the log trees
        # and the merge's state (as `print` decodes them).
        "$SCOUTFS" print "$WORK/meta.img" 2>/dev/null |
            grep -E '^  (fs_root|logs_root|log_merge|meta_alloc\[0\]|server_meta_(avail|freed)\[0\]):|^      (log trees|item_root:|merge )' |
            head -40 || true
    fi
}

# Unmount, check, and make and mount a fresh volume of the same sizes.
fresh_volume() {
    rm -f "$WORK/meta.img" "$WORK/data.img"
    "$SCOUTFS" mkfs -m "$META_SIZE" -d "$DATA_SIZE" "$WORK/meta.img" "$WORK/data.img" >/dev/null
    "$SCOUTFS" mount "$WORK/meta.img" "$WORK/data.img" "$MNT"
    MOUNTED=scoutfs
    DAEMON_PID=$(scoutfs_daemon_pid)
}

echo "== scenario A: metadata filled by ${XATTR_BYTES}-byte xattrs (meta $META_SIZE, data $DATA_SIZE)"
read -r FFREE0 _ BFREE0 _ <<<"$(statfs)"
echo "fresh mount statfs: $(statfs)"
if fill_xattrs "$MNT/fill"; then
    delete_all
    T0=$(now)
    CLEANUP='rm -f "$MNT/probe"'
    if until_ok make_xattr_file "$MNT/probe"; then
        echo "a file with a ${XATTR_BYTES}-byte xattr is made again $(since "$T0") s after the deletes"
        rm -f "$MNT/probe"
        if until_ok space_back; then
            echo "statfs shows the metadata space back after $(since "$T0") s: $(statfs) (fresh: $FFREE0 free inodes)"
        else
            fail "A: statfs does not show the metadata space back $RECOVER_SECS s after the deletes: $(statfs) (fresh: $FFREE0 free inodes; $BACK_PCT% wanted)"
        fi
    else
        fail "A: no file with a ${XATTR_BYTES}-byte xattr can be made $RECOVER_SECS s after every file was deleted ($LAST_ERR); statfs: $(statfs) (fresh: $FFREE0 free inodes)"
    fi
    CLEANUP=
fi
unmount_and_check A
echo "scenario A: $(($(date +%s) - start)) s"

startb=$(date +%s)
echo "== scenario B: data and metadata filled together (meta $META_SIZE, data $DATA_SIZE)"
fresh_volume
read -r FFREE0 _ BFREE0 _ <<<"$(statfs)"
echo "fresh mount statfs: $(statfs)"
if fill_data "$MNT/data" && fill_xattrs "$MNT/fill"; then
    delete_all
    T0=$(now)
    back_mb=$((WRITTEN_MB * DATA_BACK_PCT / 100))
    CLEANUP='rm -f "$MNT/probe"'
    if until_ok make_xattr_file "$MNT/probe"; then
        echo "a file with a ${XATTR_BYTES}-byte xattr is made again $(since "$T0") s after the deletes"
    else
        fail "B: no file with a ${XATTR_BYTES}-byte xattr can be made $RECOVER_SECS s after every file was deleted ($LAST_ERR); statfs: $(statfs) (fresh: $FFREE0 free inodes)"
    fi
    CLEANUP='rm -f "$MNT/probe-data"'
    if until_ok dd if=/dev/zero of="$MNT/probe-data" bs=1M count="$back_mb" conv=fsync status=none; then
        echo "$back_mb MiB of data written again $(since "$T0") s after the deletes"
    else
        fail "B: $back_mb MiB of data cannot be written $RECOVER_SECS s after every file was deleted ($LAST_ERR); statfs: $(statfs) (fresh: $BFREE0 free blocks)"
    fi
    rm -f "$MNT/probe" "$MNT/probe-data"
    if until_ok space_back data; then
        echo "statfs shows the data and metadata space back after $(since "$T0") s: $(statfs) (fresh: $FFREE0 free inodes, $BFREE0 free blocks)"
    else
        fail "B: statfs does not show the space back $RECOVER_SECS s after the deletes: $(statfs) (fresh: $FFREE0 free inodes, $BFREE0 free blocks; $BACK_PCT% wanted)"
    fi
    CLEANUP=
fi
unmount_and_check B
echo "scenario B: $(($(date +%s) - startb)) s"

echo "enospc: ${#failures[@]} failed, $(($(date +%s) - start)) s"
for f in "${failures[@]}"; do echo "  $f"; done
[ ${#failures[@]} -eq 0 ]
