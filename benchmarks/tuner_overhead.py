"""Orchestration overhead of a sweep: N synthetic trials of exactly T seconds, C at a time.

Ideal = N x T / C. Measured = from the first trainer's start to the last trainer's end (cluster
start and Ray Tune's set-up excluded), and also the whole tuner.fit() call. Prints the
overhead of each and where it goes: trial launch (Tune schedules the trial -> trainer process
runs) and trial end (trainer done -> Tune knows).

    .venv/bin/python benchmarks/tuner_overhead.py --trials 8 --seconds 10 --concurrency 2 --repeats 3
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT, describe, local_clusters
from ray import tune

from ray_workflow.sweeps.sweep import Sweep
from ray_workflow.sweeps.training_command import TrainingJob
from ray_workflow.sweeps.tuning import TunerSettings, run_sweep


class TrialClock(tune.Callback):
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = time.time()


def one_run(address: str, trials: int, seconds: float, concurrency: int) -> dict:
    storage = Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    sweep = Sweep(
        name="overhead",
        job=TrainingJob(
            command=("{python}", "{project_root}/benchmarks/synthetic_trainer.py", "--seconds", str(seconds))
        ),
        search_space={"seed": tune.grid_search(list(range(trials)))},
        metric="written_at",
        max_iterations=10**6,
        grace_period=1,
    )
    clock = TrialClock()
    settings = TunerSettings(
        num_samples=1,
        searcher="grid",
        scheduler="fifo",
        storage_path=str(storage),
        name="run",
        ray_address=address,
        max_concurrent_trials=concurrency,
    )
    fit_started = time.time()
    report = run_sweep(sweep, settings, callbacks=[clock])
    fit_ended = time.time()
    assert all(t.status == "FINISHED" for t in report.trials), report.table
    timings = [json.loads(p.read_text()) for p in storage.glob("run/trial_*/tensorboard/timing.json")]
    assert len(timings) == trials, f"found {len(timings)} timing files"
    ideal = trials * seconds / concurrency
    span = max(t["end"] for t in timings) - min(t["process_start"] for t in timings)
    starts = sorted(t["process_start"] for t in timings)
    ends = sorted(t["end"] for t in timings)
    # Each trainer after the first wave waits for a slot: the time from the slot freeing up
    # (a trainer ending) to the next trainer starting is pure orchestration.
    gaps = [
        start - max(end for end in ends if end <= start)
        for start in starts[concurrency:]
        if any(end <= start for end in ends)
    ]
    by_start = sorted(clock.started.values())
    return {
        "ideal": ideal,
        "span": span,
        "fit": fit_ended - fit_started,
        "launch": [
            t["process_start"] - s
            for t, s in zip(sorted(timings, key=lambda t: t["process_start"]), by_start, strict=False)
        ],
        "startup": [t["work_start"] - t["process_start"] for t in timings],
        "gaps": gaps,
        "end": sorted(clock.ended.values()),
        "trainer_end": sorted(t["end"] for t in timings),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray

    with local_clusters(1, num_cpus=args.concurrency) as (cluster,):
        runs = []
        for _ in range(args.repeats):
            runs.append(one_run(cluster.gcs_address, args.trials, args.seconds, args.concurrency))
            print(
                f"run: span {runs[-1]['span']:.2f} s, fit {runs[-1]['fit']:.2f} s (ideal {runs[-1]['ideal']:.1f} s)",
                flush=True,
            )
        ray.shutdown()
    ideal = runs[0]["ideal"]
    span = statistics.median(r["span"] for r in runs)
    fit = statistics.median(r["fit"] for r in runs)
    print(
        f"\ntuner_overhead: N={args.trials} T={args.seconds:g}s C={args.concurrency}, {args.repeats} runs, "
        f"machine: {PROJECT_ROOT.name}"
    )
    print(f"  ideal N*T/C                 {ideal:8.2f} s")
    print(
        f"  first trainer start -> last trainer end {span:8.2f} s  overhead {100 * (span / ideal - 1):5.1f} %"
        f"  ({(span - ideal) / args.trials:.2f} s per trial)"
    )
    print(
        f"  whole tuner.fit()           {fit:8.2f} s  overhead {100 * (fit / ideal - 1):5.1f} %"
        f"  ({(fit - ideal) / args.trials:.2f} s per trial)"
    )
    print(f"  trial start -> trainer process start: {describe([x for r in runs for x in r['launch']])}")
    print(f"  trainer process start -> first write: {describe([x for r in runs for x in r['startup']])}")
    print(f"  a trainer ends -> the next one starts: {describe([x for r in runs for x in r['gaps']])}")
    ends = [e - t for r in runs for e, t in zip(r["end"], r["trainer_end"], strict=False)]
    print(f"  trainer end -> Tune marks trial done: {describe(ends)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
