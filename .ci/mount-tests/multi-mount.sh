#!/usr/bin/env bash
# Three FUSE mounts of one volume in three processes: `multi-mount.sh scoutfs` mounts a
# fresh volume with server_addr=127.0.0.1:0 (that daemon serves it and mounts itself
# over TCP), then twice more (each finds the devices taken and joins the server the
# volume's server record names), runs multi_mount.py (every mount's view checked
# against the others after each step of random namespace, data and xattr operations in
# shared directories; an open-unlinked file; all mounts at once), unmounts the joining
# mounts and then the serving one, and `scoutfs check` must find the volume clean.
#
# With MULTI_MOUNT_NETNS=1 the joining mounts run in network namespaces of their own,
# reaching the server over veth pairs (skipped without `ip`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: multi-mount.sh scoutfs}
[ "$target" = scoutfs ] || { echo "multi-mount.sh: only the scoutfs target" >&2; exit 2; }
. "$here/lib.sh"
skip_unless_mountable python3
SCOUTFS=$(realpath "$SCOUTFS")
WORK=$(mktemp -d -t scoutfs-multi.XXXXXX)
chmod 755 "$WORK"
MNTS=("$WORK/m1" "$WORK/m2" "$WORK/m3")
NETNS=()
SERVER_IP=127.0.0.1
teardown() {
    local rc=$?
    set +e
    cd /
    for m in "${MNTS[2]}" "${MNTS[1]}" "${MNTS[0]}"; do
        mountpoint -q "$m" && { umount "$m" || { umount -l "$m"; rc=1; }; }
    done
    # The serving daemon exits once every mount has left.
    for i in $(seq 1 300); do
        pgrep -f "scoutfs mount.*$WORK/meta.img" >/dev/null || break
        sleep 0.1
    done
    if pgrep -f "scoutfs mount.*$WORK/meta.img" >/dev/null; then
        echo "FAIL: a scoutfs daemon is still running"
        pkill -9 -f "scoutfs mount.*$WORK/meta.img"
        rc=1
    elif [ $rc -eq 0 ]; then
        echo "== scoutfs check after umount"
        "$SCOUTFS" check "$WORK/meta.img" "$WORK/data.img" || rc=1
    fi
    for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null; done
    ip link del smm-br 2>/dev/null
    rm -rf "$WORK"
    exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM
mkdir "${MNTS[@]}"
"$SCOUTFS" mkfs -m 2G -d 4G "$WORK/meta.img" "$WORK/data.img" >/dev/null

join_cmd=()
if [ "${MULTI_MOUNT_NETNS:-0}" = 1 ]; then
    command -v ip >/dev/null || skip "no ip command for network namespaces"
    # A bridge on the host (the server's side) and a namespace per joining mount.
    ip link add smm-br type bridge
    ip addr add 10.77.0.1/24 dev smm-br
    ip link set smm-br up
    SERVER_IP=10.77.0.1
    for i in 2 3; do
        n=smm-ns$i-$$
        ip netns add "$n"
        NETNS+=("$n")
        ip link add "smm-v$i" type veth peer name eth0 netns "$n"
        ip link set "smm-v$i" master smm-br up
        ip -n "$n" addr add "10.77.0.$i/24" dev eth0
        ip -n "$n" link set eth0 up
        ip -n "$n" link set lo up
    done
fi

echo "== the serving mount"
"$SCOUTFS" mount -o "server_addr=$SERVER_IP:0" "$WORK/meta.img" "$WORK/data.img" "${MNTS[0]}"
for i in 1 2; do
    echo "== joining mount $((i + 1))"
    if [ ${#NETNS[@]} -gt 0 ]; then
        # Only the network namespace: the FUSE mount is made in the host's mount
        # namespace, where the test sees it.
        nsenter --net="/run/netns/${NETNS[$((i - 1))]}" \
            "$SCOUTFS" mount "$WORK/meta.img" "$WORK/data.img" "${MNTS[$i]}"
    else
        "$SCOUTFS" mount "$WORK/meta.img" "$WORK/data.img" "${MNTS[$i]}"
    fi
done
python3 "$here/multi_mount.py" "${MULTI_MOUNT_SEED:-1}" "${MULTI_MOUNT_STEPS:-300}" "${MNTS[@]}"
