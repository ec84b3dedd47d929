#!/usr/bin/env bash
# The scoutfs. xattr tags through the kernel on a mount: `xattr-tags.sh TARGET` (TARGET:
# see lib.sh; the checks are scoutfs's own, so only the scoutfs target makes sense).
# Setting or removing a tagged xattr needs CAP_SYS_ADMIN: an unprivileged user (`tests`,
# as in acl.sh) on a file it owns, and root without the capability, get EPERM, while
# reading one by name is allowed. A malformed tagged name is EINVAL, whoever asks (the
# tags are parsed before privilege is asked for), as are a bad .totl. value and a
# non-empty .indx. value. .hide. names are not listed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

target=${1:?usage: xattr-tags.sh TARGET}
[ "$target" = scoutfs ] || skip "the scoutfs. tags mean something only on scoutfs"
skip_unless_mountable setfattr getfattr setpriv
target_setup "$target"
start=$(date +%s)
fails=0

as_user() { setpriv --reuid=tests --regid=nogroup --clear-groups "$@"; }
# Root without CAP_SYS_ADMIN: out of the bounding and inheritable sets, it is not in the
# effective set of what is executed.
no_admin() { setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin "$@"; }
# `fails_with ERROR CMD...`: CMD fails and says ERROR (strerror text).
fails_with() {
    local want=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "FAIL $* (expected: $want)"
        fails=$((fails + 1))
    elif [[ "$out" == *"$want"* ]]; then
        echo "ok   $want: $*"
    else
        echo "FAIL $*: '$out' (expected: $want)"
        fails=$((fails + 1))
    fi
}
ok() { if "$@" >/dev/null 2>&1; then echo "ok   $*"; else echo "FAIL $* (expected success)"; fails=$((fails + 1)); fi; }
same() { if [ "$1" = "$2" ]; then echo "ok   $3"; else echo "FAIL $3: '$1' != '$2'"; fails=$((fails + 1)); fi; }

EPERM="Operation not permitted"
EINVAL="Invalid argument"

cd "$MNT"
touch f
chown tests:nogroup f
ok setfattr -n scoutfs.totl.t.1.2.3 -v 5 f
ok setfattr -n scoutfs.hide.indx.t.5.100 f
ok setfattr -n scoutfs.hide.note -v secret f
same "$(getfattr --only-values -n scoutfs.totl.t.1.2.3 f)" "5" "root reads its total's xattr"

# Unprivileged: a user xattr of its own file, yes; a tagged one, no; reading, yes.
ok as_user setfattr -n user.mine -v 1 f
fails_with "$EPERM" as_user setfattr -n scoutfs.totl.t.1.2.3 -v 6 f
fails_with "$EPERM" as_user setfattr -n scoutfs.srch.x -v 1 f
fails_with "$EPERM" as_user setfattr -x scoutfs.totl.t.1.2.3 f
fails_with "$EPERM" as_user setfattr -x scoutfs.hide.note f
# Well-formed tags with bad numbers: privilege is asked first, as in the original.
fails_with "$EPERM" as_user setfattr -n scoutfs.totl.t..2.3 -v 1 f
same "$(as_user getfattr --only-values -n scoutfs.totl.t.1.2.3 f)" "5" "reading a tagged xattr needs nothing"
same "$(as_user getfattr --only-values -n scoutfs.hide.note f)" "secret" "nor does reading a hidden one by name"

# Root without CAP_SYS_ADMIN is refused too.
fails_with "$EPERM" no_admin setfattr -n scoutfs.totl.t.1.2.3 -v 7 f
fails_with "$EPERM" no_admin setfattr -x scoutfs.hide.indx.t.5.100 f
ok no_admin setfattr -n user.root -v 1 f
same "$(getfattr --only-values -n scoutfs.totl.t.1.2.3 f)" "5" "refused changes changed nothing"

# Malformed tagged names: EINVAL, whoever asks.
for n in scoutfs.nope.x scoutfs.hide.hide.x scoutfs.totl.t..2.3 scoutfs.totl.t.1.2 \
    scoutfs.totl.indx.t.1.2.3 scoutfs.hide.indx.t.256.1 scoutfs.hide.indx.t.5; do
    fails_with "$EINVAL" setfattr -n "$n" -v 1 f
done
fails_with "$EINVAL" as_user setfattr -n scoutfs.nope.x -v 1 f
fails_with "$EINVAL" setfattr -x scoutfs.totl.t..2.3 f
for v in +1 10. - junk10 10junk; do
    fails_with "$EINVAL" setfattr -n scoutfs.totl.t.1.2.3 -v "$v" f
done
fails_with "$EINVAL" setfattr -n scoutfs.hide.indx.t.5.100 -v 1 f

# Hidden names are not listed; the others are.
listed=$(getfattr -d -m - --absolute-names f 2>/dev/null | grep -o '^[^=]*' | sort | tr '\n' ' ')
same "$listed" "# file: f scoutfs.totl.t.1.2.3 user.mine user.root " "listxattr leaves the hidden names out"
ok setfattr -x scoutfs.totl.t.1.2.3 f
ok setfattr -x scoutfs.hide.indx.t.5.100 f

echo "xattr-tags: $fails failed, $(($(date +%s) - start)) s"
[ "$fails" -eq 0 ]
