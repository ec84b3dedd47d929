#!/usr/bin/env bash
# Names racing through a real mount: `name-race.sh scoutfs` runs name_race.py (eight
# processes: open, open(O_CREAT), unlink and rename-over on shared names) for
# NAME_RACE_SECS seconds (15 by default; the issue's figure is a minute: 60) on a fresh
# scoutfs mount, then the same on an ext4 of a loop device, and fails if either gets
# ENOENT for a name that always exists (ext4 is the control: none there means the race
# itself is sound). The scoutfs volume must check clean after its umount (lib.sh).
#
# What it catches: an inode deleted while the kernel still holds it (its lookup count),
# so that a name the kernel has cached reaches an inode the daemon no longer has.
#
# Exit status 0 when neither gets ENOENT; "skipped: REASON" and 77 when the test cannot run
# at all (not root, no /dev/fuse, no python3). Without mkfs.ext4 or losetup the ext4 run
# is skipped with a message and the scoutfs run still decides.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

target=${1:?usage: name-race.sh scoutfs}
if [ "$target" != scoutfs ]; then
    echo "name-race.sh: only the scoutfs target (it runs ext4 itself as the control)" >&2
    exit 2
fi
SECS=${NAME_RACE_SECS:-15}

. "$here/lib.sh"
skip_unless_mountable python3
target_setup scoutfs
failures=0
LOOP=
EXT4=

ext4_teardown() {
    set +e
    [ -n "$EXT4" ] && mountpoint -q "$EXT4" && umount "$EXT4"
    [ -n "$LOOP" ] && losetup -d "$LOOP"
}
# lib.sh's trap tears the scoutfs mount down; the ext4 goes first.
trap 'rc=$?; set +e; ext4_teardown; (exit $rc); target_teardown' EXIT

echo "== scoutfs: eight racers for $SECS s"
python3 "$here/name_race.py" "$MNT/race" "$SECS" || failures=$((failures + 1))

if command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null; then
    echo "== ext4 on a loop device (the control): eight racers for $SECS s"
    truncate -s 512M "$WORK/ext4.img"
    mkfs.ext4 -q -F "$WORK/ext4.img"
    LOOP=$(losetup -f --show "$WORK/ext4.img")
    EXT4=$WORK/ext4
    mkdir "$EXT4"
    mount "$LOOP" "$EXT4"
    python3 "$here/name_race.py" "$EXT4/race" "$SECS" || failures=$((failures + 1))
    umount "$EXT4"
    losetup -d "$LOOP"
    LOOP=
else
    echo "ext4 control skipped: no mkfs.ext4 or losetup"
fi

echo "name-race: $failures failed"
[ $failures -eq 0 ]
