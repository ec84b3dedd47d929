#!/usr/bin/env bash
# The archive-agent commands through a real mount: `agent.sh scoutfs` mounts a fresh
# volume, makes files, and drives the commands by path as an agent does, then as the
# unprivileged user nobody (refused where the original refuses, and nothing changes), then
# on the unmounted devices.
#
#  1. statfs finds the mount by -p, by $SCOUTFS_MOUNT_PATH and by the working directory.
#  2. stat prints the original's fields; data_version moves with a write; a file outside
#     the mount is not on a scoutfs mount (ENOTTY).
#  3. walk-inodes lists the new inodes once committed, a header every 25 rows.
#  4. release / get-fiemap / stage: a file goes offline and comes back whole; a stale data
#     version is ESTALE.
#  5. setattr makes an empty file an offline file of a size.
#  6. data-waiting lists a blocked reader; data-wait-err fails it with EIO.
#  7. the tagged xattrs: list-hidden-xattrs, search-xattrs, read-xattr-totals,
#     read-xattr-index.
#  8. nobody: what needs no privilege works, the rest is refused (EPERM, or the open
#     fails), and the files are as they were.
#  9. offline: refused while mounted; after unmount, stat, walk-inodes and the xattr reads
#     on the devices say what the mount said.
#
# A part whose commands the `scoutfs` under test does not have is skipped with a
# "skipped: agent: PART: ..." line; if every part is, the test exits 77.
# Exit status 0 when all that ran passed, 1 when something failed (each failure named).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: agent.sh scoutfs}
if [ "$target" != scoutfs ]; then
    echo "agent.sh: only the scoutfs target" >&2
    exit 2
fi
. "$here/lib.sh"
skip_unless_mountable setpriv cmp
export SCOUTFS_META_SIZE=${AGENT_META_SIZE:-256M} SCOUTFS_DATA_SIZE=${AGENT_DATA_SIZE:-1G}
target_setup scoutfs
NOBODY_SCOUTFS=$(nobody_copy)

ran=0

