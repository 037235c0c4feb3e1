"""A program that leaves work for the interpreter's exit, for the warm-slot test that a trainer forked from a
slot ends exactly as a fresh interpreter does: what it writes, what it prints, its exit status.

It writes to a file it never closes (the data sits in Python's buffer), registers an ``atexit`` handler and
starts a non-daemon thread that writes once the main program has ended; then it ends as ``--end`` says.
"""

import argparse
import atexit
import sys
import threading
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--end", choices=["return", "exit_3", "exit_message", "raise", "interrupt"], required=True)
args = parser.parse_args()

left_open = open(args.out / "left_open.txt", "w")  # left open on purpose
left_open.write("buffered, never flushed by the program\n")
atexit.register(lambda: (args.out / "atexit.txt").write_text("atexit ran\n"))
main_ended = threading.Event()
threading.Thread(target=lambda: main_ended.wait() and (args.out / "thread.txt").write_text("joined\n")).start()
print("stdout line, buffered by a pipe", end="")


def end() -> None:
    main_ended.set()
    if args.end == "exit_3":
        sys.exit(3)
    if args.end == "exit_message":
        sys.exit("ending with a message")
    if args.end == "raise":
        raise RuntimeError("the trainer crashed")
    if args.end == "interrupt":
        raise KeyboardInterrupt


end()
