#!/usr/bin/env python3
"""Times several commands in turns: run 1 of every command, then run 2 of
every command, and so on (benches/rows.sh).

This VM's disk drifts by 20-40% over minutes; timing all runs of ours,
then all runs of the anchor, then the limit lets the drift land on one of
them and decide the ratio. In turns, every command sees the same drift.

Usage: interleave.py --runs N --warmup W --out PREFIX NAME PREP CMD [NAME PREP CMD...]
PREP runs (sh -c, untimed) before every run of CMD, warm-up runs too.
Writes PREFIX-NAME.json in hyperfine's layout ({"results": [{"median",
"times"}]}), which rows.sh reads.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time


def run(cmd, what):
    r = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit("%s failed (exit %d): %s\n%s" % (what, r.returncode, cmd, r.stderr.decode(errors="replace")[-2000:]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("triples", nargs="+")
    a = p.parse_args()
    if len(a.triples) % 3:
        sys.exit("NAME PREP CMD triples expected")
    cmds = [a.triples[i:i + 3] for i in range(0, len(a.triples), 3)]
    times = {name: [] for name, _, _ in cmds}
    for _ in range(a.warmup):
        for name, prep, cmd in cmds:
            run(prep, "prepare of " + name)
            run(cmd, name)
    for _ in range(a.runs):
        for name, prep, cmd in cmds:
            run(prep, "prepare of " + name)
            t0 = time.perf_counter()
            run(cmd, name)
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        with open("%s-%s.json" % (a.out, name), "w") as f:
            json.dump({"results": [{"command": name, "median": statistics.median(ts), "times": ts}]}, f)


if __name__ == "__main__":
    main()
