"""Send jobs to the Ray clusters listed in ~/.ray_address, job i to cluster i, all at once.

python multicluster_submit.py "test_kuberay_config.py --num_jobs 4"      # the same job on every cluster
python multicluster_submit.py "<JOB_0>" "<JOB_1>"                        # one job per cluster
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_workflow import PROJECT_ROOT, address_file, hosts, log_progress_to
from ray_workflow.cli_types import non_negative_int, positive_float
from ray_workflow.errors import Interrupted, script_main
from ray_workflow.multicluster import MultiClusterSubmitter, RunStatus, SubmissionError, SubmitOptions, assign


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SubmissionError(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Submit jobs to several Ray clusters: job i to the i-th cluster of the address file; "
        "one job goes to every cluster."
    )
    parser.add_argument("jobs", nargs="+", help='jobs as "script.py --flag value" (run as <python> <job>)')
    parser.add_argument("--address_file", type=Path, default=address_file.DEFAULT_PATH)
    parser.add_argument(
        "--python", default="python", help="interpreter on the cluster, e.g. /workspace/isaaclab/_isaac_sim/python.sh"
    )
    parser.add_argument("--working_dir", type=Path, default=PROJECT_ROOT, help="folder uploaded as the job's cwd")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="job environment variable")
    parser.add_argument(
        "--queue", action="store_true", help="more jobs than clusters: run the rest as clusters free up"
    )
    parser.add_argument("--no_wait", action="store_true", help="print the job ids and return")
    parser.add_argument(
        "--connect_timeout_s", type=positive_float, default=10.0, help="give up on silent clusters after this"
    )
    parser.add_argument(
        "--resubmit",
        type=non_negative_int,
        default=0,
        help="send a job lost with its cluster again, up to this many times, once the cluster (started again under "
        "its name) answers; a sweep sent again continues where it was (default 0)",
    )
    parser.add_argument(
        "--resubmit_wait_s",
        type=positive_float,
        default=1800.0,
        help="how long to wait each time for a lost cluster to answer again (default 1800)",
    )
    return parser


def results_table(runs: list, tries: int) -> str:
    rows = [
        [
            run.cluster_name,
            run.cluster.dashboard_url,
            run.job_id or "-",
            f"{run.status} (sent again)" if run.resubmitted else run.status,
            f"{run.attempt} of {tries}",
            f"{run.duration_s:.1f} s" if run.duration_s is not None else "-",
            run.job,
        ]
        for run in runs
    ]
    headers = ["cluster", "address", "job id", "status", "try", "duration", "job"]
    return tabulate(rows, headers=headers, tablefmt="github")


@script_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clusters = address_file.read(args.address_file)
    options = SubmitOptions(
        python=args.python,
        working_dir=args.working_dir.resolve(),
        env=parse_env(args.env),
        queue=args.queue,
        wait=not args.no_wait,
        connect_timeout_s=args.connect_timeout_s,
        resubmit=args.resubmit,
        resubmit_wait_s=args.resubmit_wait_s,
        address_file=args.address_file,
    )
    plan = assign(args.jobs, clusters, args.queue)
    if not args.working_dir.is_dir():
        raise SubmissionError(f"--working_dir {args.working_dir}: not a directory")
    if plan.idle:
        idle = ", ".join(cluster.name or cluster.dashboard_url for cluster in plan.idle)
        print(f"note: {len(args.jobs)} jobs for {len(clusters)} clusters; no job for {idle}")
    log_progress_to(sys.stdout)
    submitter = MultiClusterSubmitter(options)
    try:
        runs = submitter.run(plan)
    except KeyboardInterrupt:
        stopped = submitter.stop_submitted()
        jobs = ", ".join(f"{run.job_id} on {run.cluster_name}" for run in stopped)
        raise Interrupted(f"stopped {len(stopped)} submitted job(s){': ' if jobs else ''}{jobs}") from None
    order = {cluster.name or cluster.dashboard_url: index for index, cluster in enumerate(clusters)}
    runs.sort(key=lambda run: order.get(run.cluster_name, len(order)))  # a cluster started again has a new address
    print()
    print(results_table(runs, args.resubmit + 1))
    if args.no_wait:
        return 0 if all(run.job_id for run in runs) else 1
    if any(run.status == RunStatus.CLUSTER_LOST and not run.resubmitted for run in runs):
        hosts.drop_gone(args.address_file)  # the address file keeps only clusters that are still there
    failed = [run for run in runs if run.failed]
    for run in failed:
        print(f"{run.cluster_name}: {run.status}" + (f": {run.error}" if run.error else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
