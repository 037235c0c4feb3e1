"""The grok_*.sh scripts: write ~/.ray_address for KubeRay clusters (kubectl), SLURM clusters, or other Ray clusters."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ray_workflow import address_file, log_progress_to, slurm
from ray_workflow import local_cluster as lc
from ray_workflow.cli_types import positive_float
from ray_workflow.discovery import (
    DiscoveryError,
    given_addresses,
    keep_tokens,
    pod_addresses,
    port_forward,
    running_local_head,
    wait_for_heads,
)
from ray_workflow.errors import script_main  # noqa: E402
from ray_workflow.kubectl import Kubectl


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    sources = parser.add_subparsers(dest="source", required=True)
    kube = sources.add_parser("kubectl", help="our KubeRay clusters in a namespace")
    kube.add_argument("--namespace", default="default")
    kube.add_argument("--name", help="only the cluster of this name (or its numbered clusters <name>-N)")
    kube.add_argument("--timeout_s", type=positive_float, default=600.0, help="wait this long for head pods to run")
    kube.add_argument("--kubectl_context")
    kube.add_argument(
        "--port_forward",
        action="store_true",
        help="forward local ports to each dashboard (for use outside the cluster network)",
    )
    slurm_source = sources.add_parser("slurm", help="our SLURM clusters (launch.py --cluster_host slurm)")
    slurm_source.add_argument("--name", help="only the cluster of this name (or its numbered clusters <name>-N)")
    slurm_source.add_argument(
        "--timeout_s", type=positive_float, default=600.0, help="wait this long for every node to join"
    )
    slurm_source.add_argument(
        "--state_dir", type=Path, default=slurm.DEFAULT_STATE_DIR, help="the --state_dir given to launch.py"
    )
    ray_source = sources.add_parser("ray", help="Ray clusters not on Kubernetes")
    for source in (kube, slurm_source, ray_source):
        source.add_argument("--output", type=Path, default=address_file.DEFAULT_PATH, help="address file to write")
    ray_source.add_argument("--address", action="append", default=[], help="HOST:PORT or http://HOST:PORT")
    ray_source.add_argument("--cluster_name", action="append", default=[], help="a name per --address")
    ray_source.add_argument(
        "--state_dir", type=Path, default=lc.DEFAULT_STATE_DIR, help="where local_clusters.py records its clusters"
    )
    return parser


def _kubectl(args: argparse.Namespace) -> int:
    kubectl = Kubectl(args.kubectl_context)
    heads = wait_for_heads(args.namespace, kubectl, args.name, args.timeout_s)
    if not args.port_forward:
        clusters = pod_addresses(heads)
        keep_tokens(heads, clusters, args.namespace, kubectl)
        address_file.update(clusters, args.output)
        print(f"wrote {len(clusters)} cluster address(es) to {args.output}")
        return 0
    forwards = port_forward(list(heads), args.namespace, kubectl)
    try:
        keep_tokens(heads, forwards.addresses, args.namespace, kubectl)
        address_file.update(forwards.addresses, args.output)
        for cluster in forwards.addresses:
            print(f"{cluster.name}: {cluster.dashboard_url}")
        print(f"wrote {len(forwards.addresses)} forwarded address(es) to {args.output}; Ctrl-C stops forwarding")
        while forwards.alive():
            time.sleep(0.5)
        print("error: a kubectl port-forward exited; the addresses no longer work", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        forwards.stop()


def _slurm(args: argparse.Namespace) -> int:
    jobs = slurm.our_jobs(args.name)
    if not jobs:
        raise DiscoveryError(
            f"no queued or running SLURM cluster of ours{f' named {args.name!r}' if args.name else ''}"
        )
    clusters = slurm.wait_ready(jobs, args.state_dir, args.timeout_s)
    address_file.update(clusters, args.output)
    print(f"wrote {len(clusters)} cluster address(es) to {args.output}")
    return 0


def _ray(args: argparse.Namespace) -> int:
    if args.address:
        clusters = given_addresses(args.address, args.cluster_name)
    elif recorded := [c for c in lc.load_all(args.state_dir) if lc.is_running(c)]:
        clusters = [address_file.ClusterAddress(c.name, c.dashboard_url) for c in recorded]
    else:
        clusters = [running_local_head()]
    address_file.update(clusters, args.output)
    print(f"wrote {len(clusters)} cluster address(es) to {args.output}")
    return 0


@script_main
def main(argv: list[str] | None = None) -> int:
    log_progress_to(sys.stderr)
    args = build_parser().parse_args(argv)
    return {"kubectl": _kubectl, "slurm": _slurm, "ray": _ray}[args.source](args)


if __name__ == "__main__":
    sys.exit(main())
