"""Three local clusters, three jobs of a fixed 5 s: the whole multicluster_submit run against the slowest job.

A job's own duration is what Ray's job record says (start to end on the cluster); the
difference between the whole run and the slowest job is what submitting in parallel,
uploading the working dir, streaming logs and polling status add.

    .venv/bin/python benchmarks/multicluster_submit.py --job_seconds 5 --repeats 3
"""

import argparse
import statistics
import sys
import time

from common import PROJECT_ROOT, local_clusters
from ray.job_submission import JobSubmissionClient

from ray_workflow import auth
from ray_workflow.address_file import ClusterAddress
from ray_workflow.multicluster import MultiClusterSubmitter, SubmitOptions, assign


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--job_seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    job = f"-c 'import time; time.sleep({args.job_seconds})'"
    totals, slowest = [], []
    with local_clusters(args.clusters, num_cpus=1, prefix="bench-mc") as clusters:
        addresses = [ClusterAddress(c.name, c.dashboard_url) for c in clusters]
        for repeat in range(args.repeats + 1):
            submitter = MultiClusterSubmitter(SubmitOptions(working_dir=PROJECT_ROOT))
            started = time.monotonic()
            runs = submitter.run(assign([job] * args.clusters, addresses, use_queue=False))
            total = time.monotonic() - started
            assert all(run.status == "SUCCEEDED" for run in runs), [run.status for run in runs]
            durations = []
            for run in runs:
                info = JobSubmissionClient(
                    run.cluster.dashboard_url, headers=auth.http_headers(run.cluster.dashboard_url)
                ).get_job_info(run.job_id)
                durations.append((info.end_time - info.start_time) / 1000)
            if repeat == 0:
                print(f"warm-up run (uploads the working dir once): {total:.2f} s")
                continue
            totals.append(total)
            slowest.append(max(durations))
            print(f"run {repeat}: whole {total:.2f} s, slowest job {max(durations):.2f} s", flush=True)
    print(
        f"\nmulticluster_submit: {args.clusters} clusters x 1 job of {args.job_seconds:g} s, median of {args.repeats}"
    )
    print(f"  whole run    {statistics.median(totals):6.2f} s")
    print(f"  slowest job  {statistics.median(slowest):6.2f} s  (Ray's own record, driver start included)")
    print(f"  difference   {statistics.median(t - s for t, s in zip(totals, slowest, strict=True)):6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
