#!/usr/bin/env python3
"""Eight processes racing open, open(O_CREAT), unlink and rename-over on shared names.

    name_race.py DIR SECONDS

In DIR, the names `keep0`..`keep3` always exist: they are only ever replaced by a
rename over them, never unlinked. The names `churn0`..`churn3` come and go. For SECONDS:

  2 readers     open(keepN, O_RDONLY)                         ENOENT is a failure
  2 creators    open(keepN or churnN, O_CREAT|O_WRONLY)       ENOENT is a failure
  2 renamers    write a private tmp name, rename it over keepN or churnN
  2 unlinkers   unlink(churnN)                                ENOENT is expected

A name that always exists must always open, and open(O_CREAT) never says ENOENT (the
directory exists throughout). Prints one line per kind of operation with its count and
errors, then "ENOENT for names that always exist: N"; exits 1 if N > 0 or any other
error was seen, 0 otherwise.
"""

import errno
import multiprocessing as mp
import os
import sys
import time

KEEP = [f"keep{i}" for i in range(4)]
CHURN = [f"churn{i}" for i in range(4)]


def worker(kind, idx, root, secs, out):
    counts = {"ops": 0, "enoent": 0, "other": 0, "first_other": ""}
    end = time.monotonic() + secs
    n = idx
    tmp = os.path.join(root, f"tmp.{kind}.{idx}")

    def failed(e, where):
        if e.errno == errno.ENOENT:
            counts["enoent"] += 1
        else:
            counts["other"] += 1
            if not counts["first_other"]:
                counts["first_other"] = f"{where}: {e}"

    while time.monotonic() < end:
        n += 1
        if kind == "reader":
            path = os.path.join(root, KEEP[n % 4])
            try:
                os.close(os.open(path, os.O_RDONLY))
            except OSError as e:
                failed(e, path)
        elif kind == "creator":
            names = KEEP if n % 2 else CHURN
            path = os.path.join(root, names[n % 4])
            try:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            except OSError as e:
                failed(e, path)
        elif kind == "renamer":
            names = KEEP if n % 2 else CHURN
            path = os.path.join(root, names[(n // 2) % 4])
            try:
                fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
                os.write(fd, b"x" * (n % 64))
                os.close(fd)
                os.rename(tmp, path)
            except OSError as e:
                failed(e, path)
        elif kind == "unlinker":
            path = os.path.join(root, CHURN[n % 4])
            try:
                os.unlink(path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    failed(e, path)
        counts["ops"] += 1
    out.put((kind, idx, counts))


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    root, secs = sys.argv[1], float(sys.argv[2])
    os.makedirs(root, exist_ok=True)
    for name in KEEP + CHURN:
        with open(os.path.join(root, name), "wb"):
            pass
    out = mp.Queue()
    kinds = ["reader", "creator", "renamer", "unlinker"]
    procs = [
        mp.Process(target=worker, args=(k, i, root, secs, out))
        for k in kinds
        for i in range(2)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    bad = 0
    other = 0
    for kind in kinds:
        rs = [c for k, _, c in results if k == kind]
        ops = sum(c["ops"] for c in rs)
        enoent = sum(c["enoent"] for c in rs)
        oth = sum(c["other"] for c in rs)
        firsts = [c["first_other"] for c in rs if c["first_other"]]
        print(
            f"  {kind:9} {ops:8} ops, {enoent} ENOENT, {oth} other errors"
            + (f" (first: {firsts[0]})" if firsts else "")
        )
        if kind in ("reader", "creator"):
            bad += enoent
        other += oth
    print(f"ENOENT for names that always exist: {bad}")
    return 1 if bad or other else 0


if __name__ == "__main__":
    sys.exit(main())
