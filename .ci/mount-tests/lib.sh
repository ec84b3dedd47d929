# Shared by the mount test scripts: `target_setup TARGET` makes MNT a directory on the
# filesystem under test and installs an EXIT trap that tears down whatever it mounted.
#
# TARGET is one of
#   scoutfs   a fresh volume of sparse image files in a temporary folder, mounted with
#             `scoutfs mount` (the binary is $SCOUTFS, default target/release/scoutfs);
#             torn down with umount, then `scoutfs check` must find the volume clean
#   tmpfs     a fresh tmpfs (to validate the scripts themselves against a kernel fs)
#   DIR       an existing directory; nothing is mounted or unmounted
#
# A script that cannot run here calls `skip REASON`: it prints "skipped: REASON" and exits
# with status 77 (automake's SKIP), which run-all reports as skipped, never as passed.
# `target_setup` skips by itself when the target must be mounted but this is not root or
# there is no /dev/fuse.
#
# A killed FUSE daemon leaves a dead mount ("Transport endpoint is not connected"): the
# trap always unmounts, lazily if it must, so a failed or interrupted run leaves nothing.

set -euo pipefail

SCOUTFS=${SCOUTFS:-target/release/scoutfs}
SKIPPED=77
WORK=
MNT=
MOUNTED=
DAEMON_PID=

target_teardown() {
    local rc=$?
    set +e
    if [ -n "$MOUNTED" ]; then
        cd /
        if [ "$MOUNTED" != unmounted ] && ! umount "$MNT" 2>/dev/null; then
            # Busy or dead: detach it so nothing is left behind, and say so.
            echo "teardown: umount $MNT failed; detaching it lazily" >&2
            umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null
            rc=1
        fi
        if [ "$MOUNTED" = scoutfs ] || [ "$MOUNTED" = unmounted ]; then
            if ! wait_daemon; then
                kill -9 "$DAEMON_PID"
                rc=1
            elif [ $rc -eq 0 ]; then
                echo "== scoutfs check after umount"
                "$SCOUTFS" check "$WORK/meta.img" "$WORK/data.img" || rc=1
            fi
        fi
    fi
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit $rc
}

# Waits up to 30 s for the daemon to exit (it commits and exits once the kernel lets go
# of the mount); fails, saying so, if it does not.
wait_daemon() {
    local i
    for i in $(seq 1 300); do
        alive "$DAEMON_PID" || return 0
        sleep 0.1
    done
    echo "teardown: scoutfs daemon $DAEMON_PID did not exit after umount" >&2
    return 1
}

# Unmounts the scoutfs target in the middle of a test (for its offline part: commands on
# the unmounted devices) and waits for the daemon's final commit; the teardown then only
# checks the volume.
scoutfs_unmount() {
    umount "$MNT"
    wait_daemon
    MOUNTED=unmounted
}

