#!/usr/bin/env bash
# A durable unmount: `umount.sh scoutfs` writes files (none fsynced) on a fresh mount, runs
# `umount MNT`, and at once -- no wait, no daemon may be left -- reads the devices with
# `scoutfs check` (clean) and `scoutfs print` (the inode count the super and the log trees
# record is the root and every file), then mounts the volume read-only and finds every
# file with its bytes.
#
# `umount MNT` waits for the daemon's final commit through the helper
# /sbin/umount.fuse.scoutfs (a link to `scoutfs`, which runs as `scoutfs umount`); the
# test installs it for its run if it is not there, and takes it out again at the end.
# Afterwards, for the record only (never a failure), the same writes are unmounted with
# `fusermount3 -u`, which runs no helper, and what the devices hold at once is printed.
#
# Exit status 0 when everything is found; "skipped: REASON" and 77 when the test cannot run
# (not root, no /dev/fuse, /sbin/umount.fuse.scoutfs taken by something else).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: umount.sh scoutfs}
if [ "$target" != scoutfs ]; then
    echo "umount.sh: only the scoutfs target" >&2
    exit 2
fi
. "$here/lib.sh"
skip_unless_mountable md5sum

HELPER=/sbin/umount.fuse.scoutfs
INSTALLED=
SCOUTFS=$(realpath "$SCOUTFS")
if [ -e "$HELPER" ] || [ -L "$HELPER" ]; then
    if [ "$(realpath "$HELPER")" != "$SCOUTFS" ]; then
        echo "note: $HELPER is there already ($(realpath "$HELPER")); the test uses it"
    fi
else
    ln -s "$SCOUTFS" "$HELPER"
    INSTALLED=1
fi
FILES=${UMOUNT_FILES:-300}

target_setup scoutfs
trap 'rc=$?; set +e; [ -n "$INSTALLED" ] && rm -f "$HELPER"; (exit $rc); target_teardown' EXIT
failures=()
fail() {
    echo "FAIL: $*"
    failures+=("$*")
}

# N small files of different sizes, a large one, a directory tree, a rename and an
# unlink; none fsynced. Their checksums go to $WORK/sums (paths relative to the mount).
write_files() {
    local i
    mkdir -p "$MNT/d/e"
    for i in $(seq 1 "$FILES"); do
        head -c $((i * 37 % 9000 + 1)) /dev/urandom >"$MNT/d/f$i"
    done
    head -c $((24 << 20)) /dev/urandom >"$MNT/d/e/big"
    echo gone >"$MNT/d/unlinked"
    rm "$MNT/d/unlinked"
    echo renamed >"$MNT/d/before"
    mv "$MNT/d/before" "$MNT/d/e/after"
    (cd "$MNT" && find . -type f -print0 | sort -z | xargs -0 md5sum) >"$WORK/sums"
}

# The inode count the devices record: the super's and every log tree's delta.
inode_count() {
    "$SCOUTFS" print "$WORK/meta.img" | awk '
        /^  inode_count:/ { n += $2 }
        /log trees rid/ { for (i = 1; i < NF; i++) if ($i == "inode_count_delta") n += $(i + 1) }
        END { print n + 0 }'
}

echo "== $FILES files, a 24 MiB file, a rename and an unlink, none fsynced; then umount"
write_files
want=$((FILES + 5)) # the root, d, d/e, f1..fN, big, after
cd /
start=$(date +%s.%N)
umount "$MNT"
MOUNTED=
echo "umount returned after $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s"
if alive "$DAEMON_PID"; then
    fail "the daemon (pid $DAEMON_PID) still runs when umount has returned"
fi
echo "== scoutfs check at once"
"$SCOUTFS" check "$WORK/meta.img" "$WORK/data.img" || fail "check found problems"
got=$(inode_count)
echo "print: $got inodes recorded ($want expected)"
[ "$got" = "$want" ] || fail "print records $got inodes, not $want"

echo "== mounted read-only: every file and its bytes"
"$SCOUTFS" mount -o ro "$WORK/meta.img" "$WORK/data.img" "$MNT"
MOUNTED=scoutfs
DAEMON_PID=$(scoutfs_daemon_pid)
if (cd "$MNT" && md5sum --quiet -c "$WORK/sums"); then
    echo "all $(wc -l <"$WORK/sums") files found with their bytes"
else
    fail "files missing or different after umount"
fi
[ -e "$MNT/d/unlinked" ] && fail "the unlinked file is there"
cd /
umount "$MNT"
MOUNTED=

echo "== for the record: the same with fusermount3 -u (no helper, no wait)"
if command -v fusermount3 >/dev/null; then
    rm -f "$WORK/meta.img" "$WORK/data.img"
    "$SCOUTFS" mkfs -m 2G -d 8G "$WORK/meta.img" "$WORK/data.img" >/dev/null
    "$SCOUTFS" mount "$WORK/meta.img" "$WORK/data.img" "$MNT"
    MOUNTED=scoutfs
    DAEMON_PID=$(scoutfs_daemon_pid)
    write_files
    cd /
    fusermount3 -u "$MNT"
    MOUNTED=
    running=no
    alive "$DAEMON_PID" && running=yes
    # print may read a volume the daemon is still writing: a torn read is only noise here.
    echo "fusermount3 -u returned; daemon still running: $running; inodes on the devices at once: $(inode_count 2>/dev/null || echo '?') of $want"
    for _ in $(seq 1 300); do alive "$DAEMON_PID" || break; sleep 0.1; done
else
    echo "(no fusermount3)"
fi

echo "umount: ${#failures[@]} failed"
for f in "${failures[@]}"; do echo "  $f"; done
[ ${#failures[@]} -eq 0 ]
