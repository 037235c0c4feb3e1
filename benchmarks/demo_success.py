"""`make demo` run N times as a user runs it (its own cluster each time): how often it reaches 475, and how long.

.venv/bin/python benchmarks/demo_success.py --runs 5
"""

import argparse
import re
import statistics
import subprocess
import sys
import time

from common import PROJECT_ROOT

SOLVED = 475.0
BEST = re.compile(r"^Best trial \S+: \S+ = ([0-9.eE+-]+)$", re.MULTILINE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        result = subprocess.run(["make", "-s", "demo"], cwd=PROJECT_ROOT, capture_output=True, text=True)
        took = time.monotonic() - started
        found = BEST.search(result.stdout)
        best = float(found.group(1)) if found else float("nan")
        rows.append((run, result.returncode, best, took))
        print(f"run {run}: exit {result.returncode}, best mean return {best:.1f}, {took:.0f} s", flush=True)
    solved = [row for row in rows if row[1] == 0 and row[2] >= SOLVED]
    print(f"\nmake demo, {args.runs} runs")
    print("| run | exit | best mean return | reached 475 | time |")
    print("|---|---|---|---|---|")
    for run, code, best, took in rows:
        print(f"| {run} | {code} | {best:.1f} | {'yes' if best >= SOLVED else 'no'} | {took:.0f} s |")
    print(f"\nsuccess rate {len(solved)}/{len(rows)}; median time {statistics.median(r[3] for r in rows):.0f} s")
    return 0 if len(solved) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