# Whether process $1 runs (the daemon is reparented when `scoutfs mount` returns, and an
# exited daemon may stay a zombie until its new parent reaps it).
alive() {
    [ -n "$1" ] && [ -e "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# The pid of the daemon serving the mount: the process holding the meta image open.
scoutfs_daemon_pid() {
    local fd
    for fd in /proc/[0-9]*/fd/*; do
        if [ "$(readlink "$fd" 2>/dev/null)" = "$WORK/meta.img" ]; then
            fd=${fd#/proc/}
            echo "${fd%%/*}"
            return
        fi
    done
}

skip() {
    echo "skipped: $*"
    exit $SKIPPED
}

# Skip unless this can mount: root (FUSE mounts are made with mount(2)) and /dev/fuse.
require_mount() {
    [ "$(id -u)" -eq 0 ] || skip "not root (FUSE mounts are made with mount(2))"
    [ -c /dev/fuse ] || skip "no /dev/fuse"
}

# require_mount, and skip unless every command named in "$@" is here.
skip_unless_mountable() {
    require_mount
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null || skip "no $c"
    done
}

target_setup() {
    local target=$1
    case "$target" in
    scoutfs | tmpfs)
        require_mount
        WORK=$(mktemp -d -t scoutfs-mount-test.XXXXXX)
        MNT=$WORK/mnt
        # pjdfstest switches to unprivileged users, who must reach the mount point.
        chmod 755 "$WORK"
        mkdir "$MNT"
        trap target_teardown EXIT
        trap 'exit 130' INT TERM
        if [ "$target" = tmpfs ]; then
            mount -t tmpfs -o size=4g tmpfs "$MNT"
            MOUNTED=tmpfs
        else
            SCOUTFS=$(realpath "$SCOUTFS")
            "$SCOUTFS" mkfs -m "${SCOUTFS_META_SIZE:-2G}" -d "${SCOUTFS_DATA_SIZE:-8G}" \
                "$WORK/meta.img" "$WORK/data.img" >/dev/null
            # SCOUTFS_MOUNT_OPTS: mount options for the whole test (-o).
            "$SCOUTFS" mount ${SCOUTFS_MOUNT_OPTS:+-o "$SCOUTFS_MOUNT_OPTS"} \
                "$WORK/meta.img" "$WORK/data.img" "$MNT"
            MOUNTED=scoutfs
            DAEMON_PID=$(scoutfs_daemon_pid)
        fi
        ;;
    *)
        [ -d "$target" ] || { echo "no such directory: $target" >&2; exit 2; }
        MNT=$(cd "$target" && pwd)
        ;;
    esac
    echo "== testing on $target ($(stat -f -c %T "$MNT") at $MNT)"
}

# --- For the archive-agent tests (agent.sh, and scenario scripts like the original's) ---

# Runs "$@" as the unprivileged user nobody (uid and gid 65534, no supplementary groups,
# and so no capabilities), e.g. `as_nobody "$SCOUTFS" release FILE -V 1`. The program must
# be where nobody can run it (see nobody_copy).
as_nobody() {
    setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"
}

# Prints the path of a copy of $SCOUTFS that nobody can run (in $WORK, which is 0755).
nobody_copy() {
    if [ ! -x "$WORK/scoutfs-nobody" ]; then
        cp "$SCOUTFS" "$WORK/scoutfs-nobody"
        chmod 0755 "$WORK/scoutfs-nobody"
    fi
    echo "$WORK/scoutfs-nobody"
}

# Whether the `scoutfs` under test has the subcommand of `scoutfs ARGS...` (the original's
# ino-path, get-attr-x, move-blocks and others are not in this one yet). Probe with a path
# that does not exist (the command then fails harmlessly), e.g. `agent_supported release
# /nonexistent -V 1 -l 4K`.
agent_supported() {
    local out
    out=$("$SCOUTFS" "$@" 2>&1) || true
    [[ "$out" != *"unrecognized subcommand"* ]]
}

# Filters output to the original's golden spelling: the mount point as /mnt/test.
filter_mnt() {
    sed -e "s@$MNT@/mnt/test@g"
}

# Compares output file $2 with golden $1 (.ci/mount-tests/golden/$1, in the original's
# tests/golden style); prints the difference and fails if they differ.
check_golden() {
    local golden
    golden="$(dirname "${BASH_SOURCE[0]}")/golden/$1"
    if ! diff -u "$golden" "$2"; then
        echo "FAIL: output differs from golden $1 (above: - golden, + output)"
        return 1
    fi
}

# Checks that count their failures in $fails: `ok WHAT`, `fail WHAT`, and `same WHAT A B`
# (passes when the strings A and B are equal).
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
ok() { echo "ok   $*"; }
same() {
    if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: '$2' != '$3'"; fi
}

# Prints what `scoutfs data-waiting` lists on the mount once it lists anything (empty
# after 10 s of nothing): for a test whose reader was just started in the background.
data_waiting_soon() {
    local w=
    for _ in $(seq 1 200); do
        w=$("$SCOUTFS" data-waiting -I 0 -B 0 -p "$MNT")
        [ -n "$w" ] && break
        sleep 0.05
    done
    echo "$w"
}
