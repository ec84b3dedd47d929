#!/usr/bin/env bash
# A daemon killed with SIGKILL: `kill9.sh scoutfs` writes files on a fresh mount -- some
# fsynced one by one, some committed with `scoutfs sync MNT`, some neither, and a file
# unlinked while a process holds it open -- kills the daemon with SIGKILL, runs
# `scoutfs check` on the devices as the crash left them, remounts, and checks that every
# fsynced and synced file is there with its bytes, that the volume checks clean after
# the unmount (lib.sh), and that the open-unlinked file's space came back (the mount
# deleted the orphan). Files neither fsynced nor synced may be there or not; how many
# survived is printed.
#
# Exit status 0 when every fsynced and synced file is found; "skipped: REASON" and 77 when
# the test cannot run (not root, no /dev/fuse, no python3 or md5sum).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: kill9.sh scoutfs}
if [ "$target" != scoutfs ]; then
    echo "kill9.sh: only the scoutfs target" >&2
    exit 2
fi
. "$here/lib.sh"
skip_unless_mountable python3 md5sum
ROUNDS=${KILL9_ROUNDS:-2}
target_setup scoutfs
failures=()
fail() {
    echo "FAIL: $*"
    failures+=("$*")
}

# Writes FILE of $2 random bytes and fsyncs it (python3: dd's conv=fsync needs a size).
write_fsync() {
    python3 - "$1" "$2" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
os.write(fd, os.urandom(int(sys.argv[2])))
os.fsync(fd)
os.close(fd)
EOF
}

remount() {
    "$SCOUTFS" mount "$WORK/meta.img" "$WORK/data.img" "$MNT"
    MOUNTED=scoutfs
    DAEMON_PID=$(scoutfs_daemon_pid)
}

: >"$WORK/sums"
for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r: fsynced, synced and unsynced files, an open unlinked file; SIGKILL"
    mkdir -p "$MNT/r$r"
    for i in $(seq 1 20); do
        write_fsync "$MNT/r$r/fsynced$i" $((i * 1500))
    done
    for i in $(seq 1 20); do
        head -c $((i * 700)) /dev/urandom >"$MNT/r$r/synced$i"
    done
    # A rename over an fsynced file, then the whole mount committed.
    head -c 5000 /dev/urandom >"$MNT/r$r/tmp"
    mv "$MNT/r$r/tmp" "$MNT/r$r/fsynced1"
    "$SCOUTFS" sync "$MNT" || fail "round $r: scoutfs sync $MNT failed"
    (cd "$MNT" && md5sum "r$r"/fsynced* "r$r"/synced*) >>"$WORK/sums"
    # A large file unlinked while open, committed as an orphan.
    head -c $((16 << 20)) /dev/urandom >"$MNT/r$r/orphan"
    exec 7<"$MNT/r$r/orphan"
    rm "$MNT/r$r/orphan"
    "$SCOUTFS" sync "$MNT/r$r" || fail "round $r: scoutfs sync $MNT/r$r failed"
    free_before=$(stat -f -c %f "$MNT")
    # And files left to the next periodic commit, which does not come.
    for i in $(seq 1 20); do
        head -c 3000 /dev/urandom >"$MNT/r$r/unsynced$i"
    done
    kill -9 "$DAEMON_PID"
    for _ in $(seq 1 100); do alive "$DAEMON_PID" || break; sleep 0.05; done
    exec 7<&-
    # The dead mount goes (no helper: its daemon is gone).
    cd /
    umount -i "$MNT" 2>/dev/null || fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
    MOUNTED=
    echo "== check of the devices as the crash left them"
    "$SCOUTFS" check "$WORK/meta.img" "$WORK/data.img" || fail "round $r: check after the kill found problems"
    remount
    if (cd "$MNT" && md5sum --quiet -c "$WORK/sums"); then
        echo "all $(wc -l <"$WORK/sums") fsynced and synced files so far found with their bytes"
    else
        fail "round $r: fsynced or synced files missing or different after the kill"
    fi
    [ -e "$MNT/r$r/orphan" ] && fail "round $r: the unlinked file has a name again"
    survived=$(find "$MNT/r$r" -name 'unsynced*' | wc -l)
    echo "unsynced files that survived the kill: $survived of 20 (either is allowed)"
    # The orphan's 16 MiB come back once the remount's deletion is committed and merged.
    "$SCOUTFS" sync "$MNT"
    "$SCOUTFS" sync "$MNT"
    free_after=$(stat -f -c %f "$MNT")
    back=$(((free_after - free_before) * $(stat -f -c %S "$MNT") >> 20))
    echo "free space since the orphan was committed: ${back} MiB more"
    [ "$back" -ge 15 ] || fail "round $r: the orphan's 16 MiB did not come back (${back} MiB)"
done

echo "kill9: ${#failures[@]} failed"
for f in "${failures[@]}"; do echo "  $f"; done
[ ${#failures[@]} -eq 0 ]