# Whether the part named $1 can run: every `scoutfs` probe after it (a command with a
# path that does not exist, separated by `--`) is implemented by this build.
part() {
    local name=$1 probe=()
    shift
    echo "== $name"
    while [ $# -gt 0 ]; do
        if [ "$1" = -- ]; then
            agent_supported "${probe[@]}" || {
                echo "skipped: agent: $name: scoutfs ${probe[0]} is not in this build"
                return 1
            }
            probe=()
        else
            probe+=("$1")
        fi
        shift
    done
    ran=$((ran + 1))
}

# Runs scoutfs "$@" expecting success; prints its stdout.
sfs() { "$SCOUTFS" "$@"; }

# Expects `scoutfs ARGS...` (after the expected exit status and stderr text) to fail with
# that status and stderr; check named $1.
expect_fail() {
    local what=$1 want=$2 text=$3 out rc=0
    shift 3
    out=$("$@" 2>&1 >/dev/null) || rc=$?
    if [ "$rc" != "$want" ]; then
        fail "$what: exit $rc (want $want): $out"
    elif [[ "$out" != *"$text"* ]]; then
        fail "$what: expected '$text' in: $out"
    else
        ok "$what"
    fi
}


# `scoutfs stat -s FIELD FILE`.
field() { sfs stat -s "$1" "$2"; }

ino() { stat -c %i "$1"; }

NX=/nonexistent/agent-probe
xattrs_ran=
echo hello >"$MNT/f1"

if part "1. statfs by path" statfs -p "$NX" --; then
    a=$(sfs statfs -p "$MNT" -s fsid)
    b=$(SCOUTFS_MOUNT_PATH=$MNT sfs statfs -s fsid)
    c=$(cd "$MNT" && sfs statfs -s fsid)
    same "statfs -p, \$SCOUTFS_MOUNT_PATH and the working directory find one volume" "$a $a" "$b $c"
    [[ "$a" =~ ^[0-9a-f]{16}$ ]] && ok "fsid is 16 hex digits" || fail "fsid '$a'"
    names=$(sfs statfs -p "$MNT" | awk '{print $1}' | tr '\n' ' ')
    same "statfs prints the original's fields" "$names" \
        "fsid rid committed_seq total_meta_blocks total_data_blocks "
    total=$(sfs statfs -p "$MNT" -s total_data_blocks)
    [ "$total" -gt 0 ] && ok "total_data_blocks $total" || fail "total_data_blocks '$total'"
    if command -v python3 >/dev/null; then
        j=$(sfs statfs -p "$MNT" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["fsid"])')
        same "statfs --json has the fsid" "$j" "$a"
    fi
fi

if part "2. stat" stat "$NX" --; then
    names=$(sfs stat "$MNT/f1" | awk '{print $1}' | tr '\n' ' ')
    same "stat prints the original's fields" "$names" \
        "meta_seq data_seq data_version online_blocks offline_blocks crtime "
    v1=$(field data_version "$MNT/f1")
    echo more >>"$MNT/f1"
    v2=$(field data_version "$MNT/f1")
    [ "$v2" -gt "$v1" ] && ok "a write moves data_version ($v1 -> $v2)" ||
        fail "data_version $v1 -> $v2 after a write"
    [[ "$(field crtime "$MNT/f1")" =~ ^[0-9]+\.[0-9]{9}$ ]] && ok "crtime is SEC.NSEC" ||
        fail "crtime '$(field crtime "$MNT/f1")'"
    sfs stat "$MNT" >/dev/null && ok "stat of the mount's root directory" || fail "stat of the root"
    echo x >"$WORK/outside"
    expect_fail "stat of a file outside the mount" 1 \
        "is not on a scoutfs mount" sfs stat "$WORK/outside"
    expect_fail "... fails as ENOTTY" 1 \
        "scoutfs: stat failed: Inappropriate ioctl for device (25)" sfs stat "$WORK/outside"
    if command -v python3 >/dev/null; then
        j=$(sfs stat --json "$MNT/f1" |
            python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ino"], d["data_version"])')
        same "stat --json has the inode and data_version" "$j" "$(ino "$MNT/f1") $v2"
    fi
fi

if part "3. walk-inodes" walk-inodes meta_seq 0 -1 -p "$NX" --; then
    mkdir "$MNT/w"
    for i in $(seq 1 30); do echo "$i" >"$MNT/w/$i"; done
    sfs sync "$MNT"
    out=$(sfs walk-inodes meta_seq 0 -1 -p "$MNT")
    missing=0
    for i in $(seq 1 30); do
        awk -v ino="$(ino "$MNT/w/$i")" '$4 == ino {f=1} END {exit !f}' <<<"$out" || missing=$((missing + 1))
    done
    same "every new inode is in the meta_seq index" "$missing" 0
    rows=$(grep -vc '^#' <<<"$out")
    headers=$(grep -c '^#' <<<"$out")
    same "a header before every 25 rows" "$headers" $(((rows + 24) / 25))
    same "rows are counted from 0" "$(grep -v '^#' <<<"$out" | awk '{print $1}' | tail -1)" $((rows - 1))
    dout=$(sfs walk-inodes data_seq 0 -1 -p "$MNT")
    awk -v ino="$(ino "$MNT/w")" '$4 == ino {f=1} END {exit f}' <<<"$dout" &&
        ok "directories are not in the data_seq index" || fail "a directory in data_seq: $dout"
    if agent_supported statfs -p "$NX"; then
        last=$(sfs statfs -p "$MNT" -s committed_seq)
        same "nothing after the committed seq" \
            "$(sfs walk-inodes meta_seq $((last + 1)) -1 -p "$MNT")" ""
    fi
fi

if part "4. release, get-fiemap, stage" release "$NX" -V 1 -l 4K -- \
    stage "$NX" "$NX" -V 1 -l 4K -- get-fiemap "$NX" --; then
    head -c 100000 /dev/urandom >"$WORK/arch"
    cp "$WORK/arch" "$MNT/r"
    v=$(field data_version "$MNT/r")
    if command -v python3 >/dev/null; then
        # A reader that has the file open (its pages in the kernel's cache) and reads it
        # again after the release: the pages went with the release, so the read waits.
        got=$(python3 - "$SCOUTFS" "$MNT/r" "$v" <<'PY'
import os, signal, subprocess, sys
scoutfs, path, vers = sys.argv[1:]
fd = os.open(path, os.O_RDONLY)
while os.read(fd, 1 << 20):
    pass
subprocess.run([scoutfs, "release", path, "-V", vers], check=True)
def timed_out(*_):
    raise TimeoutError
signal.signal(signal.SIGALRM, timed_out)
signal.alarm(1)
try:
    os.pread(fd, 4096, 0)
    print("read from the cache")
except TimeoutError:
    print("waited")
PY
        )
        same "release (by a reader holding the file open, whose next read waits)" "$got" waited
    else
        sfs release "$MNT/r" -V "$v" && ok "release" || fail "release"
    fi
    same "all blocks offline" "$(field online_blocks "$MNT/r") $(field offline_blocks "$MNT/r")" "0 25"
    same "get-fiemap shows one offline extent" "$(sfs get-fiemap "$MNT/r")" \
        "$(printf '0: offset: 0 0 length: 25 flags: O.L\nextents: 1')"
    same "release keeps the data version" "$(field data_version "$MNT/r")" "$v"
    expect_fail "release with a stale data version" 1 \
        "$(printf 'release ioctl failed: Stale file handle (116)\nscoutfs: release failed: Stale file handle (116)')" \
        sfs release "$MNT/r" -V $((v + 1))
    expect_fail "stage with a stale data version" 1 \
        "$(printf 'stage returned -1, not 100000: error Stale file handle (116)\nscoutfs: stage failed: Input/output error (5)')" \
        sfs stage "$WORK/arch" "$MNT/r" -V $((v + 1))
    sfs stage "$WORK/arch" "$MNT/r" -V "$v" && ok "stage" || fail "stage"
    cmp -s "$WORK/arch" "$MNT/r" && ok "the staged file reads back whole" || fail "staged contents differ"
    same "all blocks online" "$(field online_blocks "$MNT/r") $(field offline_blocks "$MNT/r")" "25 0"
    same "stage keeps the data version" "$(field data_version "$MNT/r")" "$v"
    # A stage of a megabyte goes to the daemon in pieces, and is staged as one: a
    # truncate waiting for the first block cannot run between the pieces.
    head -c $((1 << 20)) /dev/urandom >"$WORK/big"
    cp "$WORK/big" "$MNT/big"
    v=$(field data_version "$MNT/big")
    sfs release "$MNT/big" -V "$v"
    truncate -s 4096 "$MNT/big" &
    truncater=$!
    for _ in $(seq 1 100); do
        [ -n "$(sfs data-waiting -I 0 -B 0 -p "$MNT")" ] && break
        sleep 0.05
    done
    same "the truncate waits" "$(sfs data-waiting -I 0 -B 0 -p "$MNT")" \
        "ino $(ino "$MNT/big") iblock 0 ops change_size"
    sfs stage "$WORK/big" "$MNT/big" -V "$v" && ok "a stage of 1 MiB with a truncate waiting" ||
        fail "a stage of 1 MiB with a truncate waiting"
    wait "$truncater" && same "then the truncate ran" "$(stat -c %s "$MNT/big")" 4096 ||
        fail "the truncate failed"
    cmp -s <(head -c 4096 "$WORK/big") "$MNT/big" && ok "... on the staged bytes" ||
        fail "the truncated file is not the staged bytes"
fi

if part "5. setattr" setattr "$NX" -V 1 -o -s 4K -- stat "$NX" --; then
    touch "$MNT/s"
    sfs setattr -V 1 -o -s 40000 "$MNT/s" && ok "setattr -V 1 -o -s 40000" || fail "setattr"
    same "size, data_version, offline blocks" \
        "$(stat -c %s "$MNT/s") $(field data_version "$MNT/s") $(field offline_blocks "$MNT/s")" \
        "40000 1 10"
    touch "$MNT/t"
    sfs setattr -t 67305985.999999999 -V 1 -s 1 "$MNT/t"
    same "setattr -t sets the ctime" "$(TZ=GMT stat -c %z "$MNT/t")" \
        "1972-02-19 00:06:25.999999999 +0000"
    expect_fail "setattr of a file with data" 1 \
        "setattr_more ioctl failed on '$MNT/f1': Invalid argument (22)" \
        sfs setattr -V 1 -s 1 "$MNT/f1"
    expect_fail "setattr of a directory" 1 "Is a directory (21)" sfs setattr -V 1 -s 1 "$MNT/w"
fi

if part "6. data-waiting, data-wait-err" setattr "$NX" -V 1 -o -s 4K -- \
    data-waiting -I 0 -B 0 -p "$NX" -- data-wait-err -I 1 -V 1 -F 0 -C 1 -O read -E -5 -p "$NX" --; then
    touch "$MNT/o"
    sfs setattr -V 1 -o -s 8192 "$MNT/o"
    o=$(ino "$MNT/o")
    same "nothing waits yet" "$(sfs data-waiting -I 0 -B 0 -p "$MNT")" ""
    # Blocks the reader ("$@") has to wait for: what data-waiting lists once it does.
    blocked() {
        "$@" 2>"$WORK/reader.err" >/dev/null &
        reader=$!
        waiting=$(data_waiting_soon)
    }
    # One direct read: one request, one waiter.
    blocked dd if="$MNT/o" of=/dev/null bs=4096 count=1 iflag=direct status=none
    same "data-waiting lists the blocked reader" "$waiting" "ino $o iblock 0 ops read"
    same "data-wait-err fails it" \
        "$(sfs data-wait-err -p "$MNT" -I "$o" -V 1 -F 0 -C 8192 -O read -E -5)" \
        "data_wait_err found 1 waiters."
    if wait "$reader"; then
        fail "the reader succeeded"
    else
        grep -q "Input/output error" "$WORK/reader.err" && ok "the reader got EIO" ||
            fail "the reader failed otherwise: $(cat "$WORK/reader.err")"
    fi
    # A buffered read: the kernel's failed readahead is followed by a read of the page
    # alone, which waits again; each wait is failed in turn. Recorded, not judged, unless
    # the reader never ends.
    blocked cat "$MNT/o"
    rounds=0
    while kill -0 "$reader" 2>/dev/null && [ $rounds -lt 10 ]; do
        sfs data-wait-err -p "$MNT" -I "$o" -V 1 -F 0 -C 8192 -O read -E -5 >/dev/null
        rounds=$((rounds + 1))
        sleep 0.2
    done
    if kill -0 "$reader" 2>/dev/null; then
        kill "$reader"
        fail "a buffered reader still waits after $rounds data-wait-err rounds"
    else
        wait "$reader" || true
        echo "note: a buffered reader (cat) took $rounds data-wait-err round(s) to fail"
    fi
    # A stage wakes the readers waiting for it; its own open of the file does not wait
    # behind them (their pages are locked while they wait).
    head -c 20000 /dev/urandom >"$WORK/w.arch"
    cp "$WORK/w.arch" "$MNT/w2"
    v=$(field data_version "$MNT/w2")
    sfs release "$MNT/w2" -V "$v"
    cat "$MNT/w2" >"$WORK/w.read" &
    r1=$!
    blocked dd if="$MNT/w2" of=/dev/null bs=4096 count=1 iflag=direct status=none
    if timeout 20 "$SCOUTFS" stage "$WORK/w.arch" "$MNT/w2" -V "$v"; then
        ok "stage with readers waiting"
    else
        fail "stage with readers waiting (exit $?)"
    fi
    wait "$r1" && wait "$reader" && cmp -s "$WORK/w.arch" "$WORK/w.read" &&
        ok "the waiting readers read the staged bytes" || fail "the waiting readers"
    same "nothing waits any more" "$(sfs data-waiting -I 0 -B 0 -p "$MNT")" ""
fi

# Whether `scoutfs ARGS...` (a probe, as for part) is implemented by this build; if not,
# says that check $1 is skipped.
have() {
    local what=$1
    shift
    agent_supported "$@" && return 0
    echo "skipped: agent: $what: scoutfs $1 is not in this build"
    return 1
}

if ! command -v setfattr >/dev/null; then
    echo "skipped: agent: 7. tagged xattrs: no setfattr"
elif part "7. tagged xattrs"; then
    touch "$MNT/x" "$MNT/y"
    xattrs_ran=1
    setfattr -n scoutfs.hide.srch.agent_test -v 1 "$MNT/x"
    setfattr -n scoutfs.totl.agent.1.2.3 -v 5 "$MNT/x"
    setfattr -n scoutfs.totl.agent.1.2.3 -v 7 "$MNT/y"
    setfattr -n scoutfs.indx.agent.9.77 "$MNT/y"
    sfs sync "$MNT"
    if have list-hidden-xattrs list-hidden-xattrs "$NX"; then
        same "list-hidden-xattrs" "$(sfs list-hidden-xattrs "$MNT/x")" \
            "scoutfs.hide.srch.agent_test"
    fi
    if have search-xattrs search-xattrs x -p "$NX"; then
        sfs search-xattrs scoutfs.hide.srch.agent_test -p "$MNT" | grep -qx "$(ino "$MNT/x")" &&
            ok "search-xattrs finds the inode" || fail "search-xattrs did not find $(ino "$MNT/x")"
    fi
    if have read-xattr-totals read-xattr-totals -p "$NX"; then
        sfs read-xattr-totals -p "$MNT" | grep -qx "1.2.3 = 12, 2" &&
            ok "read-xattr-totals sums the totl xattrs" ||
            fail "totals: $(sfs read-xattr-totals -p "$MNT")"
    fi
    if have read-xattr-index read-xattr-index -p "$NX"; then
        same "read-xattr-index" "$(sfs read-xattr-index -p "$MNT" 9.0.0 9.-1.-1)" \
            "9.77 = $(ino "$MNT/y")"
    fi
fi

# The state of files, to prove that refused requests change nothing: their attributes,
# their hidden xattrs, and what `scoutfs stat` says of them where it can.
snapshot() {
    local f
    for f in "$@"; do
        stat -c '%n %s %Y %Z %a' "$f"
        sfs stat "$f" 2>/dev/null | tr '\n' ' '
        getfattr -d -m - "$f" 2>/dev/null | tr '\n' ' '
        echo
    done
}

if part "8. unprivileged callers"; then
    N=$NOBODY_SCOUTFS
    mkdir "$MNT/nb"
    chmod 0777 "$MNT/nb"
    head -c 10000 /dev/urandom >"$MNT/nb/rw"
    chmod 0666 "$MNT/nb/rw"
    echo root >"$MNT/nb/ro"
    chmod 0600 "$MNT/nb/ro"
    touch "$MNT/nb/empty"
    chmod 0666 "$MNT/nb/empty"
    files=("$MNT/nb/rw" "$MNT/nb/ro" "$MNT/nb/empty")
    before=$(snapshot "${files[@]}")
    # What needs no privilege.
    for c in "stat $MNT/nb/rw" "statfs -p $MNT" "walk-inodes meta_seq 0 -1 -p $MNT" \
        "data-waiting -I 0 -B 0 -p $MNT" "get-fiemap $MNT/nb/rw" "list-hidden-xattrs $MNT/nb/rw"; do
        read -ra a <<<"$c"
        probe=("${a[@]}")
        probe[-1]=$NX
        [ "${a[0]}" = walk-inodes ] || [ "${a[0]}" = data-waiting ] || [ "${a[0]}" = statfs ] ||
            probe=("${a[0]}" "$NX")
        have "8. nobody: ${a[0]}" "${probe[@]}" || continue
        as_nobody "$N" "${a[@]}" >/dev/null && ok "nobody: ${a[0]}" || fail "nobody: ${a[0]}"
    done
    if have "8. nobody: release" release "$NX" -V 1 -l 4K && have "8. nobody: release" stat "$NX"; then
        expect_fail "nobody: release of a file it may not write" 1 \
            "failed to open '$MNT/nb/ro': Permission denied (13)" \
            as_nobody "$N" release "$MNT/nb/ro" -V "$(field data_version "$MNT/nb/ro")"
    fi
    if have "8. nobody: setattr" setattr "$NX" -V 1 -o -s 4K; then
        expect_fail "nobody: setattr (CAP_SYS_ADMIN)" 1 \
            "setattr_more ioctl failed on '$MNT/nb/empty': Operation not permitted (1)" \
            as_nobody "$N" setattr -V 1 -o -s 4096 "$MNT/nb/empty"
    fi
    if have "8. nobody: data-wait-err" data-wait-err -I 1 -V 1 -F 0 -C 1 -O read -E -5 -p "$NX"; then
        expect_fail "nobody: data-wait-err (CAP_SYS_ADMIN)" 1 \
            "data_wait_err returned -1: error Operation not permitted (1)" \
            as_nobody "$N" data-wait-err -p "$MNT" -I "$(ino "$MNT/nb/rw")" -V 1 -F 0 -C 4096 \
            -O read -E -5
    fi
    if have "8. nobody: search-xattrs" search-xattrs x -p "$NX"; then
        expect_fail "nobody: search-xattrs (CAP_SYS_ADMIN)" 1 \
            "search_xattrs ioctl failed: Operation not permitted (1)" \
            as_nobody "$N" search-xattrs scoutfs.hide.srch.agent_test -p "$MNT"
    fi
    if have "8. nobody: read-xattr-totals" read-xattr-totals -p "$NX"; then
        expect_fail "nobody: read-xattr-totals (CAP_SYS_ADMIN)" 1 \
            "read_xattr_totals ioctl failed: Operation not permitted (1)" \
            as_nobody "$N" read-xattr-totals -p "$MNT"
    fi
    if have "8. nobody: read-xattr-index" read-xattr-index -p "$NX"; then
        expect_fail "nobody: read-xattr-index (CAP_SYS_ADMIN)" 1 \
            "read_xattr_index ioctl failed: Operation not permitted (1)" \
            as_nobody "$N" read-xattr-index -p "$MNT"
    fi
    if have "8. nobody: list-hidden-xattrs" list-hidden-xattrs "$NX"; then
        expect_fail "nobody: list-hidden-xattrs of a file it may not read" 1 \
            "failed to open '$MNT/nb/ro': Permission denied (13)" \
            as_nobody "$N" list-hidden-xattrs "$MNT/nb/ro"
    fi
    same "nothing changed under the refused requests" "$(snapshot "${files[@]}")" "$before"
    # As in the original, a caller that may write a file may release it.
    if have "8. nobody: release" release "$NX" -V 1 -l 4K && have "8. nobody: release" stat "$NX"; then
        v=$(field data_version "$MNT/nb/rw")
        as_nobody "$N" release "$MNT/nb/rw" -V "$v" && ok "nobody: release of a file it may write" ||
            fail "nobody: release of a writable file"
        same "... and it is offline" "$(field online_blocks "$MNT/nb/rw")" 0
    fi
fi

if part "9. offline"; then
    dev=(--meta-device "$WORK/meta.img" --data-device "$WORK/data.img")
    offline_cmds=("walk-inodes meta_seq 0 -1" "read-xattr-totals"
        "search-xattrs scoutfs.hide.srch.agent_test" "read-xattr-index 9.0.0 9.-1.-1")
    f1=$(ino "$MNT/f1")
    expect_fail "an offline read is refused while mounted" 1 "is mounted" \
        sfs walk-inodes meta_seq 0 -1 "${dev[@]}"
    sfs sync "$MNT"
    declare -A mounted_out=()
    for cmd in "${offline_cmds[@]}"; do
        read -ra c <<<"$cmd"
        [ "${c[0]}" = walk-inodes ] || [ -n "$xattrs_ran" ] || continue
        have "9. offline ${c[0]}" "${c[@]}" --meta-device "$NX" --data-device "$NX" || continue
        mounted_out[$cmd]=$(sfs "${c[@]}" -p "$MNT")
    done
    mstat=
    if have "9. offline stat" stat "$NX"; then
        mstat=$(sfs stat "$MNT/f1")
    fi
    scoutfs_unmount
    if [ -n "$mstat" ]; then
        same "offline stat says what the mount said" "$(sfs stat "${dev[@]}" "$f1")" "$mstat"
        expect_fail "offline stat of an inode that is not there" 1 \
            "ioctl failed: No such file or directory (2)" \
            sfs stat "${dev[@]}" 999999999
    fi
    for cmd in "${offline_cmds[@]}"; do
        read -ra c <<<"$cmd"
        [ -n "${mounted_out[$cmd]+set}" ] || continue
        same "offline ${c[0]} says what the mount said" \
            "$(sfs "${c[@]}" "${dev[@]}")" "${mounted_out[$cmd]}"
    done
fi

if [ "$ran" -eq 0 ]; then
    skip "this build has no agent command"
fi
echo "== agent: $fails failures"
[ "$fails" -eq 0 ]
