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

from ray_workflow import address_file, auth, log_progress_to  # noqa: E402
from ray_workflow import local_cluster as lc  # noqa: E402
from ray_workflow.cli_types import non_negative_int, positive_int  # noqa: E402
from ray_workflow.errors import script_main  # noqa: E402


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


def _write_addresses(clusters: list[lc.LocalCluster], path: Path) -> None:
    address_file.update([address_file.ClusterAddress(c.name, c.dashboard_url) for c in clusters], path)
    print(f"wrote {len(clusters)} address(es) to {path}")


def _start(args: argparse.Namespace) -> list[lc.LocalCluster]:
    if args.cluster_token and args.no_auth:
        raise lc.LocalClusterInputError("--cluster_token and --no_auth: a cluster without token auth has no token")
    if args.output is not None and args.output.expanduser().is_dir():
        raise lc.LocalClusterInputError(f"--output {args.output}: is a folder, not an address file")
    return lc.start_many(
        args.num_clusters,
        name=args.name,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        gpus_per_cluster=args.gpus_per_cluster,
        base_port=args.base_port,
        state_dir=args.state_dir,
        token_auth=not args.no_auth,
        own_token=args.cluster_token,
        node_ip=args.node_ip_address,
    )


def _run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("error: run needs a command after --", file=sys.stderr)
        return 2
    # SIGTERM (CI, a batch system) must stop the clusters too, so treat it like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    clusters = _start(args)
    try:
        if args.output:
            _write_addresses(clusters, args.output)
        token = auth.token_for(clusters[0].gcs_address) if clusters[0].token_file else None
        env = {**os.environ, "RAY_ADDRESS": clusters[0].gcs_address, **auth.driver_environment(token)}
        return subprocess.run(command, env=env, check=False).returncode
    except OSError as error:
        print(f"error: cannot run {command[0]!r}: {error.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        for cluster in clusters:
            lc.stop(cluster, args.state_dir)
        print(f"stopped {', '.join(c.name for c in clusters)}")
        if args.output:
            address_file.drop([c.name for c in clusters], args.output)


@script_main
def main(argv: list[str] | None = None) -> int:
    log_progress_to(sys.stdout)
    args = build_parser().parse_args(argv)
    if args.verb == "up":
        _write_addresses(_start(args), args.output)
    elif args.verb == "down":
        stopped = lc.stop_matching(args.name, args.state_dir)
        print(f"stopped {', '.join(c.name for c in stopped)}" if stopped else "no local clusters to stop")
        address_file.drop([c.name for c in stopped], args.output)
    elif args.verb == "status":
        rows = [
            [c.name, c.dashboard_url, c.gcs_address, "running" if lc.is_running(c) else "dead", c.temp_dir]
            for c in lc.load_all(args.state_dir)
        ]
        print(tabulate(rows, headers=["cluster", "dashboard", "GCS", "state", "temp dir"], tablefmt="github"))
    else:
        return _run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
