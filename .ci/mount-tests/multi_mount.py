#!/usr/bin/env python3
"""Several mounts of one volume, each checked against the others after every step.

    multi_mount.py SEED STEPS MNT1 MNT2 [MNT3 ...]

The mounts are different FUSE mounts (different processes, each its own kernel cache)
of one scoutfs volume. Phase 1, STEPS steps: a random mount does a random operation in
one of three shared directories (create and write, overwrite part of a file, append,
truncate, rename over an existing name, rename across directories, unlink, mkdir,
rmdir, chmod, setxattr, removexattr, hard link) and closes what it opened; then every
mount's view of the three directories (names; kind, mode, size, nlink and mtime of each;
file contents; xattrs) must equal the first mount's. A mount showing a stale name, size,
attribute, byte or xattr after another mount's change fails the step.

Phase 2: a file opened on one mount and unlinked on another stays readable through the
open descriptor until it is closed, and is gone from every mount's namespace at once.

Phase 3: one process per mount runs its own random operations in the shared
directories at the same time for a few seconds (errors such as ENOENT from races are
expected and counted, never fatal); afterwards all views must agree.

Prints one line per phase and exits 1 at the first disagreement, printing both views.
"""

import errno
import hashlib
import multiprocessing as mp
import os
import random
import stat
import sys
import time

DIRS = ["d0", "d1", "d2"]
NAMES = [f"n{i}" for i in range(8)]


def view(mnt):
    """What a mount shows of the shared directories."""
    out = {}
    for d in DIRS:
        p = os.path.join(mnt, d)
        try:
            names = sorted(os.listdir(p))
        except FileNotFoundError:
            out[d] = None
            continue
        ents = {}
        for n in names:
            q = os.path.join(p, n)
            try:
                st = os.lstat(q)
            except FileNotFoundError:
                ents[n] = "vanished"
                continue
            e = {
                "kind": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "nlink": st.st_nlink,
                "mtime": st.st_mtime_ns,
            }
            if stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                with open(q, "rb") as f:
                    e["sha"] = hashlib.sha1(f.read()).hexdigest()[:12]
            if stat.S_ISDIR(st.st_mode):
                e["entries"] = sorted(os.listdir(q))
            try:
                e["xattrs"] = {
                    x: os.getxattr(q, x, follow_symlinks=False)
                    for x in sorted(os.listxattr(q, follow_symlinks=False))
                }
            except OSError:
                e["xattrs"] = "error"
            ents[n] = e
        out[d] = ents
    return out


def compare(mnts, what):
    first = view(mnts[0])
    for m in mnts[1:]:
        other = view(m)
        if other != first:
            print(f"FAIL: {what}: {m} disagrees with {mnts[0]}")
            for d in DIRS:
                if first.get(d) != other.get(d):
                    a, b = first.get(d) or {}, other.get(d) or {}
                    for n in sorted(set(a) | set(b)):
                        if a.get(n) != b.get(n):
                            print(f"  {d}/{n}:\n    {mnts[0]}: {a.get(n)}\n    {m}: {b.get(n)}")
            sys.exit(1)


def random_op(rng, mnt):
    """One random operation through mount mnt; returns its description."""
    d = rng.choice(DIRS)
    n = rng.choice(NAMES)
    p = os.path.join(mnt, d, n)
    kind = rng.choice(
        ["create", "create", "overwrite", "append", "truncate", "rename", "rename_x",
         "unlink", "mkdir", "rmdir", "chmod", "setxattr", "removexattr", "link"]
    )
    try:
        if kind == "create":
            with open(p, "wb") as f:
                f.write(rng.randbytes(rng.randrange(0, 20000)))
        elif kind == "overwrite":
            with open(p, "r+b") as f:
                f.seek(rng.randrange(0, 16384))
                f.write(rng.randbytes(rng.randrange(1, 9000)))
        elif kind == "append":
            with open(p, "ab") as f:
                f.write(rng.randbytes(rng.randrange(1, 5000)))
        elif kind == "truncate":
            os.truncate(p, rng.randrange(0, 30000))
        elif kind == "rename":
            os.rename(p, os.path.join(mnt, d, rng.choice(NAMES)))
        elif kind == "rename_x":
            os.rename(p, os.path.join(mnt, rng.choice(DIRS), rng.choice(NAMES)))
        elif kind == "unlink":
            os.unlink(p)
        elif kind == "mkdir":
            os.mkdir(p, 0o750)
        elif kind == "rmdir":
            os.rmdir(p)
        elif kind == "chmod":
            os.chmod(p, rng.choice([0o600, 0o644, 0o755, 0o700]))
        elif kind == "setxattr":
            os.setxattr(p, f"user.k{rng.randrange(3)}", rng.randbytes(rng.randrange(1, 40)))
        elif kind == "removexattr":
            os.removexattr(p, f"user.k{rng.randrange(3)}")
        elif kind == "link":
            os.link(p, os.path.join(mnt, rng.choice(DIRS), rng.choice(NAMES)))
        return f"{kind} {d}/{n}: ok"
    except OSError as e:
        # Names that are absent, directories where files are meant and the like: the
        # random choice, not the filesystem.
        if e.errno in (errno.ENOENT, errno.EEXIST, errno.EISDIR, errno.ENOTDIR,
                       errno.ENOTEMPTY, errno.ENODATA, errno.EPERM, errno.EINVAL):
            return f"{kind} {d}/{n}: {errno.errorcode[e.errno]}"
        raise


def racer(seed, mnt, secs, out):
    rng = random.Random(seed)
    end = time.monotonic() + secs
    ops = 0
    while time.monotonic() < end:
        random_op(rng, mnt)
        ops += 1
    out.put(ops)


def main():
    seed, steps, mnts = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    rng = random.Random(seed)
    for d in DIRS:
        os.makedirs(os.path.join(mnts[0], d), exist_ok=True)
    compare(mnts, "after mkdir of the shared directories")

    for step in range(steps):
        m = rng.choice(mnts)
        what = random_op(rng, m)
        compare(mnts, f"step {step} on {m}: {what}")
    print(f"phase 1: {steps} steps, every mount's view equal after each")

    a, b = mnts[0], mnts[1]
    p = os.path.join(a, "d0", "open-unlinked")
    data = rng.randbytes(50000)
    with open(p, "wb") as f:
        f.write(data)
    fd = os.open(p, os.O_RDONLY)
    os.unlink(os.path.join(b, "d0", "open-unlinked"))
    for m in mnts:
        if os.path.exists(os.path.join(m, "d0", "open-unlinked")):
            print(f"FAIL: the unlinked name is still seen on {m}")
            sys.exit(1)
    got = os.pread(fd, len(data) + 1, 0)
    os.close(fd)
    if got != data:
        print(f"FAIL: the open-unlinked file read {len(got)} bytes differing from those written")
        sys.exit(1)
    compare(mnts, "after the open-unlinked file was closed")
    print("phase 2: an open-unlinked file stays readable on its mount until closed")

    secs = float(os.environ.get("MULTI_MOUNT_RACE_SECS", "5"))
    q = mp.Queue()
    procs = [mp.Process(target=racer, args=(seed * 31 + i, m, secs, q)) for i, m in enumerate(mnts)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
        if pr.exitcode != 0:
            print(f"FAIL: a racer exited with {pr.exitcode}")
            sys.exit(1)
    total = sum(q.get() for _ in procs)
    compare(mnts, "after the concurrent phase")
    print(f"phase 3: {total} operations by {len(mnts)} mounts at once, views equal after")


if __name__ == "__main__":
    main()
