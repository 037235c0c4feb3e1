"""``launch.py``: render KubeRay RayClusters from cluster_configs/, validate them, apply with kubectl."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ray_workflow import crd_schema
from ray_workflow.atomic_file import atomic_write_text
from ray_workflow.cli_types import non_negative_float, non_negative_int, positive_int
from ray_workflow.crd_schema import CrdError
from ray_workflow.kubectl import Kubectl, KubectlError
from ray_workflow.kuberay_manifest import (
    ClusterSpec,
    ManifestError,
    WorkerGroup,
    available_hosts,
    cluster_names,
    render,
)
from ray_workflow.launch import apply, down, load_validator, read_manifests, specs_for, to_yaml, validate

PINNED_RAY_VERSION = "2.60.0"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cluster_host", default="google_cloud", help=f"one of {', '.join(available_hosts())}")
    parser.add_argument(
        "--name", default="isaac-lab-hyperparameter-tuner", help="cluster name (<name>-1..N with --num_clusters)"
    )
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--image", help="container image with Isaac Lab and Ray (required unless --dry_run)")
    parser.add_argument("--num_clusters", type=positive_int, default=1, help="clusters <name>-1 .. <name>-N when N > 1")
    group = parser.add_argument_group("worker groups (one value per group; a single value applies to all)")
    group.add_argument("--min_workers", type=non_negative_int, nargs="+", default=[0])
    group.add_argument("--max_workers", type=non_negative_int, nargs="+", default=[4])
    group.add_argument("--gpu_per_worker", type=non_negative_int, nargs="+", default=[1])
    group.add_argument("--cpu_per_worker", type=non_negative_float, nargs="+", default=[8])
    group.add_argument("--ram_gb_per_worker", type=non_negative_float, nargs="+", default=[32])
    group.add_argument(
        "--worker_accelerator",
        nargs="+",
        default=["nvidia-l4"],
        help="GKE accelerator type of each group's nodes (google_cloud only)",
    )
    parser.add_argument("--num_head_cpu", type=non_negative_float, default=8)
    parser.add_argument("--head_ram_gb", type=non_negative_float, default=32)
    parser.add_argument("--ray_version", default=PINNED_RAY_VERSION, help="must match the Ray in the image")
    parser.add_argument("--service_account_name", help="service account of the pods (e.g. for GCS access)")
    parser.add_argument("--storage_uri", help="where experiments go, e.g. gs://bucket/ray (ISAACLAB_RAY_STORAGE_URI)")
    parser.add_argument(
        "--no_auth",
        action="store_true",
        help="no Ray token authentication: anyone who reaches the head inside the cluster network can run code",
    )
    parser.add_argument("--crd", type=Path, help="RayCluster CRD to validate against (default: live, else bundled)")
    parser.add_argument("--dry_run", action="store_true", help="print the manifests; touch nothing")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="only check the RayCluster manifests in FILE against the CRD (--crd, else the bundled one); "
        "exit 0 valid, 1 invalid, 2 unreadable",
    )
    parser.add_argument("--output", type=Path, help="also write the manifests to this file")
    parser.add_argument("--kubectl_context", help="kubectl context to use")
    parser.add_argument(
        "--down", action="store_true", help="delete our RayCluster --name (or its numbered clusters --name-N)"
    )
    return parser


def worker_groups(args: argparse.Namespace) -> tuple[WorkerGroup, ...]:
    lists = {
        flag: getattr(args, flag)
        for flag in (
            "min_workers",
            "max_workers",
            "gpu_per_worker",
            "cpu_per_worker",
            "ram_gb_per_worker",
            "worker_accelerator",
        )
    }
    count = max(len(values) for values in lists.values())
    for flag, values in lists.items():
        if len(values) not in (1, count):
            raise ManifestError(f"--{flag} has {len(values)} values; give 1 or one per worker group ({count})")
    expanded = {flag: values * count if len(values) == 1 else values for flag, values in lists.items()}
    return tuple(
        WorkerGroup(
            expanded["min_workers"][i],
            expanded["max_workers"][i],
            expanded["gpu_per_worker"][i],
            expanded["cpu_per_worker"][i],
            expanded["ram_gb_per_worker"][i],
            None if expanded["worker_accelerator"][i] in ("", "none") else expanded["worker_accelerator"][i],
        )
        for i in range(count)
    )


def check_file(path: Path, crd_file: Path | None) -> int:
    """``--check FILE``: every RayCluster in FILE against the CRD, each problem on a line with its field path."""
    try:
        validator, source = load_validator(crd_file, None)
        manifests = read_manifests(path)
    except (ManifestError, CrdError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    invalid = 0
    for index, manifest in enumerate(manifests):
        name = manifest.get("metadata", {}).get("name") or f"document {index + 1}"
        problems = crd_schema.errors(validator, manifest)
        invalid += bool(problems)
        for problem in problems:
            print(f"{path}: {name}: {problem}")
        if not problems:
            print(f"{path}: {name}: valid")
    print(f"{len(manifests) - invalid} of {len(manifests)} RayCluster(s) valid against {source}", file=sys.stderr)
    return 1 if invalid else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kubectl = Kubectl(args.kubectl_context)
    if args.check:
        return check_file(args.check, args.crd)
    try:
        if args.down:
            deleted = down(args.name, args.namespace, kubectl)
            print(
                f"deleted RayCluster {', '.join(deleted)}"
                if deleted
                else f"no RayCluster of ours named {args.name!r} (or {args.name}-N) in namespace {args.namespace}"
            )
            return 0
        if not args.image and not args.dry_run:
            raise ManifestError("--image is required (the container image with Isaac Lab and Ray)")
        base = ClusterSpec(
            args.name,
            args.namespace,
            args.image or "IMAGE",
            args.ray_version,
            args.num_head_cpu,
            args.head_ram_gb,
            worker_groups(args),
            args.service_account_name,
            args.storage_uri,
            token_auth=not args.no_auth,
        )
        specs = specs_for(base, cluster_names(args.name, args.num_clusters))
        manifests = [render(args.cluster_host, spec) for spec in specs]
        validator, source = load_validator(args.crd, None if args.dry_run else kubectl)
        validate(manifests, validator)
        if args.output:
            atomic_write_text(args.output, to_yaml(manifests))
        if args.dry_run:
            print(to_yaml(manifests), end="")
            print(f"# {len(manifests)} manifest(s) valid against {source}; nothing applied", file=sys.stderr)
            return 0
        print(apply(manifests, args.namespace, kubectl), end="")
        print(f"applied {len(manifests)} RayCluster(s), validated against {source}")
    except (ManifestError, CrdError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KubectlError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
