"""A trainer whose process lives exactly --seconds and writes a TensorBoard scalar every --interval_s.

Its own start-up (Python, imports) counts towards the --seconds, as a real trainer's would
towards its compute, and it exits at once when they are up: what the overhead benchmark
measures is only what orchestration adds.

The scalar's value is the wall-clock time at which it was written, modulo 1000 s (TensorBoard
stores float32, which keeps milliseconds only for small numbers), so the metric_latency
benchmark can tell how long it took to reach Ray Tune. Start and end times go to
<log_dir>/timing.json for the overhead benchmark.
"""

import argparse
import json
import os
import time
from pathlib import Path

started = time.time()
from tensorboardX import SummaryWriter  # noqa: E402 - imported after the start time is taken

parser = argparse.ArgumentParser()
parser.add_argument("--log_dir", type=Path, required=True)
parser.add_argument("--seconds", type=float, default=10.0)
parser.add_argument("--interval_s", type=float, default=0.1)
parser.add_argument("overrides", nargs="*")
args = parser.parse_args()

writer = SummaryWriter(logdir=str(args.log_dir))
work_started = time.time()
deadline = started + args.seconds
step = 0
while (now := time.time()) < deadline:
    writer.add_scalar("written_at", now % 1000, step)
    writer.flush()
    step += 1
    time.sleep(max(0.0, min(args.interval_s, deadline - time.time())))
writer.close()
(args.log_dir / "timing.json").write_text(
    json.dumps({"process_start": started, "work_start": work_started, "end": time.time(), "steps": step})
)
# Exit at T sharp: the interpreter's own teardown (~0.5 s with these imports on 2 busy cores)
# belongs to the trainer, not to the orchestration this benchmark measures.
os._exit(0)
