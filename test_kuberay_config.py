"""Check a Ray cluster (sent as a Ray job): GPUs, nvidia-smi, CUDA in torch, Ray, Python packages.

    ray job submit --working-dir . --address=$(awk '!/^#/{print $0}' ~/.ray_address | head -n 1) \
        -- python test_kuberay_config.py --num_jobs 4
    python multicluster_submit.py "test_kuberay_config.py --num_jobs 4"
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_workflow.cli_types import non_negative_float, positive_int
from ray_workflow.cluster_check import failures, run_check
from ray_workflow.connection import connect_driver
from ray_workflow.errors import script_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Check a Ray cluster's GPUs, drivers, Ray and Python packages.")
    parser.add_argument("--num_jobs", type=positive_int, default=1, help="tasks to run at once")
    parser.add_argument("--gpus_per_job", type=non_negative_float, default=1.0, help="GPUs each task holds (default 1)")
    parser.add_argument("--require_isaaclab", action="store_true", help="also require Isaac Lab's packages")
    parser.add_argument(
        "--allow_missing_nvidia_smi",
        action="store_true",
        help="do not fail when nvidia-smi is missing (fake GPU slots in tests)",
    )
    parser.add_argument(
        "--wait_for_autoscaling",
        action="store_true",
        help="do not fail fast when the cluster has too few GPUs now; wait for it to scale up",
    )
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"), help="default: auto")
    return parser


@script_main(flags={"ray_address": "--address"})
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    connect_driver(args.address, logging_level="WARNING", log_to_driver=False)
    reports = run_check(
        args.num_jobs, args.gpus_per_job, args.require_isaaclab, check_capacity_first=not args.wait_for_autoscaling
    )
    rows = [
        [
            r.index,
            r.node,
            r.cuda_visible_devices,
            ",".join(map(str, r.ray_gpu_ids)) or "-",
            r.nvidia_smi,
            r.torch_cuda,
            r.ray_version,
            r.python,
            ", ".join(r.missing_packages) or "all import",
        ]
        for r in reports
    ]
    print(
        tabulate(
            rows,
            headers=[
                "task",
                "node",
                "CUDA_VISIBLE_DEVICES",
                "Ray GPU ids",
                "nvidia-smi",
                "torch",
                "Ray",
                "Python",
                "packages",
            ],
            tablefmt="github",
        )
    )
    reasons = failures(reports, args.gpus_per_job, require_nvidia_smi=not args.allow_missing_nvidia_smi)
    if reasons:
        print(f"\nFAILED: {len(reasons)} problem(s)", file=sys.stderr)
        for reason in reasons:
            print(f"  {reason}", file=sys.stderr)
        return 1
    print(f"\nOK: {args.num_jobs} task(s) x {args.gpus_per_job:g} GPU(s) passed every check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
