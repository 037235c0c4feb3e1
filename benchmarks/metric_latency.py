"""Time from a trainer writing a TensorBoard scalar to Ray Tune receiving it as a result.

The synthetic trainer writes its wall-clock time (modulo 1000 s) as the scalar's value, so the
driver's on_trial_result callback (same machine, same clock) can take the difference.

    .venv/bin/python benchmarks/metric_latency.py --seconds 20 --interval_s 0.25 --trials 2
"""

import argparse
import sys
import tempfile
import time

from common import describe, local_clusters
from ray import tune

from ray_workflow.sweeps.sweep import Sweep
from ray_workflow.sweeps.training_command import TrainingJob
from ray_workflow.sweeps.tuning import TunerSettings, run_sweep


class LatencyProbe(tune.Callback):
    def __init__(self) -> None:
        self.latencies: list[float] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "written_at" in result and not result.get("done"):
            self.latencies.append((time.time() - result["written_at"]) % 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval_s", type=float, default=0.25)
    parser.add_argument("--trials", type=int, default=2, help="trials at once (each on its own CPU)")
    args = parser.parse_args()
    import ray

    sweep = Sweep(
        name="latency",
        job=TrainingJob(
            command=(
                "{python}",
                "{project_root}/benchmarks/synthetic_trainer.py",
                "--seconds",
                str(args.seconds),
                "--interval_s",
                str(args.interval_s),
            )
        ),
        search_space={"seed": tune.grid_search(list(range(args.trials)))},
        metric="written_at",
        max_iterations=10**6,
        grace_period=1,
    )
    probe = LatencyProbe()
    with local_clusters(1, num_cpus=args.trials) as (cluster,):
        run_sweep(
            sweep,
            TunerSettings(
                num_samples=1,
                searcher="grid",
                scheduler="fifo",
                storage_path=tempfile.mkdtemp(prefix="bench_latency_"),
                name="run",
                ray_address=cluster.gcs_address,
            ),
            callbacks=[probe],
        )
        ray.shutdown()
    print(f"\nmetric_latency: {args.trials} trial(s) at once, a scalar every {args.interval_s:g} s")
    print(f"  write -> Tune result: {describe(probe.latencies)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
