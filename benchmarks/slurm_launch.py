"""SLURM clusters: `launch.py --cluster_host slurm` from submission to every node alive, and `--down` to nothing left.

Runs against the real two-node SLURM of the tests (Debian's slurmctld/slurmd/munge, started here as
root; `make slurm` installs them). A cluster of two nodes, one CPU each, as in the tests.

    .venv/bin/python benchmarks/slurm_launch.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT, describe

sys.path.insert(0, str(PROJECT_ROOT / "tests"))

from slurm_harness import SlurmForTests, missing


def launch(env: dict[str, str], cwd: Path, *args: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "launch.py"), "--cluster_host", "slurm", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if why_not := missing():
        print(f"slurm_launch.py skipped: {why_not}")
        return 0
    slurm = SlurmForTests()
    work = Path(tempfile.mkdtemp(prefix="bench_slurm_"))
    env = {**os.environ, **slurm.environment, "ISAACLAB_RAY_TOKEN_DIR": str(work / "tokens")}
    flags = ["--name", "bench", "--max_workers", "1", "--cpu_per_worker", "1", "--gpu_per_worker", "0"]
    flags += ["--ram_gb_per_worker", "2", "--state_dir", str(work / "state"), "--address_file", str(work / "addr")]
    ready, down = [], []
    try:
        slurm.start()
        for _ in range(args.repeats):
            ready.append(launch(env, work, *flags))
            down.append(launch(env, work, "--down", "--name", "bench", "--state_dir", str(work / "state")))
            assert slurm.queue() == [], slurm.queue()
    finally:
        slurm.stop()
    print(f"\nSLURM, 2-node cluster (head + 1 worker), {args.repeats} runs")
    print(f"  launch.py, sbatch to every node alive and ~/.ray_address written: {describe(ready)}")
    print(f"  launch.py --down, scancel to the job gone from squeue:            {describe(down)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
