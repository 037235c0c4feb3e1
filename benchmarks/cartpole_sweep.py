"""The README demo's CartPole sweep, timed: Optuna + ASHA against random search + FIFO, same budget.

For each run: the time until the first trial's mean return reaches 475, the whole sweep's time
and the best return; and the peak memory (RSS) of the tuner's driver (this process), of a
trial's wrapper (the Ray worker running the trainable) and of a trainer.

    .venv/bin/python benchmarks/cartpole_sweep.py --repeats 3
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time

import psutil
from common import PROJECT_ROOT, local_clusters
from ray import tune

from ray_workflow.sweeps.sweep import load_sweep
from ray_workflow.sweeps.tuning import TunerSettings, run_sweep

SOLVED = 475.0


class SolveClock(tune.Callback):
    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.started = time.monotonic()
        self.solved_after: float | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.solved_after is None and result.get(self.metric, 0) >= SOLVED:
            self.solved_after = time.monotonic() - self.started


class MemorySampler(threading.Thread):
    """Peak RSS of trainers (train_cartpole.py) and of their parents, the trial wrappers."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_trainer = self.peak_wrapper = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            for process in psutil.process_iter(["cmdline"]):
                try:
                    if any("train_cartpole.py" in arg for arg in process.info["cmdline"] or []):
                        self.peak_trainer = max(self.peak_trainer, process.memory_info().rss)
                        self.peak_wrapper = max(self.peak_wrapper, process.parent().memory_info().rss)
                except (psutil.NoSuchProcess, AttributeError):
                    continue
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_samples", type=int, default=8)
    args = parser.parse_args()
    import ray

    sweep = load_sweep(PROJECT_ROOT / "hyper_parameter_tuning/config/cartpole_sweep.py")
    variants = [("optuna", "asha"), ("random", "fifo")]
    results: dict[tuple[str, str], list[tuple[float | None, float, float]]] = {v: [] for v in variants}
    sampler = MemorySampler()
    sampler.start()
    with local_clusters(1, num_cpus=2, prefix="bench-cp") as (cluster,):
        for repeat in range(args.repeats):
            for searcher, scheduler in variants:
                clock = SolveClock(sweep.metric)
                started = time.monotonic()
                report = run_sweep(
                    sweep,
                    TunerSettings(
                        num_samples=args.num_samples,
                        searcher=searcher,
                        scheduler=scheduler,
                        cpus_per_trial=1,
                        storage_path=tempfile.mkdtemp(prefix="bench_cartpole_"),
                        name="run",
                        seed=repeat,
                        ray_address=cluster.gcs_address,
                    ),
                    callbacks=[clock],
                )
                total = time.monotonic() - started
                best = report.best.best_metric if report.best else float("nan")
                results[(searcher, scheduler)].append((clock.solved_after, total, best))
                solved = f"{clock.solved_after:.1f} s" if clock.solved_after else "never"
                print(
                    f"run {repeat + 1} {searcher}+{scheduler}: solved after {solved}, sweep {total:.1f} s, "
                    f"best {best:.1f}",
                    flush=True,
                )
        ray.shutdown()
    sampler.running = False
    print(f"\ncartpole_sweep: {args.num_samples} trials, 1 CPU each on a 2-CPU cluster, median of {args.repeats}")
    print("| searcher + scheduler | first trial reaches 475 | whole sweep | best mean return | solved in |")
    print("|---|---|---|---|---|")
    for (searcher, scheduler), runs in results.items():
        solved = [s for s, _, _ in runs if s is not None]
        print(
            f"| {searcher} + {scheduler} | {statistics.median(solved):.1f} s | "
            f"{statistics.median(t for _, t, _ in runs):.1f} s | {statistics.median(b for _, _, b in runs):.1f} | "
            f"{len(solved)}/{len(runs)} runs |"
            if solved
            else f"| {searcher} + {scheduler} | never | - | - | 0 |"
        )
    driver = psutil.Process().memory_info().rss
    import resource

    peak_driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mib = 2**20
    print(
        f"\npeak RSS: tuner driver {peak_driver / mib:.0f} MiB (now {driver / mib:.0f} MiB), "
        f"trial wrapper {sampler.peak_wrapper / mib:.0f} MiB, trainer {sampler.peak_trainer / mib:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
