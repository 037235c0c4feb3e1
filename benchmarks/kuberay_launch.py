"""KubeRay on a real control plane (make k8s): launch.py to every head Ready and ~/.ray_address written, and
--down to nothing of ours left once the garbage collector has run; medians of N runs.

.venv/bin/python benchmarks/kuberay_launch.py --runs 3
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "tests"))
import k8s_harness

SEED_FLAGS = ["--cluster_host", "google_cloud", "--image", "nvcr.io/nvidia/isaac-lab:2.3.0"]
SEED_FLAGS += ["--min_workers", "1", "--max_workers", "4", "--num_clusters", "3"]


def left_in(plane: k8s_harness.KubernetesForTests, namespace: str) -> int:
    """Pods, Services and Secrets still in the namespace."""
    listing = plane.kubectl("get", "pods,services,secrets", "--namespace", namespace, "-o", "json")
    return len(json.loads(listing)["items"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if reason := k8s_harness.missing():
        print(reason, file=sys.stderr)
        return 1
    home = Path(tempfile.mkdtemp(prefix="kuberay_bench_home_"))
    plane = k8s_harness.KubernetesForTests(k8s_harness.binaries())
    started = time.monotonic()
    plane.start()
    print(f"control plane up in {time.monotonic() - started:.1f} s", flush=True)
    env = {**os.environ, **plane.environment, "HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(home / "token")}
    rows = []
    try:
        for run in range(1, args.runs + 1):
            namespace = f"bench-{run}"
            plane.kubectl("create", "namespace", namespace)
            launch = [sys.executable, str(PROJECT_ROOT / "launch.py"), "--namespace", namespace]
            started = time.monotonic()
            subprocess.run([*launch, *SEED_FLAGS], env=env, check=True, capture_output=True)
            ready = time.monotonic() - started
            started = time.monotonic()
            down = [*launch, "--down", "--name", "isaac-lab-hyperparameter-tuner"]
            subprocess.run(down, env=env, check=True, capture_output=True)
            while left_in(plane, namespace):
                time.sleep(0.2)
            gone = time.monotonic() - started
            rows.append((run, ready, gone))
            print(f"run {run}: ready and written {ready:.1f} s, down to nothing left {gone:.1f} s", flush=True)
    finally:
        plane.stop()
        shutil.rmtree(home, ignore_errors=True)
    print("\nlaunch.py --num_clusters 3 (a head and a GPU worker each) on kube-apiserver v1.36.3 + KubeRay v1.6.1")
    print("| run | launch to every head Ready, ~/.ray_address written | --down to nothing left |")
    print("|---|---|---|")
    for run, ready, gone in rows:
        print(f"| {run} | {ready:.1f} s | {gone:.1f} s |")
    ready_median = statistics.median(row[1] for row in rows)
    print(f"| median | {ready_median:.1f} s | {statistics.median(row[2] for row in rows):.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
