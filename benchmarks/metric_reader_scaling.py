"""Cost of one incremental poll that finds k new scalars, on event files of 1k, 10k and 100k scalars.

Beside it, the cost of what Isaac Lab's tuner does (reload the whole file with TensorBoard's
EventAccumulator each time) for comparison. Our poll must not grow with the file's size.

    .venv/bin/python benchmarks/metric_reader_scaling.py --new 10 --repeats 20
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT  # noqa: F401 - puts the project on sys.path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from ray_workflow.sweeps.tensorboard_metrics import ScalarReader


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--new", type=int, default=10, help="scalars written between two polls")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"metric_reader_scaling: poll finding {args.new} new scalars (median of {args.repeats})")
    print("| scalars in file | incremental poll | full reload (EventAccumulator) |")
    print("|---|---|---|")
    for size in args.sizes:
        log_dir = Path(tempfile.mkdtemp(prefix=f"bench_reader_{size}_"))
        writer = SummaryWriter(log_dir=str(log_dir), max_queue=1000)
        for step in range(size):
            writer.add_scalar("reward", float(step), step)
        writer.flush()
        reader = ScalarReader(log_dir)
        reader.poll(final=True)
        step = size
        polls, reloads = [], []
        for _ in range(args.repeats):
            for _ in range(args.new):
                writer.add_scalar("reward", float(step), step)
                step += 1
            writer.flush()
            started = time.perf_counter()
            rows = reader.poll(final=True)
            polls.append(time.perf_counter() - started)
            assert len(rows) == args.new, len(rows)
        for _ in range(min(args.repeats, 3)):
            started = time.perf_counter()
            accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
            accumulator.Reload()
            accumulator.Scalars("reward")
            reloads.append(time.perf_counter() - started)
        writer.close()
        print(
            f"| {size:>9,} | {1e3 * statistics.median(polls):8.3f} ms | {1e3 * statistics.median(reloads):10.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
