"""A trainer with scripted behaviour for the tuner's failure-mode tests (crash, hang, slow start).

It writes real TensorBoard event files with the same writer as the embedded trainer and
takes the same kind of arguments; only its "training" is a loop that sleeps.
"""

import argparse
import subprocess
import sys
import time

from torch.utils.tensorboard import SummaryWriter

parser = argparse.ArgumentParser()
parser.add_argument("--log_dir", required=True)
parser.add_argument("--iterations", type=int, default=10)
parser.add_argument("--seconds_per_iteration", type=float, default=0.05)
parser.add_argument("--crash_at", type=int, default=-1, help="exit 3 after this many iterations")
parser.add_argument("--hang_at", type=int, default=-1, help="stop writing (and sleep) after this many")
parser.add_argument("--spawn_child", action="store_true", help="start a grandchild that sleeps, like a simulator")
parser.add_argument("overrides", nargs="*")
args = parser.parse_args()

values = dict(override.split("=", 1) for override in args.overrides)
quality = float(values.get("agent.quality", 1.0))
crash_at = int(values.get("agent.crash_at", args.crash_at))
hang_at = int(values.get("agent.hang_at", args.hang_at))

if args.spawn_child:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"[INFO] Logging experiment in directory: {args.log_dir}", flush=True)
writer = SummaryWriter(log_dir=args.log_dir)
for iteration in range(args.iterations):
    if iteration == crash_at:
        print("simulated failure: CUDA error: an illegal memory access was encountered", flush=True)
        sys.exit(3)
    if iteration == hang_at:
        print("simulated hang", flush=True)
        time.sleep(600)
    time.sleep(args.seconds_per_iteration)
    writer.add_scalar("score", quality * (iteration + 1), iteration)
    writer.flush()
writer.close()
