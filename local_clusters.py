"""Start several independent Ray clusters on this machine, each on its own ports and temp dir.

python local_clusters.py up 3 --num_gpus 2     # writes ~/.ray_address
python local_clusters.py status
python local_clusters.py down                  # stops only the clusters this script started
python local_clusters.py run -- python hyper_parameter_tuning/config/cartpole_sweep.py
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_workflow import address_file, auth, hosts, log_progress_to
from ray_workflow.cli_types import non_negative_int, positive_int
from ray_workflow.errors import UserError, script_main
from ray_workflow.hosts import local as lc
from ray_workflow.names import numbered_names


def _add_start_flags(parser: argparse.ArgumentParser, count_as_flag: bool) -> None:
    count_help = "how many clusters (default 1)"
    if count_as_flag:  # `run` ends with a command, so the count cannot be positional there
        parser.add_argument("--num_clusters", type=positive_int, default=1, help=count_help)
    else:
        parser.add_argument("num_clusters", type=positive_int, nargs="?", default=1, help=count_help)
    parser.add_argument("--name", default="local-ray", help="cluster name (<name>-1..N for several)")
    parser.add_argument("--num_cpus", type=positive_int, help="CPUs each cluster offers (default: all)")
    parser.add_argument(
        "--num_gpus", type=non_negative_int, help="GPU slots each cluster offers (fake ones without a GPU)"
    )
    parser.add_argument("--gpus_per_cluster", type=positive_int, help="split this machine's GPUs between the clusters")
    parser.add_argument(
        "--base_port", type=positive_int, help="first port of the first cluster (default: a free block)"
    )
    parser.add_argument(
        "--node_ip_address",
        default="127.0.0.1",
        help="address the cluster serves on (default: loopback only); a node address lets other machines join",
    )
    parser.add_argument(
        "--no_auth",
        action="store_true",
        help="no token authentication: only on a machine where you trust everyone who can reach its ports",
    )
    parser.add_argument(
        "--cluster_token",
        action="store_true",
        help="a new token for each cluster instead of your Ray token (RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token); "
        "Ray's CLI then needs RAY_AUTH_TOKEN set to it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state_dir", type=Path, default=lc.DEFAULT_STATE_DIR, help="where clusters are recorded")
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="start clusters and write their addresses")
    _add_start_flags(up, count_as_flag=False)
    up.add_argument("--output", type=Path, default=address_file.DEFAULT_PATH, help="address file to write")
    down = verbs.add_parser("down", help="stop clusters that this script started")
    down.add_argument("--name", help="only this cluster (and its numbered clusters <name>-N)")
    down.add_argument(
        "--output", type=Path, default=address_file.DEFAULT_PATH, help="address file to drop their blocks from"
    )
    verbs.add_parser("status", help="list the clusters this script started")
    run = verbs.add_parser("run", help="start clusters, run a command with RAY_ADDRESS set, stop them")
    _add_start_flags(run, count_as_flag=True)
    run.add_argument("--output", type=Path, help="also write the address file here")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def _start(args: argparse.Namespace, host: lc.LocalHost) -> list[address_file.ClusterAddress]:
    """Start the clusters the flags describe, all or none, and return their addresses once they answer."""
    if args.cluster_token and args.no_auth:
        raise lc.LocalClusterInputError("--cluster_token and --no_auth: a cluster without token auth has no token")
    if args.output is not None and args.output.expanduser().is_dir():
        raise lc.LocalClusterInputError(f"--output {args.output}: is a folder, not an address file")
    spec = lc.LocalSpec(
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        gpus_per_cluster=args.gpus_per_cluster,
        base_port=args.base_port,
        token_auth=not args.no_auth,
        own_token=args.cluster_token,
        node_ip=args.node_ip_address,
    )
    rendered = host.render(spec, numbered_names(args.name, args.num_clusters))
    host.check(rendered, offline=False)
    if args.output is not None:
        address_file.check_writable(args.output)
    started = host.start(rendered)
    try:
        clusters = host.wait_ready(started.names, timeout_s=60)
        if args.output is not None:
            address_file.update(clusters, args.output)
            print(f"wrote {len(clusters)} address(es) to {args.output}")
        return clusters
    except BaseException:  # a cluster whose address could not be written (or Ctrl-C) is stopped again
        host.down(started.names)
        raise


def _run(args: argparse.Namespace, host: lc.LocalHost) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise lc.LocalClusterInputError("run needs a command after --")
    # SIGTERM (CI, a batch system) must stop the clusters too, so treat it like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    clusters = _start(args, host)
    try:
        first = next(cluster for cluster in lc.load_all(args.state_dir) if cluster.name == clusters[0].name)
        token = None if args.no_auth else auth.token_for(first.gcs_address)
        env = {**os.environ, "RAY_ADDRESS": first.gcs_address, **auth.driver_environment(token)}
        try:
            return subprocess.run(command, env=env, check=False).returncode
        except OSError as error:
            raise UserError(f"cannot run {command[0]!r}: {error.strerror}") from None
    finally:
        stopped = host.down([cluster.name for cluster in clusters])
        print(f"stopped {', '.join(cluster.name for cluster in stopped)}")
        if args.output:
            address_file.drop([cluster.name for cluster in stopped], args.output, host.record)


@script_main(flags={"node_ip": "--node_ip_address"})
def main(argv: list[str] | None = None) -> int:
    log_progress_to(sys.stdout)
    args = build_parser().parse_args(argv)
    host = lc.LocalHost(args.state_dir)
    if args.verb == "up":
        _start(args, host)
    elif args.verb == "down":
        stopped = host.down([cluster.name for cluster in host.status(args.name)])
        print(f"stopped {', '.join(c.name for c in stopped)}" if stopped else "no local clusters to stop")
        address_file.drop([c.name for c in stopped], args.output, host.record)
    elif args.verb == "status":
        hosts.drop_gone(address_file.DEFAULT_PATH)
        rows = [[cluster.name, cluster.state, cluster.detail] for cluster in host.status()]
        print(tabulate(rows, headers=["cluster", "state", "detail"], tablefmt="github"))
    else:
        return _run(args, host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
