#!/usr/bin/env bash
# POSIX ACLs through the kernel on a mount: `acl.sh TARGET` (TARGET: see lib.sh). Sets
# ACLs with setfacl, reads them with getfacl, and checks that the kernel grants and
# denies an unprivileged user (`tests`, group `nogroup`: see install-mount-tools) what
# they say: a named-user entry, the mask after a chmod, inheritance of a default ACL by
# new files and directories (instead of the umask), and the mode bits an ACL sets.
# Then it remounts and checks that the ACLs persisted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

target=${1:?usage: acl.sh TARGET}
target_setup "$target"
start=$(date +%s)
fails=0

as_user() { setpriv --reuid=tests --regid=nogroup --clear-groups "$@"; }
ok() { if "$@" >/dev/null 2>&1; then echo "ok   $*"; else echo "FAIL $* (expected success)"; fails=$((fails + 1)); fi; }
no() { if "$@" >/dev/null 2>&1; then echo "FAIL $* (expected failure)"; fails=$((fails + 1)); else echo "ok   not: $*"; fi; }
same() { if [ "$1" = "$2" ]; then echo "ok   $3"; else echo "FAIL $3: '$1' != '$2'"; fails=$((fails + 1)); fi; }

cd "$MNT"
umask 022
mkdir d && chmod 700 d
echo secret > d/f && chmod 600 d/f
no as_user cat d/f
# A named user's entries: search on the directory, read on the file.
setfacl -m u:tests:x d
setfacl -m u:tests:r d/f
ok as_user cat d/f
no as_user sh -c "echo x >> d/f"
same "$(stat -c %A d/f)" "-rw-r-----" "the mask shows as the group bits"
same "$(getfacl -cp d/f | grep '^user:tests')" "user:tests:r--" "getfacl reads the entry back"
# chmod narrows the mask, and with it every named entry.
chmod 600 d/f
same "$(getfacl -cp d/f | grep '^mask')" "mask::---" "chmod sets the mask"
no as_user cat d/f
chmod 640 d/f
ok as_user cat d/f
# An ACL the mode says all of is not kept: only the mode changes.
cp -p d/f d/g
setfacl -b d/g
setfacl -m u::rwx,g::r,o::- d/g
same "$(stat -c %A d/g)" "-rwxr-----" "the mode an ACL sets"
no getfattr -n system.posix_acl_access d/g
# Default ACLs: what new inodes inherit instead of the umask.
setfacl -d -m u:tests:rwx,g::-,o::- d
touch d/new
mkdir d/sub
same "$(getfacl -cp d/new | grep '^user:tests')" "user:tests:rwx	#effective:rw-" "a new file inherits the entry, masked by its mode"
same "$(stat -c %a d/new)" "660" "a new file's mode comes from the default ACL, not the umask"
same "$(getfacl -cp d/sub | grep -c '^default:')" "5" "a new directory inherits the default ACL"
ok as_user sh -c "echo hi > d/new"
ok as_user touch d/sub/deeper
# Default ACLs only on directories; removing one brings the umask back.
no setfacl -d -m u:tests:r d/f
setfacl -k d
touch d/plain
same "$(stat -c %a d/plain)" "644" "without a default ACL the umask applies"
same "$(getfacl -cp d/plain | grep -c '^user:tests')" "0" "and nothing is inherited"
acls_before=$(getfacl -Rp d 2>/dev/null | sha256sum)

if [ "$target" = scoutfs ]; then
    cd /
    umount "$MNT"
    for i in $(seq 1 300); do alive "$DAEMON_PID" || break; sleep 0.1; done
    "$SCOUTFS" mount "$WORK/meta.img" "$WORK/data.img" "$MNT"
    DAEMON_PID=$(scoutfs_daemon_pid)
    cd "$MNT"
    same "$(getfacl -Rp d 2>/dev/null | sha256sum)" "$acls_before" "the ACLs after a remount"
    ok as_user cat d/f d/new
    no as_user cat d/g
fi

echo "acl: $fails failed, $(($(date +%s) - start)) s"
[ "$fails" -eq 0 ]
