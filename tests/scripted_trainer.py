"""A trainer with scripted behaviour for the tuner's failure-mode tests (crash, hang, slow start).

It writes real TensorBoard event files with the same writer as the embedded trainer and
takes the same kind of arguments; only its "training" is a loop that sleeps. With
``--log_root`` instead of ``--log_dir`` it picks its folder as Isaac Lab's train.py does:
it prints the root (as given, so possibly relative to its cwd), names the run by the second
unless ``--run_timestamp`` names it, appends ``_<--run_name>`` as rsl_rl does, and prints
the ``Exact experiment name`` line ``--name_line_delay`` seconds later, as rl_games does.
"""

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime

from torch.utils.tensorboard import SummaryWriter

parser = argparse.ArgumentParser()
parser.add_argument("--log_dir")
parser.add_argument("--log_root")
parser.add_argument("--run_timestamp")
parser.add_argument("--run_name")
parser.add_argument("--name_line_delay", type=float, default=0.0)
parser.add_argument("--iterations", type=int, default=10)
parser.add_argument("--seconds_per_iteration", type=float, default=0.05)
parser.add_argument("--crash_at", type=int, default=-1, help="exit 3 after this many iterations")
parser.add_argument("--hang_at", type=int, default=-1, help="stop writing (and sleep) after this many")
parser.add_argument("--spawn_child", action="store_true", help="start a grandchild that sleeps, like a simulator")
parser.add_argument("--daemon", help="double-fork a daemon out of the trainer's session that writes its pid here")
parser.add_argument("--flat", action="store_true", help="score = quality at every iteration, not growing with it")
parser.add_argument("--checkpoint_interval", type=int, default=0, help="save checkpoint_<done>.txt every K")
parser.add_argument("--checkpoint", help="resume from this checkpoint (it holds the iterations done)")
parser.add_argument("overrides", nargs="*")
args = parser.parse_args()

values = dict(override.split("=", 1) for override in args.overrides)
quality = float(values.get("agent.quality", 1.0))
crash_at = int(values.get("agent.crash_at", args.crash_at))
if os.path.exists(values.get("agent.crash_while_exists") or "/nonexistent"):  # a failure the test can take away
    crash_at = 2
hang_at = int(values.get("agent.hang_at", args.hang_at))

if args.spawn_child:  # it names the trainer's log folder, as a simulator names its scene: tests find it by that
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", args.log_dir or args.log_root])
if args.daemon and os.fork() == 0:  # the classic daemon: fork, new session, fork again, leave the parent
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 3)
        with open(args.daemon + ".tmp", "w") as pid_file:
            pid_file.write(str(os.getpid()))
        os.rename(args.daemon + ".tmp", args.daemon)
        time.sleep(600)
    os._exit(0)
if args.log_root:
    print(f"[INFO] Logging experiment in directory: {args.log_root}", flush=True)
    run_name = args.run_timestamp or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    log_dir = os.path.join(args.log_root, run_name + (f"_{args.run_name}" if args.run_name else ""))
    writer = SummaryWriter(log_dir=log_dir)
    time.sleep(args.name_line_delay)
    print(f"Exact experiment name requested from command line: {run_name}", flush=True)
else:
    print(f"[INFO] Logging experiment in directory: {args.log_dir}", flush=True)
    writer = SummaryWriter(log_dir=args.log_dir)
start = 0
if args.checkpoint:
    start = int(open(args.checkpoint).read())
    print(f"Resuming from checkpoint {args.checkpoint} after {start} iterations", flush=True)
for iteration in range(start, args.iterations):
    if iteration == crash_at:
        print("simulated failure: CUDA error: an illegal memory access was encountered", flush=True)
        sys.exit(3)
    if iteration == hang_at:
        print("simulated hang", flush=True)
        time.sleep(600)
    time.sleep(args.seconds_per_iteration)
    writer.add_scalar("score", quality if args.flat else quality * (iteration + 1), iteration)
    writer.flush()
    if args.checkpoint_interval and (iteration + 1) % args.checkpoint_interval == 0:
        with open(os.path.join(writer.get_logdir(), f"checkpoint_{iteration + 1:06d}.txt"), "w") as checkpoint:
            checkpoint.write(str(iteration + 1))
writer.close()
