#!/usr/bin/env python3
"""What the WAL of an aotel database holds, per table: frames per commit in the WAL's current cycle.

Run by scripts/perf/walmap.sh; by hand, stop aotel with SIGKILL first (a clean stop checkpoints and
empties the WAL), then: scripts/perf/walmap.py PATH/TO/aotel.db
"""
import collections
import sqlite3
import struct
import sys

db = sys.argv[1]
owner = {}
# dbstat needs SQLite built with it (Python's usually is); opened read-only, the WAL stays as it is.
con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
for name, page in con.execute("SELECT name, pageno FROM dbstat"):
    owner[page] = name
data = open(db + "-wal", "rb").read()
_, _, page_size, _, salt1, salt2, _, _ = struct.unpack(">IIIIIIII", data[:32])
per_table = collections.Counter()
commits, frames, in_commit, sizes = 0, 0, 0, []
off = 32
while off + 24 + page_size <= len(data):
    page, commit, s1, s2 = struct.unpack(">IIII", data[off:off + 16])
    if (s1, s2) != (salt1, salt2):
        break  # frames of an earlier cycle
    frames += 1
    in_commit += 1
    # Pages no table owns are pointer-map (auto_vacuum) or free pages.
    per_table[owner.get(page, "(pointer map or free)")] += 1
    if commit:
        commits += 1
        sizes.append(in_commit)
        in_commit = 0
    off += 24 + page_size
n = max(commits, 1)
print(f"{frames} frames, {commits} commits, {frames / n:.1f} frames per commit")
if sizes:
    sizes.sort()
    print("frames per commit p10/p50/p90/max:",
          sizes[len(sizes) // 10], sizes[len(sizes) // 2], sizes[9 * len(sizes) // 10], sizes[-1])
for name, count in per_table.most_common():
    print(f"{count / n:8.2f}  {name}")
