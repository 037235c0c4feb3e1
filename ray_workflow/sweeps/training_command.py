"""A trial's training command: rendering hyperparameters into arguments and running it safely.

Isaac Lab trains in its own process (Isaac Sim needs one), so every trial is a command
line. It runs in its own process group, so that stopping a trial ends the trainer and
everything the trainer started, and nothing else.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ray_workflow import PROJECT_ROOT
from ray_workflow.errors import UserError
from ray_workflow.process_groups import end_marked, end_process_group
from ray_workflow.sweeps.warm_slot import WarmSlot, die_with_parent, script_of

OverrideStyle = Literal["hydra", "flags"]
# The variable that marks every process a trial's trainer starts, with a value of that trainer's own.
TRIAL_MARK = "ISAACLAB_RAY_TRIAL_MARK"
# The first line of a trial's output log when its trainer was forked from a warm slot.
WARM_START_LINE = "[isaaclab_ray] trainer forked from this trial actor's warm slot"

# Isaac Lab's train.py scripts print these. The root is shared by every run started from the same
# folder, and may be relative to the trainer's cwd; the second line may come much later (rl_games
# prints it once the environment is built), holds a run name (rsl_rl, skrl: without the suffix
# the folder gets) or a whole path (rl_games).
LOG_ROOT_PATTERN = re.compile(r"\[INFO\] Logging experiment in directory: (?P<path>.+?)\s*$")
RUN_NAME_PATTERN = re.compile(r"Exact experiment name requested from command line:? (?P<name>.+?)\s*$")


@dataclass(frozen=True)
class TrainerCheckpoints:
    """Where a trainer leaves its checkpoints and how it is told to resume from one.

    ``pattern`` is a glob under the trainer's log directory (``checkpoint_*.zip`` for the
    embedded trainer, ``nn/*.pth`` for rl_games, ``model_*.pt`` for rsl_rl); ``interval``
    is how many iterations lie between two checkpoints, passed with ``interval_args``
    (``{interval}`` is replaced); ``resume_flag`` takes the checkpoint's path.
    """

    pattern: str
    interval: int
    interval_args: tuple[str, ...] = ()
    resume_flag: str = "--checkpoint"

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"TrainerCheckpoints.interval {self.interval}: must be at least 1")


@dataclass(frozen=True)
class TrainingJob:
    """How to start one trial of a training script.

    ``command`` may use ``{python}`` (the worker's interpreter), ``{project_root}`` (this
    folder as the worker sees it) and ``{trial_index}`` (the trial's number, for Isaac Lab's
    ``--ray-proc-id``). ``log_dir_flag`` is the flag that sets the TensorBoard directory;
    without it, the trainer picks its folder under the root it prints (``Logging experiment
    in directory``), as Isaac Lab does, and ``run_name_args`` give that folder a name unique
    to the trial (``{run_name}`` is replaced): Isaac Lab 3's ``--run_timestamp {run_name}``,
    or 2.x overrides such as ``agent.run_name={run_name}``. Metrics are then read from that
    folder only, never from the root that other trials share.

    ``warm_cache_dir`` names a node-local cache that the trainer's first run fills at great
    cost (Warp's kernel cache, ``~/.cache/warp``: about 50 s for Isaac-Cartpole): the first
    trial on a node then starts alone, and the others wait until it reports a result.

    ``warm_imports`` are the modules a warm slot imports before it forks each trial's trainer
    (``warm_slot``): a trial of a command whose start-up is mostly imports (Isaac Lab 3's
    ``isaaclab train``) then starts in about a second. Empty: every trial is a fresh process.
    """

    command: tuple[str, ...]
    override_style: OverrideStyle = "hydra"
    log_dir_flag: str | None = "--log_dir"
    run_name_args: tuple[str, ...] = ()
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    checkpoints: TrainerCheckpoints | None = None
    warm_cache_dir: str | None = None
    warm_imports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("TrainingJob.command is empty")
        if self.override_style not in ("hydra", "flags"):
            raise ValueError(f"TrainingJob.override_style {self.override_style!r}: use 'hydra' or 'flags'")
        if self.run_name_args and not any("{run_name}" in part for part in self.run_name_args):
            raise ValueError(f"TrainingJob.run_name_args {self.run_name_args}: none of them uses {{run_name}}")

    def argv(
        self,
        hyperparameters: Mapping[str, Any],
        log_dir: Path | None,
        resume_from: Path | None = None,
        run_name: str | None = None,
        trial_index: int = 0,
    ) -> list[str]:
        """The full command line for one trial, resuming from a checkpoint if one is given."""
        substitutions = {"python": sys.executable, "project_root": str(PROJECT_ROOT), "trial_index": trial_index}
        argv = [part.format(**substitutions) for part in self.command]
        if self.log_dir_flag and log_dir is not None:
            argv += [self.log_dir_flag, str(log_dir)]
        if run_name is not None:
            argv += [part.replace("{run_name}", run_name) for part in self.run_name_args]
        if self.checkpoints is not None:
            argv += [part.format(interval=self.checkpoints.interval) for part in self.checkpoints.interval_args]
            if resume_from is not None:
                argv += [self.checkpoints.resume_flag, str(resume_from)]
        return argv + render_arguments(hyperparameters, self.override_style)


def format_value(value: Any, style: OverrideStyle) -> str:
    """A value as Hydra (or argparse) reads it back: booleans lower case, lists in brackets."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null" if style == "hydra" else "None"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(item, style) for item in value) + "]"
    if hasattr(value, "item"):  # numpy scalars from searchers
        return format_value(value.item(), style)
    return str(value)


def render_arguments(hyperparameters: Mapping[str, Any], style: OverrideStyle) -> list[str]:
    """``{"agent.lr": 0.001}`` → ``["agent.lr=0.001"]`` (hydra) or ``["--agent.lr", "0.001"]`` (flags).

    In flags style a True boolean is a bare switch and a False one is left out, as with
    argparse's ``store_true`` flags such as Isaac Lab's ``--headless``.
    """
    arguments: list[str] = []
    for key, value in hyperparameters.items():
        if style == "hydra":
            arguments.append(f"{key}={format_value(value, style)}")
        elif isinstance(value, bool):
            arguments += [f"--{key}"] if value else []
        else:
            arguments += [f"--{key}", format_value(value, style)]
    return arguments


class WarmCacheLock:
    """The first trial on a node fills the trainer's cache alone; the others wait, then start warm.

    A ``flock`` on a file in the cache folder (released by the kernel if the holder dies),
    and a marker per command once a trainer has reported a result: later trials skip the lock.
    A cache that already holds compiled kernels (Warp's ``<version>/wp_*/*.o``, left by a plain
    ``isaaclab train`` on the node, say) is warm too; kernels of another task that it lacks are
    then compiled by the first trials at once, which costs time, never correctness.
    """

    def __init__(self, cache_dir: str, argv: list[str]) -> None:
        folder = Path(cache_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]
        self.marker = folder / f".isaaclab_ray_warm_{key}"
        self._handle = None
        if not self.marker.exists() and not _holds_compiled_kernels(folder):
            self._handle = open(folder / ".isaaclab_ray_warm.lock", "w")  # held until release(), not a with-block
            fcntl.flock(self._handle, fcntl.LOCK_EX)
            if self.marker.exists():  # another trial warmed the cache while we waited
                self.release()

    def warmed(self) -> None:
        if self._handle is not None:
            self.marker.touch()
            self.release()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _holds_compiled_kernels(folder: Path) -> bool:
    return next(folder.glob("*/wp_*/*.o"), None) is not None


def run_folder(root: Path, run_name: str) -> Path | None:
    """The folder under ``root`` named ``run_name``, or ``<timestamp>_<run_name>``, ``<run_name>_<suffix>``."""
    exact = root / run_name
    if exact.is_dir():
        return exact
    try:
        candidates = [
            path
            for path in root.iterdir()
            if path.is_dir() and (path.name.startswith(f"{run_name}_") or path.name.endswith(f"_{run_name}"))
        ]
    except OSError:
        return None
    return candidates[0] if len(candidates) == 1 else None


class TrainerMissing(UserError, FileNotFoundError):
    """The training command, or the interpreter its ``#!`` line names, does not exist on this node."""


