"""The grok_*.sh scripts: write ~/.ray_address for our KubeRay clusters (kubectl), our SLURM clusters, or other Ray
clusters (given addresses, local_clusters.py's, or the one running here)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ray_workflow import address_file, hosts, log_progress_to
from ray_workflow.cli_types import positive_float
from ray_workflow.errors import WorldError, script_main
from ray_workflow.hosts import ClusterHost, NotReady
from ray_workflow.hosts import local as lc
from ray_workflow.hosts.kuberay import Kubectl, KubeRayHost
from ray_workflow.hosts.slurm import DEFAULT_STATE_DIR, SlurmHost


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
        "--state_dir", type=Path, default=DEFAULT_STATE_DIR, help="the --state_dir given to launch.py"
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


def _running(host: ClusterHost, name: str | None) -> list[str]:
    """Our clusters on ``host`` that run or wait to (``name`` and its ``name-N``, or all); refused if none."""
    names = [cluster.name for cluster in host.status(name) if cluster.alive]
    if not names:
        named = f" named {name!r} (or {name}-N)" if name else ""
        raise WorldError(f"no {host.kind} of ours{named}{host.scope} is running or starting")
    return names


def _write(clusters: list[address_file.ClusterAddress], output: Path) -> int:
    address_file.update(clusters, output)
    print(f"wrote {len(clusters)} cluster address(es) to {output}")
    return 0


def _wait_and_write(host: ClusterHost, names: list[str], timeout_s: float, output: Path) -> int:
    """Wait for the clusters ``names`` and write their addresses; of a partly ready set, the ready ones are written
    before the others are reported."""
    try:
        clusters = host.wait_ready(names, timeout_s)
    except NotReady as error:
        if error.ready:
            _write(error.ready, output)
        raise
    return _write(clusters, output)


def _kubectl(args: argparse.Namespace) -> int:
    host = KubeRayHost(args.namespace, Kubectl(args.kubectl_context))
    names = _running(host, args.name)
    if not args.port_forward:
        return _wait_and_write(host, names, args.timeout_s, args.output)
    return forward_until_stopped(host, names, args.timeout_s, args.output)


def forward_until_stopped(host: KubeRayHost, names: list[str], timeout_s: float, output: Path) -> int:
    """Forward a local port to each cluster's dashboard and write those addresses in place of the clusters' own,
    until Ctrl-C (0) or a forward dies (an error); either way the clusters' own addresses come back, since the
    forwarded ones no longer work."""
    forwards = host.port_forward(names, timeout_s)
    try:
        address_file.update(forwards.addresses, output)
        for cluster in forwards.addresses:
            print(f"{cluster.name}: {cluster.dashboard_url}")
        print(f"wrote {len(forwards.addresses)} forwarded address(es) to {output}; Ctrl-C stops forwarding")
        while forwards.alive():
            time.sleep(0.5)
        raise WorldError("a kubectl port-forward exited; the addresses no longer work")
    except KeyboardInterrupt:
        print("stopped forwarding")
        return 0
    finally:
        forwards.stop()
        address_file.update(forwards.in_cluster, output)
        print(f"wrote the clusters' own addresses to {output} again, in place of the forwarded ones")


def _slurm(args: argparse.Namespace) -> int:
    host = SlurmHost(args.state_dir)
    return _wait_and_write(host, _running(host, args.name), args.timeout_s, args.output)


def _ray(args: argparse.Namespace) -> int:
    if args.address:
        return _write(address_file.typed(args.address, args.cluster_name), args.output)
    host = lc.LocalHost(args.state_dir)
    if names := [cluster.name for cluster in host.status() if cluster.alive]:
        return _wait_and_write(host, names, 10, args.output)
    return _write([lc.running_local_head()], args.output)


@script_main
def main(argv: list[str] | None = None) -> int:
    log_progress_to(sys.stderr)
    args = build_parser().parse_args(argv)
    hosts.drop_gone(args.output)
    return {"kubectl": _kubectl, "slurm": _slurm, "ray": _ray}[args.source](args)


if __name__ == "__main__":
    sys.exit(main())
