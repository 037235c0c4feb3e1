"""Warm trainer slots against fresh processes, with the real Isaac Lab 3 trainer (rsl_rl, Newton, CPU).

1. Trials one at a time on a 1-CPU cluster (one trial actor, reused): per trial, from Tune starting it
   to its first result, and from its last result to the next trial's first; 10- and 50-iteration trials.
2. The ``make demo-isaaclab`` sweep (4 trials x 60 iterations x 256 envs, 2 at once), whole.

Warm and fresh run the same seeded sweeps; their results are compared trial by trial (every reported
metric of every iteration). Needs ``make isaaclab``.

    .venv/bin/python benchmarks/warm_start.py --trials 3
    .venv/bin/python benchmarks/warm_start.py --trials 8 --iterations 10 --no_demo
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from common import local_clusters
from isaaclab_sweep import CONFIG, TrialClock

from ray_workflow.sweeps.sweep import load_sweep
from ray_workflow.sweeps.tuning import TunerSettings, run_sweep


def sweep(address: str, trials: int, concurrency: int, warm: bool, name: str) -> tuple[TrialClock, float, dict]:
    """One seeded sweep; its clock, wall time, and each trial's metric curve keyed by its hyperparameters."""
    clock = TrialClock()
    settings = TunerSettings(
        num_samples=trials,
        searcher="random",
        scheduler="fifo",
        storage_path=tempfile.mkdtemp(prefix="bench_warm_"),
        name=name,
        ray_address=address,
        max_concurrent_trials=concurrency,
        seed=0,
        warm_start=warm,
        trial_timeout_s=600,
    )
    started = time.time()
    report = run_sweep(load_sweep(CONFIG), settings, callbacks=[clock])
    took = time.time() - started
    curves = {tuple(sorted(trial.hyperparameters.items())): trial.best_metric for trial in report.trials}
    return clock, took, curves


def gaps(clock: TrialClock) -> tuple[list[float], list[float]]:
    """Start to first result per trial; last result to the next trial's first result (trials one at a time)."""
    first = [clock.first_result[t] - clock.started[t] for t in clock.started if t in clock.first_result]
    order = sorted(clock.started, key=clock.started.get)
    between = [clock.first_result[b] - clock.last_result[a] for a, b in zip(order, order[1:], strict=False)]
    return first, between


def demo_sweeps(rows: list) -> bool:
    """The ``make demo-isaaclab`` sweep warm and fresh; whether their results are identical."""
    import ray

    os.environ.update(ISAACLAB_NUM_ENVS="256", ISAACLAB_MAX_ITERATIONS="60")
    with local_clusters(1, num_cpus=2, prefix="bench-warm-demo") as (cluster,):
        results = {}
        for warm in (True, False):
            _, took, curves = sweep(cluster.gcs_address, 4, 2, warm, f"demo_{warm}")
            results[warm] = curves
            rows.append(("make demo-isaaclab sweep", "warm" if warm else "fresh", [], [], took))
            print(f"demo-isaaclab, {'warm' if warm else 'fresh'}: sweep {took:.1f} s", flush=True)
        ray.shutdown()
    return results[True] == results[False]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials per one-at-a-time sweep")
    parser.add_argument("--iterations", type=int, nargs="*", default=[10, 50], help="trial lengths to measure")
    parser.add_argument("--no_demo", action="store_true", help="leave out the make demo-isaaclab sweep")
    args = parser.parse_args()
    os.environ.setdefault("ISAACLAB", str(CONFIG.parents[2] / ".venv-isaaclab" / "bin" / "isaaclab"))
    os.environ.setdefault("ISAACSIM_ASSET_ROOT", str(CONFIG.parents[2] / ".venv-isaaclab" / "assets"))
    import ray

    rows = []
    identical = True
    for iterations in args.iterations:
        os.environ.update(ISAACLAB_NUM_ENVS="64", ISAACLAB_MAX_ITERATIONS=str(iterations))
        with local_clusters(1, num_cpus=1, prefix=f"bench-warm{iterations}") as (cluster,):
            results = {}
            for warm in (True, False):
                clock, took, curves = sweep(cluster.gcs_address, args.trials, 1, warm, f"w{iterations}_{warm}")
                first, between = gaps(clock)
                results[warm] = curves
                rows.append((f"{iterations}-iteration trials", "warm" if warm else "fresh", first, between, took))
                print(f"{iterations} iterations, {'warm' if warm else 'fresh'}: sweep {took:.1f} s", flush=True)
            identical &= results[True] == results[False]
            ray.shutdown()
    if not args.no_demo:
        identical &= demo_sweeps(rows)

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} s" if values else "-"

    print("\n| sweep | trainers | trial start to first result | last result to next trial's first | whole sweep |")
    print("|---|---|---|---|---|")
    for what, how, first, between, took in rows:
        print(f"| {what} | {how} | {median(first)} | {median(between)} | {took:.1f} s |")
    print(f"\nwarm and fresh results identical, trial by trial: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
