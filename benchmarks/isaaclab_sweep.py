"""What the tuner adds around the real Isaac Lab 3 trainer, and what the Warp kernel cache costs a sweep.

1. ``isaaclab train`` alone: from process start to its first metric on disk, and to its exit.
2. The same trainer as trials of a sweep, one at a time: from Tune starting the trial to its
   first result, and from a trial's last result to the next trial's start.
3. A sweep of 2 trials at once with an empty Warp kernel cache (cold) and again with the
   cache it filled (warm), wall time of ``run_sweep``.

Needs ``make isaaclab``.   .venv/bin/python benchmarks/isaaclab_sweep.py --trials 4
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT, describe, local_clusters
from ray import tune

from ray_workflow.sweeps.sweep import load_sweep
from ray_workflow.sweeps.tensorboard_metrics import ScalarReader
from ray_workflow.sweeps.tuning import TunerSettings, run_sweep

VENV = PROJECT_ROOT / ".venv-isaaclab"
CONFIG = PROJECT_ROOT / "hyper_parameter_tuning" / "config" / "isaaclab3_cartpole.py"
METRIC = "Train/mean_reward"


class TrialClock(tune.Callback):
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.first_result: dict[str, float] = {}
        self.last_result: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.first_result.setdefault(trial.trial_id, time.time())
        self.last_result[trial.trial_id] = time.time()


def trainer_alone(run_name: str, cwd: Path) -> tuple[float, float]:
    """Seconds from start to the first metric on disk, and to exit, of ``isaaclab train`` run by hand."""
    sweep = load_sweep(CONFIG)
    argv = [part.format(trial_index=0) for part in sweep.job.command] + ["--run_timestamp", run_name]
    started = time.time()
    process = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **sweep.job.env}, stdout=subprocess.DEVNULL)
    reader, first = None, None
    while process.poll() is None:
        if reader is None and (found := list((cwd / "logs" / "rsl_rl").glob(f"*/{run_name}"))):
            reader = ScalarReader(found[0])
        if first is None and reader is not None:
            if any(METRIC in row.values for row in reader.poll(required_tag=METRIC)):
                first = time.time() - started
        time.sleep(0.05)
    return first or float("nan"), time.time() - started


def sweep_once(address: str, trials: int, concurrency: int, storage: Path, name: str) -> tuple[TrialClock, float]:
    clock = TrialClock()
    settings = TunerSettings(
        num_samples=trials,
        searcher="random",
        scheduler="fifo",
        storage_path=str(storage),
        name=name,
        ray_address=address,
        max_concurrent_trials=concurrency,
        seed=0,
    )
    started = time.time()
    run_sweep(load_sweep(CONFIG), settings, callbacks=[clock])
    return clock, time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--num_envs", type=int, default=64)
    args = parser.parse_args()
    if not (VENV / ".installed").exists():
        print("error: Isaac Lab is not installed; run `make isaaclab`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench_isaaclab_"))
    os.environ.update(
        ISAACLAB=str(VENV / "bin" / "isaaclab"),
        ISAACSIM_ASSET_ROOT=str(VENV / "assets"),
        ISAACLAB_NUM_ENVS=str(args.num_envs),
        ISAACLAB_MAX_ITERATIONS=str(args.iterations),
        ISAACLAB_CWD=str(work),
        WARP_CACHE_PATH=str(work / "warp_cache"),
    )
    print(f"Isaac-Cartpole-Direct, rsl_rl, {args.num_envs} envs, {args.iterations} iterations, CPU")
    with local_clusters(1, num_cpus=2, prefix="bench-isaaclab") as (cluster,):
        clock, cold_s = sweep_once(cluster.gcs_address, 2, 2, work / "storage", "cold")
        clock, warm_s = sweep_once(cluster.gcs_address, 2, 2, work / "storage", "warm")
        print(f"2 trials at once, empty Warp cache (cold): {cold_s:.1f} s; again, cache filled (warm): {warm_s:.1f} s")
        alone = [trainer_alone(f"alone_{index}", work) for index in range(3)]
        first_alone = [first for first, _ in alone]
        print(f"isaaclab train alone, start -> first metric on disk: {describe(first_alone)}")
        print(f"isaaclab train alone, start -> exit: {describe([total for _, total in alone])}")
        clock, sequential_s = sweep_once(cluster.gcs_address, args.trials, 1, work / "storage", "sequential")
        in_sweep = [clock.first_result[t] - clock.started[t] for t in clock.started if t in clock.first_result]
        order = sorted(clock.started, key=clock.started.get)
        gaps = [clock.started[b] - clock.last_result[a] for a, b in zip(order, order[1:], strict=False)]
        print(f"in a sweep, trial start -> first Tune result: {describe(in_sweep)}")
        print(
            f"  added by the tuner: {statistics.median(in_sweep) - statistics.median(first_alone):+.2f} s per trial "
            "(median in sweep - median alone)"
        )
        print(f"in a sweep, last result -> next trial's start: {describe(gaps)}")
        print(f"{args.trials} trials one at a time: {sequential_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
