#!/usr/bin/env bash
# Guarded devices, fallocate past the free space and SEEK_HOLE through a real mount:
# `guard-seek.sh TARGET` (TARGET: see lib.sh; the device parts run on the scoutfs target
# only, the rest on any, so the script itself can be tried on tmpfs).
#
# 1. `scoutfs mkfs -f` of the mounted volume is refused, saying who holds it, and the
#    mount goes on (the file written before is still read back after it).
# 2. A copy of the metadata image mounted beside the same data device is refused (the
#    mount holds the data device too), and `scoutfs check` of the copy says that two
#    volumes claim the data device.
# 3. `fallocate` of more than the free space fails with ENOSPC, leaves the file empty and,
#    once the mount has committed (an fsync: freed blocks count as free from the commit
#    that frees them), the free space exactly as before.
# 4. SEEK_HOLE and SEEK_DATA (python3's os.lseek) find the hole and the data of a sparse
#    file, and ENXIO at its end.
#
# Small volume (256M of metadata, 1G of data): the whole run takes a few seconds.
# Exit status: 0 when all pass, 1 when one fails (each failure named); "skipped: REASON"
# and 0 only when the test cannot run at all (not root, no /dev/fuse for scoutfs), or
# for part 4 alone when python3 is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

target=${1:?usage: guard-seek.sh TARGET}
. "$here/lib.sh"
[ "$target" = scoutfs ] && skip_unless_mountable
export SCOUTFS_META_SIZE=${GUARD_META_SIZE:-256M} SCOUTFS_DATA_SIZE=${GUARD_DATA_SIZE:-1G}
target_setup "$target"
fails=0

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
ok() { echo "ok   $*"; }

# Whether text $1 contains $2; the check named $3.
says() {
    case "$1" in
    *"$2"*) ok "$3" ;;
    *) fail "$3: expected '$2' in: $1" ;;
    esac
}

head -c 300000 /dev/urandom >"$WORK/keep.orig"
cp "$WORK/keep.orig" "$MNT/keep"
sync "$MNT/keep"

if [ "$target" = scoutfs ]; then
    meta=$WORK/meta.img data=$WORK/data.img
    # 1. mkfs -f of the mounted volume.
    if out=$("$SCOUTFS" mkfs -f "$meta" "$data" 2>&1); then
        fail "mkfs -f of the mounted volume succeeded: $out"
    else
        says "$out" "is in use: held by the scoutfs mount of" "mkfs -f of the mounted volume is refused"
        says "$out" "-f does not override this" "the refusal says -f does not override it"
    fi
    cmp -s "$WORK/keep.orig" "$MNT/keep" && ok "the mount reads its file after the refused mkfs" ||
        fail "the file changed under the refused mkfs"

    # 2. A copy of the metadata image beside the same data device.
    cp --sparse=always "$meta" "$WORK/copy.img"
    mkdir "$WORK/mnt2"
    if out=$("$SCOUTFS" mount "$WORK/copy.img" "$data" "$WORK/mnt2" 2>&1); then
        fail "a mount of a copied metadata image with the same data device succeeded"
        umount "$WORK/mnt2" || umount -l "$WORK/mnt2"
    else
        says "$out" "DATA-DEVICE $data is already in use" "a mount of a copied metadata image is refused"
        says "$out" "no two mounts may share a data device" "the refusal says why"
    fi
    if out=$("$SCOUTFS" check "$WORK/copy.img" "$data" 2>&1); then
        fail "check of the copy beside the mounted data device passed: $out"
    else
        says "$out" "two volumes claim DATA-DEVICE $data" "check of the copy names the claimed data device"
    fi
    rm -f "$WORK/copy.img"
fi

# 3. fallocate past the free space.
read -r bsize avail free < <(stat -f -c '%S %a %f' "$MNT")
want=$(((avail + 4096) * bsize))
if out=$(fallocate -l "$want" "$MNT/big" 2>&1); then
    fail "fallocate of $want bytes with $((avail * bsize)) free succeeded"
else
    says "$out" "No space left on device" "fallocate past the free space fails with ENOSPC"
fi
if [ -e "$MNT/big" ]; then
    [ "$(stat -c '%s %b' "$MNT/big")" = "0 0" ] && ok "the failed fallocate left its file empty" ||
        fail "the failed fallocate left $(stat -c '%s bytes, %b blocks' "$MNT/big")"
    # fsync: commits the mount, which counts the blocks freed again as free.
    sync "$MNT/big"
fi
read -r _ avail_after free_after < <(stat -f -c '%S %a %f' "$MNT")
[ "$avail_after $free_after" = "$avail $free" ] && ok "df as before the failed fallocate ($free free blocks)" ||
    fail "df after the failed fallocate: $free_after free, $avail_after available; before: $free, $avail"
rm -f "$MNT/big"

# 4. SEEK_HOLE and SEEK_DATA on a sparse file: data at 0 and at 1 MiB, a hole between.
if ! command -v python3 >/dev/null; then
    echo "skipped: SEEK_HOLE part: python3 is missing"
elif out=$(python3 - "$MNT/sparse" <<'EOF' 2>&1
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.pwrite(fd, b"a" * 4096, 0)
os.pwrite(fd, b"b" * 4096, 1 << 20)
size = (1 << 20) + 4096
got = [os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 4096, os.SEEK_DATA),
       os.lseek(fd, 1 << 20, os.SEEK_HOLE), os.lseek(fd, 100, os.SEEK_DATA)]
want = [4096, 1 << 20, size, 100]
try:
    os.lseek(fd, size, os.SEEK_DATA)
    got.append("no error")
except OSError as e:
    got.append(errno.errorcode.get(e.errno, e.errno))
want.append("ENXIO")
if got != want:
    sys.exit(f"lseek answers {got}, expected {want}")
EOF
); then
    ok "SEEK_HOLE finds the hole of a sparse file (and SEEK_DATA its data, ENXIO at the end)"
else
    fail "SEEK_HOLE/SEEK_DATA: $out"
fi

if [ $fails -ne 0 ]; then
    echo "guard-seek: $fails failures"
    exit 1
fi
echo "guard-seek: all passed"
