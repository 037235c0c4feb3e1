"""Start Ray clusters on Kubernetes through KubeRay, or on SLURM, with the same flags.

    python launch.py --cluster_host google_cloud --namespace NS --image IMG \\
        --min_workers 4 --max_workers 16 --num_clusters 3
    python launch.py --dry_run --cluster_host local          # print the validated manifests, touch nothing
    python launch.py --down --name isaac-lab-hyperparameter-tuner
    python launch.py --cluster_host slurm --partition gpu --time 4:00:00 --max_workers 3 --gpu_per_worker 4
    python launch.py --cluster_host slurm --down --name isaac-lab-hyperparameter-tuner

Both kinds of host take the same steps (ray_workflow/hosts/): KubeRay renders
cluster_configs/<host>/kuberay.yaml.jinja, checks it against the RayCluster CRD and applies it with
kubectl; SLURM renders cluster_configs/slurm/ray_cluster.sbatch.jinja, checks it with
sbatch --test-only and submits one job per cluster. Then launch.py waits until every cluster
answers and writes the addresses to ~/.ray_address (--no_wait returns at once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tabulate import tabulate

from ray_workflow import address_file, hosts, log_progress_to
from ray_workflow.cli_types import non_negative_float, non_negative_int, positive_float, positive_int
from ray_workflow.errors import Interrupted, script_main
from ray_workflow.files import atomic_write_text
from ray_workflow.grok import forward_until_stopped
from ray_workflow.hosts import ClusterHost, ClusterStatus, NotReady
from ray_workflow.hosts import slurm as slurm_host
from ray_workflow.hosts.kuberay import Kubectl, KubeRayHost, crd_schema
from ray_workflow.hosts.kuberay.clusters import default_auth_secret, load_validator, read_manifests
from ray_workflow.hosts.kuberay.manifest import (
    PINNED_RAY,
    ClusterSpec,
    ManifestError,
    available_hosts,
    ray_version_of,
    worker_groups,
)
from ray_workflow.names import numbered_names
from ray_workflow.ray_ports import PORT_BLOCK

SLURM = "slurm"
# The settings the library names by their fields (SLURM's and KubeRay's cluster specs), as this script's flags.
FLAGS = {
    "template": "--cluster_host",
    "num_workers": "--max_workers",
    "cpus_per_node": "--cpu_per_worker",
    "cpus": "--cpu_per_worker",
    "gpus_per_node": "--gpu_per_worker",
    "gpus": "--gpu_per_worker",
    "mem_gb_per_node": "--ram_gb_per_worker",
    "ram_gb": "--ram_gb_per_worker",
    "head_cpus": "--num_head_cpu",
    "accelerator": "--worker_accelerator",
    "time_limit": "--time",
}
# Flags that only one kind of host understands, with their defaults there; given for the other kind, they are refused.
KUBERAY_DEFAULTS = {
    "namespace": "default",
    "image": None,
    "min_workers": [0],
    "worker_accelerator": ["nvidia-l4"],
    "num_head_cpu": 8.0,
    "head_ram_gb": 32.0,
    "idle_timeout_s": 120,
    "ray_version": None,
    "service_account_name": None,
    "worker_service_account_name": None,
    "image_pull_secret": None,
    "crd": None,
    "output": None,
    "kubectl_context": None,
    "auth_secret": None,
    "adopt": False,
    "port_forward": False,
    "restart": False,
}
SLURM_DEFAULTS = {
    "partition": None,
    "account": None,
    "time": None,
    "gres": None,
    "setup": [],
    "base_port": None,
    "state_dir": slurm_host.DEFAULT_STATE_DIR,
    "log_dir": slurm_host.DEFAULT_LOG_DIR,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cluster_host", default="google_cloud", help=f"one of {', '.join(available_hosts())}, {SLURM}"
    )
    parser.add_argument(
        "--name",
        default="isaac-lab-hyperparameter-tuner",
        help="cluster name, <name>-1..N with --num_clusters (KubeRay: a Kubernetes name of at most 53 characters once "
        "suffixed; SLURM: letters, digits, '_', '.' and '-') (default %(default)s)",
    )
    parser.add_argument("--num_clusters", type=positive_int, default=1, help="clusters <name>-1 .. <name>-N when N > 1")
    parser.add_argument("--storage_uri", help="where experiments go, e.g. gs://bucket/ray (ISAACLAB_RAY_STORAGE_URI)")
    parser.add_argument(
        "--no_auth",
        action="store_true",
        help="no Ray token authentication: anyone who reaches the head inside the cluster network can run code",
    )
    parser.add_argument(
        "--cluster_token",
        action="store_true",
        help="a new token for each cluster instead of your Ray token (RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token)",
    )
    parser.add_argument("--dry_run", action="store_true", help="print the manifests or batch scripts; touch nothing")
    parser.add_argument(
        "--address_file",
        type=Path,
        default=address_file.DEFAULT_PATH,
        help="the address file: each cluster's block is added once it is ready; --down drops the blocks of what "
        "it deleted (default %(default)s)",
    )
    parser.add_argument(
        "--down", action="store_true", help="delete our cluster --name (or its numbered clusters --name-N)"
    )
    parser.add_argument("--status", action="store_true", help="list our clusters and what their host says of them")
    parser.add_argument(
        "--no_wait",
        action="store_true",
        help="start and return; the grok scripts write the addresses later (default: wait until every cluster "
        "answers and write its address to --address_file)",
    )
    parser.add_argument(
        "--timeout_s", type=positive_float, default=600.0, help="wait this long for the clusters (default %(default)g)"
    )
    group = parser.add_argument_group(
        "workers (KubeRay: one value per worker group, a single value applies to all; SLURM: one value, "
        "--max_workers worker nodes besides the head node, every node alike)"
    )
    for flag, kind, default, what in (
        ("--max_workers", non_negative_int, 4, "KubeRay: the most workers the autoscaler may add to a group; SLURM: "
         "worker nodes"),
        ("--gpu_per_worker", non_negative_int, 1, "GPUs of each worker (SLURM: of every node, the head's too)"),
        ("--cpu_per_worker", non_negative_float, 8, "CPUs of each worker (SLURM: whole CPUs of every node)"),
        ("--ram_gb_per_worker", non_negative_float, 32, "memory of each worker in GB (SLURM: --mem of every node, "
         "which Ray is told of)"),
    ):  # fmt: skip
        group.add_argument(flag, type=kind, nargs="+", default=[default], help=f"{what} (default {default} on both)")

    kuberay = parser.add_argument_group("KubeRay only")
    kuberay.add_argument("--namespace", help=f"default {KUBERAY_DEFAULTS['namespace']}")
    kuberay.add_argument("--image", help="container image with Isaac Lab and Ray (required)")
    kuberay.add_argument(
        "--min_workers", type=non_negative_int, nargs="+", help=f"default {KUBERAY_DEFAULTS['min_workers'][0]}"
    )
    kuberay.add_argument(
        "--worker_accelerator",
        nargs="+",
        help="accelerator of each GPU group's nodes: on google_cloud one GKE offers "
        "(cluster_configs/google_cloud/accelerators.txt), checked; on local anything, unused "
        f"(default {KUBERAY_DEFAULTS['worker_accelerator'][0]})",
    )
    kuberay.add_argument(
        "--num_head_cpu", type=non_negative_float, help=f"default {KUBERAY_DEFAULTS['num_head_cpu']:g}"
    )
    kuberay.add_argument("--head_ram_gb", type=non_negative_float, help=f"default {KUBERAY_DEFAULTS['head_ram_gb']:g}")
    kuberay.add_argument(
        "--idle_timeout_s",
        type=positive_int,
        help=f"the autoscaler removes a worker idle this long (default {KUBERAY_DEFAULTS['idle_timeout_s']})",
    )
    kuberay.add_argument(
        "--ray_version",
        help="the Ray in the image, which KubeRay must know (default: the tag of Ray's own images, "
        f"rayproject/ray:X.Y.Z, else the Ray this project pins and its Dockerfile installs, {PINNED_RAY})",
    )
    kuberay.add_argument(
        "--service_account_name",
        help="the head's service account (e.g. for GCS access); KubeRay gives it the autoscaler's rights to "
        "make and delete Pods, so workers do not get it",
    )
    kuberay.add_argument(
        "--worker_service_account_name", help="the workers' service account (e.g. for GCS access), without those rights"
    )
    kuberay.add_argument(
        "--image_pull_secret", help="a Secret in the namespace to pull a private --image with, for head and workers"
    )
    kuberay.add_argument("--crd", type=Path, help="RayCluster CRD to validate against (default: live, else bundled)")
    kuberay.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="only check the RayCluster manifests in FILE against the CRD (--crd, else the bundled one); "
        "exit 0 valid, 1 invalid, 2 unreadable",
    )
    kuberay.add_argument("--output", type=Path, help="also write the manifests to this file")
    kuberay.add_argument("--kubectl_context", help="kubectl context to use")
    kuberay.add_argument(
        "--auth_secret",
        help="the Secret holding your Ray token for the clusters, made from your token if it is ours "
        "(default isaaclab-ray-token-<your token's id>: one per person)",
    )
    kuberay.add_argument(
        "--port_forward",
        action="store_true",
        default=None,
        help="once the clusters are ready, forward a local port to each dashboard and write those addresses too, "
        "until Ctrl-C (for use outside the cluster network, as the grok script's --port_forward)",
    )
    kuberay.add_argument(
        "--restart",
        action="store_true",
        default=None,
        help="launching a running cluster again with another image, resources, token or Ray version restarts its "
        "Pods, ending the jobs there: allow it (refused otherwise, saying what would change)",
    )
    kuberay.add_argument(
        "--adopt",
        action="store_true",
        default=None,
        help="also act on RayClusters of ours that another person (another Ray token) launched: launch over "
        "them, taking them over, or --down them (by default they are refused and left alone)",
    )

    on_slurm = parser.add_argument_group("SLURM only")
    on_slurm.add_argument("--partition", help="partition to run in (default: the cluster's default partition)")
    on_slurm.add_argument("--account", help="account to charge")
    on_slurm.add_argument("--time", help="time limit, e.g. 4:00:00 (default: the partition's)")
    on_slurm.add_argument("--gres", help="generic resources per node, e.g. gpu:a100:4 (instead of --gpu_per_worker)")
    on_slurm.add_argument(
        "--setup",
        action="append",
        help="a shell line run on every node before Ray starts, e.g. 'module load cuda' (repeatable)",
    )
    on_slurm.add_argument(
        "--base_port",
        type=positive_int,
        help=f"Ray node i of cluster k takes the {PORT_BLOCK} ports from base_port + {PORT_BLOCK} * (k * nodes + i), "
        "and the cluster fails at once if one is taken on its node (default: each cluster takes the first block "
        f"free on all its nodes, from {slurm_host.AUTO_PORTS.start}-{slurm_host.AUTO_PORTS.stop - 1})",
    )
    on_slurm.add_argument(
        "--state_dir",
        type=Path,
        help=f"a folder the compute nodes share with this machine, for tokens and head addresses "
        f"(default {slurm_host.DEFAULT_STATE_DIR})",
    )
    on_slurm.add_argument(
        "--log_dir",
        type=Path,
        help="where each cluster's job log <name>-<jobid>.out goes, on a filesystem the nodes share "
        f"(default {slurm_host.DEFAULT_LOG_DIR}, which git ignores and job uploads leave out)",
    )
    return parser


def with_host_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse the flags of the other kind of host, then fill in this kind's defaults."""
    on_slurm = args.cluster_host == SLURM
    foreign = KUBERAY_DEFAULTS if on_slurm else SLURM_DEFAULTS
    if args.check is not None:
        foreign = SLURM_DEFAULTS
    given = [name for name in foreign if getattr(args, name) is not None]
    if given:
        where = "on SLURM" if on_slurm else f"with --cluster_host {args.cluster_host}"
        hint = " (a module or container line goes in --setup)" if on_slurm and given[0] == "image" else ""
        raise ManifestError(f"--{given[0]} does not apply {where}{hint}")
    for name, default in (SLURM_DEFAULTS if on_slurm else KUBERAY_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def check_file(path: Path, crd_file: Path | None) -> int:
    """``--check FILE``: every RayCluster in FILE against the CRD, each problem on a line with its field path."""
    validator, source = load_validator(crd_file, None)
    documents = read_manifests(path)
    clusters = [document for document in documents if document["kind"] == "RayCluster"]
    invalid = 0
    for index, document in enumerate(documents):
        metadata = document.get("metadata")
        name = (metadata.get("name") if isinstance(metadata, dict) else None) or f"document {index + 1}"
        if document["kind"] != "RayCluster":
            print(f"{path}: {document['kind']} {name}: not checked (kubectl apply takes it as the API server does)")
            continue
        problems = crd_schema.errors(validator, document)
        invalid += bool(problems)
        for problem in problems:
            print(f"{path}: {name}: {problem}")
        if not problems:
            print(f"{path}: {name}: valid")
    others = len(documents) - len(clusters)
    unchecked = f"; {others} other document(s) not checked" if others else ""
    valid = len(clusters) - invalid
    print(f"{valid} of {len(clusters)} RayCluster(s) valid against {source}{unchecked}", file=sys.stderr)
    return 1 if invalid else 0


def kuberay_spec(args: argparse.Namespace, host: KubeRayHost) -> ClusterSpec:
    if not args.image:
        raise ManifestError("--image is required (the container image with Isaac Lab and Ray)")
    return ClusterSpec(
        template=args.cluster_host,
        name=args.name,
        namespace=args.namespace,
        image=args.image,
        ray_version=args.ray_version or ray_version_of(args.image),
        head_cpus=args.num_head_cpu,
        head_ram_gb=args.head_ram_gb,
        idle_timeout_s=args.idle_timeout_s,
        worker_groups=worker_groups(
            min_workers=args.min_workers,
            max_workers=args.max_workers,
            gpu_per_worker=args.gpu_per_worker,
            cpu_per_worker=args.cpu_per_worker,
            ram_gb_per_worker=args.ram_gb_per_worker,
            worker_accelerator=args.worker_accelerator,
        ),
        service_account_name=args.service_account_name,
        worker_service_account_name=args.worker_service_account_name,
        image_pull_secret=args.image_pull_secret,
        storage_uri=args.storage_uri,
        token_auth=not args.no_auth,
        auth_secret=None if args.cluster_token else args.auth_secret or default_auth_secret(host.owner),
    )


def slurm_spec(args: argparse.Namespace) -> slurm_host.SlurmClusterSpec:
    for flag in ("max_workers", "gpu_per_worker", "cpu_per_worker", "ram_gb_per_worker"):
        if len(getattr(args, flag)) != 1:
            raise slurm_host.SlurmInputError(f"--{flag}: a SLURM cluster has one kind of node; give one value")
    if args.gres is not None and args.gpu_per_worker != [1]:
        raise slurm_host.SlurmInputError("--gres replaces --gpu_per_worker on SLURM; give one of them")
    return slurm_host.SlurmClusterSpec(
        name=args.name,
        num_workers=args.max_workers[0],
        cpus_per_node=args.cpu_per_worker[0],
        gpus_per_node=0 if args.gres is not None else args.gpu_per_worker[0],
        mem_gb_per_node=args.ram_gb_per_worker[0] or None,
        gres=args.gres,
        partition=args.partition,
        account=args.account,
        time_limit=args.time,
        setup=tuple(args.setup),
        base_port=args.base_port,
        token_auth=not args.no_auth,
        own_token=args.cluster_token,
        storage_uri=args.storage_uri,
    )


def host_for(args: argparse.Namespace) -> ClusterHost:
    if args.cluster_host == SLURM:
        return slurm_host.SlurmHost(args.state_dir, args.log_dir)
    return KubeRayHost(
        args.namespace, Kubectl(args.kubectl_context), args.crd, everyone=args.adopt, restart=args.restart
    )


def spec_for(args: argparse.Namespace, host: ClusterHost) -> slurm_host.SlurmClusterSpec | ClusterSpec:
    return slurm_spec(args) if isinstance(host, slurm_host.SlurmHost) else kuberay_spec(args, host)


def listed(clusters: list[ClusterStatus]) -> str:
    return ", ".join(cluster.name + (f" ({cluster.detail})" if cluster.detail else "") for cluster in clusters)


def said_by_state(host: ClusterHost, clusters: list[ClusterStatus]) -> list[str]:
    """``cancelled SLURM job a (job 7), b (job 8)``: one line per state the host gave."""
    states = dict.fromkeys(cluster.state for cluster in clusters)
    return [f"{state} {host.kind} {listed([c for c in clusters if c.state == state])}" for state in states]


def write_addresses(clusters: list[address_file.ClusterAddress], path: Path) -> None:
    address_file.update(clusters, path)
    for cluster in clusters:
        print(
            f"{cluster.name}: {cluster.dashboard_url}"
            + (f" (GCS {cluster.gcs_address})" if cluster.gcs_address else "")
        )
    print(f"wrote {len(clusters)} cluster address(es) to {path}")


def launch(host: ClusterHost, args: argparse.Namespace) -> int:
    """Render, check, start, wait until ready and write the addresses: the same steps on every host."""
    if args.status:
        hosts.drop_gone(args.address_file)
        rows = [(cluster.name, cluster.state, cluster.detail) for cluster in host.status()]
        print(tabulate(rows, headers=["cluster", "state", "detail"]) if rows else f"no {host.kind} of ours")
        return 0
    if args.down:
        removed = host.down([cluster.name for cluster in host.status(args.name)])
        address_file.drop([cluster.name for cluster in removed], args.address_file, host.record)
        none = f"no {host.kind} of ours named {args.name!r} (or {args.name}-N){host.scope}"
        print("\n".join(said_by_state(host, removed) or [none]))
        return 0
    rendered = host.render(spec_for(args, host), numbered_names(args.name, args.num_clusters, host.name_rule))
    checked = host.check(rendered, offline=args.dry_run)
    if args.output:
        write_manifests(args.output, "".join(cluster.text for cluster in rendered))
    if args.dry_run:
        print("".join(cluster.text for cluster in rendered), end="")
        print(f"# {len(rendered)} {host.kind}(s) {checked}; nothing started", file=sys.stderr)
        return 0
    if not args.no_wait:
        address_file.check_writable(args.address_file)
    started = host.start(rendered)
    for line in started.said:
        print(line)
    print(f"started {len(rendered)} {host.kind}(s), {checked}")
    if args.no_wait:
        return 0
    try:
        clusters = host.wait_ready(started.names, args.timeout_s)
    except KeyboardInterrupt:
        withdrawn = host.down(started.new)
        undone = "; ".join(said_by_state(host, withdrawn)) or "nothing to undo"
        raise Interrupted(f"{undone}; use --no_wait to leave clusters starting") from None
    except NotReady as error:
        if error.ready:
            write_addresses(error.ready, args.address_file)
        raise
    write_addresses(clusters, args.address_file)
    if args.port_forward:
        return forward_until_stopped(host, [cluster.name for cluster in clusters], args.timeout_s, args.address_file)
    return 0


def write_manifests(path: Path, text: str) -> None:
    """``--output``: what was rendered, also in a file (refused before anything starts if it cannot be written)."""
    if path.is_dir():
        raise ManifestError(f"--output {path}: is a folder, not a file")
    try:
        atomic_write_text(path, text)
    except OSError as error:
        raise ManifestError(f"--output {path}: cannot write it ({error.strerror})") from None


@script_main(flags=FLAGS)
def main(argv: list[str] | None = None) -> int:
    log_progress_to(sys.stderr)
    args = build_parser().parse_args(argv)
    if args.cluster_token and args.no_auth:
        raise ManifestError("--cluster_token and --no_auth: a cluster without token auth has no token; choose one")
    args = with_host_defaults(args)
    if args.check:
        return check_file(args.check, args.crd)
    return launch(host_for(args), args)


if __name__ == "__main__":
    sys.exit(main())
