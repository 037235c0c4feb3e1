"""KubeRay with Ray really running in the Pods (make k8s: the control plane, the real node and its Ray image):
the node's start, launch.py to the head Ready (KubeRay's probes against Ray) and the worker's Ray node alive,
a worker added by the autoscaler for a job that needs it and removed once idle, and --down to no container left
in containerd. One cluster at a time on the 2-CPU node; medians of N runs.

    .venv/bin/python benchmarks/kuberay_pods.py --runs 2
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import PROJECT_ROOT
from tabulate import tabulate

sys.path.insert(0, str(PROJECT_ROOT / "tests"))
import k8s_harness  # noqa: E402
import k8s_node  # noqa: E402


def until(condition: Callable[[], bool], timeout_s: float = 600) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not after {timeout_s} s")
        time.sleep(0.5)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    bin_dir = k8s_harness.binaries()
    if reason := k8s_harness.missing() or k8s_node.missing(bin_dir):
        print(reason, file=sys.stderr)
        return 1
    home = Path(tempfile.mkdtemp(prefix="kuberay_pods_bench_home_"))
    rows = []
    started = time.monotonic()
    with k8s_node.control_plane_with_real_node(bin_dir) as (plane, node):
        print(f"control plane and real node Ready in {time.monotonic() - started:.1f} s", flush=True)
        env = {**os.environ, **plane.environment, "HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(home / "token")}

        def kubectl(namespace: str, *command: str) -> str:
            return plane.kubectl("--namespace", namespace, *command, check=False)

        def in_head(namespace: str, *command: str) -> str:
            """What the command prints on stdout in the head's Ray container ('' if kubectl fails)."""
            head = kubectl(namespace, "get", "pods", "-l", "ray.io/node-type=head", "-o", "name").split()[0]
            try:
                return plane.kubectl("--namespace", namespace, "exec", head, "-c", "ray-head", "--", *command)
            except RuntimeError:
                return ""

        def workers(namespace: str) -> list[str]:
            return kubectl(namespace, "get", "pods", "-l", "ray.io/node-type=worker", "-o", "name").split()

        def launch(namespace: str, *flags: str) -> None:
            command = [sys.executable, str(PROJECT_ROOT / "launch.py"), "--namespace", namespace, "--image", node.image]
            subprocess.run([*command, *k8s_node.SMALL_CLUSTER_FLAGS, *flags], env=env, check=True, capture_output=True)

        def down(namespace: str, name: str) -> float:
            command = [sys.executable, str(PROJECT_ROOT / "launch.py"), "--namespace", namespace, "--down"]
            started = time.monotonic()
            subprocess.run([*command, "--name", name], env=env, check=True, capture_output=True)
            return time.monotonic() - started + until(lambda: not node.containers())

        for run in range(1, args.runs + 1):
            namespace = f"bench-{run}"
            plane.kubectl("create", "namespace", namespace)
            started = time.monotonic()
            launch(namespace, "--name", "fixed", "--min_workers", "1", "--address_file", str(home / "a"))
            head_ready = time.monotonic() - started
            worker_alive = head_ready + until(
                lambda ns=namespace: in_head(ns, "python", "-c", k8s_node.ALIVE_NODES).strip() == "2"
            )
            fixed_down = down(namespace, "fixed")
            launch(namespace, "--name", "scales", "--min_workers", "0", "--address_file", str(home / "a"))
            address = f"http://scales-head-svc.{namespace}.svc.cluster.local:8265"
            started = time.monotonic()
            said = in_head(
                namespace, "ray", "job", "submit", "--address", address, "--", "python", "-c", k8s_node.TWO_NODES_JOB
            )
            scaled_up = time.monotonic() - started
            assert "succeeded" in said, said
            idle_gone = until(lambda ns=namespace: not workers(ns))
            down(namespace, "scales")
            rows.append((run, head_ready, worker_alive, fixed_down, scaled_up, idle_gone))
            print(f"run {run}: " + ", ".join(f"{value:.1f} s" for value in rows[-1][1:]), flush=True)
    leftovers = node.leftovers()
    shutil.rmtree(home, ignore_errors=True)
    headers = [
        "run",
        "launch to head Ready",
        "worker's Ray node alive",
        "--down to no container",
        "job needing a worker: autoscaled and done",
        "idle worker removed (idleTimeoutSeconds 120)",
    ]
    medians = ["median", *(statistics.median(row[i] for row in rows) for i in range(1, 6))]
    print(tabulate([*rows, medians], headers=headers, floatfmt=".1f", tablefmt="github"))
    print(f"left on the machine after stop: {leftovers or 'nothing'}")
    return 0 if not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