def _why_missing(program: str, env: Mapping[str, str]) -> str:
    """Which file the kernel did not find: the program itself, or the interpreter on its ``#!`` line."""
    found = shutil.which(program, path=env.get("PATH"))
    if found is None:
        return f"training command {program!r}: no such file (or not on the PATH)"
    try:
        with open(found, "rb") as file:
            first = file.readline(4096).decode(errors="replace").strip()
    except OSError:
        first = ""
    interpreter = first.removeprefix("#!").split()[0] if first.startswith("#!") and first[2:].strip() else None
    if interpreter and not Path(interpreter).exists():
        return f"training command {found}: its interpreter {interpreter} (its #! line) does not exist on this node"
    return f"training command {found}: cannot be run (no such file)"


class TrainingProcess:
    """A running training command in its own process group, with its output kept.

    The whole output goes to ``output_path``; the last lines stay in memory for error
    messages, and the trainer's log directory lines are picked out as they pass.
    ``run_name`` is the unique name the trial gave the trainer's run folder, if any.
    """

    def __init__(
        self,
        argv: list[str],
        output_path: Path,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        tail_lines: int = 40,
        run_name: str | None = None,
        slot: WarmSlot | None = None,
    ) -> None:
        """Start ``argv``: forked from ``slot`` if one is given (``script_of(argv)`` runs under its interpreter),
        else as a fresh process."""
        self.argv = argv
        self.output_path = output_path
        self.cwd = Path(cwd).resolve() if cwd else Path.cwd()
        self.run_name = run_name
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._log_root: str | None = None
        self._run_name: str | None = None
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output_path.touch()  # there from the start, for whoever follows the trainer's output
        # Every process the trainer starts inherits this mark, however it detaches from the trainer's group.
        self.mark = secrets.token_hex(16)
        environment = {**os.environ, **(env or {}), TRIAL_MARK: self.mark}
        self.warm = slot is not None
        if slot is not None:
            script = script_of(argv, environment)
            assert script is not None and script[0] == slot.interpreter, "a slot runs only its interpreter's scripts"
            read_end, write_end = os.pipe()
            try:
                self.pgid = slot.start(script[1], write_end, cwd, environment)
                with open(output_path, "ab") as log:
                    log.write(f"{WARM_START_LINE} (slot {slot.process.pid}, trainer {self.pgid})\n".encode())
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)
            self._output = os.fdopen(read_end, "rb")
            self._exit_code = lambda: slot.exit_code(self.pgid)
        else:
            try:
                process = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent if sys.platform == "linux" else None,
                )
            except FileNotFoundError:
                raise TrainerMissing(_why_missing(argv[0], environment)) from None
            assert process.stdout is not None
            self.pgid = process.pid
            self._output = process.stdout
            self._exit_code = process.poll
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        with self._output, open(self.output_path, "ab") as log:
            for raw in self._output:
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace").rstrip("\n")
                self._tail.append(line)
                if match := LOG_ROOT_PATTERN.search(line):
                    self._log_root = match["path"]
                elif match := RUN_NAME_PATTERN.search(line):
                    self._run_name = match["name"]

    @property
    def log_root(self) -> Path | None:
        """The root the trainer announced, relative paths taken from the trainer's cwd."""
        return self.cwd / self._log_root if self._log_root is not None else None

    @property
    def reported_log_dir(self) -> Path | None:
        """This trainer's own run folder, once it is known for certain; never the shared root.

        With a ``run_name`` of ours, it is the folder under the root that carries that name
        (Isaac Lab may add a suffix, as rsl_rl does with ``agent.run_name``). Without one, it
        is the root joined with the announced run name or path, once that line has come.
        """
        root = self.log_root
        if root is None:
            return None
        if self.run_name is not None:
            return run_folder(root, self.run_name)
        if self._run_name is None:
            return None
        if self._run_name.startswith(self._log_root):  # rl_games prints the whole run path
            return self.cwd / self._run_name
        return root / self._run_name

    def poll(self) -> int | None:
        """The exit code, once the trainer has exited and all its output has been read. What it left running in
        its process group (a simulator's helper) is ended then: it would hold the output open, and the trial is
        over when its trainer exits."""
        code = self._exit_code()
        if code is not None and self._reader.is_alive():
            self.stop()
        return code

    def tail(self) -> str:
        return "\n".join(self._tail)

    def stop(self, grace_s: float = 5.0) -> None:
        """End the trainer's whole process group, whatever state it is in, and whatever it started that left the
        group (a daemon in a session of its own): they all carry the trainer's mark."""
        end_process_group(self.pgid, grace_s, reap=self._exit_code)
        end_marked(TRIAL_MARK, self.mark, grace_s)
        deadline = time.monotonic() + grace_s
        while self._exit_code() is None and time.monotonic() < deadline:  # the slot reaps a warm trainer
            time.sleep(0.05)
        self._reader.join(timeout=5)
