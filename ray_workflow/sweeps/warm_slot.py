"""Warm trainer slots: a helper that has imported what a trainer needs forks each trial's trainer from itself.

An Isaac Lab 3 trainer spends ~12 s importing torch, Isaac Lab, Newton and MuJoCo-Warp before its
first iteration, whatever the trial's length. A slot pays that once per trial actor: it runs in the
trainer's own interpreter (the one named by the command's ``#!`` line, such as ``.venv-isaaclab``'s),
imports ``imports`` (refusing to serve if they initialised CUDA: trainers on GPUs whose imports
do so start fresh), and then forks one child per trial that runs the very command line a fresh
process would (``runpy`` on the same script, the same ``sys.argv``, cwd and environment). Each
child is a process of its own: its own session and process group (stopped and killed as before),
death with the slot (which dies with the trial actor), its output on a pipe of the trial's, its
exit code reported back, and nothing it changes (torch or Warp settings, signal handlers) seen by
the next trial, which forks from the untouched slot. It ends as a fresh interpreter ends (threads joined,
``atexit`` handlers run, files flushed, the same exit status) but without tearing the interpreter down.

The slot never runs a torch operation: a child forked after torch's OpenMP pool has started would
deadlock in its first matrix multiply.

The two sides, apart below: the trial actor's (``WarmSlot``, in the Ray worker) and the slot's (``_serve``
and what follows, run as this file's ``__main__`` by the trainer's interpreter, which may lack Ray: that side
uses Python's standard library only). They talk over a Unix socket pair, one JSON object per line:

| from | message | when |
|---|---|---|
| slot | ``{"ready": seconds, "missing": ["module: why", ...]}`` | its imports are done; it serves |
| slot | ``{"unsafe": why}``, then it exits | its imports started CUDA: forking would be unsafe |
| actor | ``{"args": [...], "cwd": ..., "env": {...}}`` and the output fd (``SCM_RIGHTS``) | a trial starts |
| slot | ``{"started": pid}`` | the trainer runs, in a session and process group of its own (``pid``) |
| slot | ``{"exited": pid, "code": code}`` | a trainer ended; ``code`` as ``subprocess`` gives it (``-N``: signal N) |
| actor | end of stream (it closed its end) | the trial actor is done: the slot exits, its trainers with it |

Why not ``multiprocessing``'s forkserver: it forks processes that run a pickled function in the parent's own
interpreter, while a trainer must run in Isaac Lab's interpreter, as a script's ``__main__`` with that script's
``sys.argv`` and exit status, in its own session, writing to the trial's log; what it would leave to us is all
of this file but the fork. Linux only: ``fork``, ``prctl(PR_SET_PDEATHSIG)``, ``/proc/self`` and ``SCM_RIGHTS``.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import io
import json
import os
import runpy
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

READY_TIMEOUT_S = 300.0  # imports on a busy node, with a cold disk cache
# The slot's last argument: room in its command line for each trainer to show its own there (``ps``, psutil).
TITLE_ROOM = " " * 8192


class SlotUnavailable(RuntimeError):
    """The slot could not start or died; the trial runs as a fresh process instead."""


def script_of(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """The interpreter and the ``python``-style arguments that run ``argv`` (``[script, *args]`` or
    ``["-m", module, *args]``), if ``argv`` is a Python program a slot can start; None otherwise."""
    if not argv:
        return None
    program = shutil.which(argv[0], path=env.get("PATH", os.environ.get("PATH")))
    if program is None:
        return None
    if Path(program).name.startswith("python"):
        if len(argv) >= 3 and argv[1] == "-m":
            return program, list(argv[1:])
        if len(argv) >= 2 and argv[1].endswith(".py") and Path(argv[1]).is_file():
            return program, list(argv[1:])
        return None
    try:
        with open(program, "rb") as file:
            first = file.readline(4096).decode(errors="replace").strip()
    except OSError:
        return None
    interpreter = first.removeprefix("#!").strip()
    if not first.startswith("#!") or " " in interpreter or not Path(interpreter).name.startswith("python"):
        return None
    return interpreter, [program, *argv[1:]]


# -- The trial actor's side: in the Ray worker ---------------------------------------------------------------


class WarmSlot:
    """The trial actor's side of one slot: start it, start trainers from it, learn their exit codes."""

    def __init__(self, interpreter: str, imports: Sequence[str], cwd: str | None, env: Mapping[str, str]) -> None:
        """Start the slot with the environment and cwd a fresh trainer would get; it imports in the background
        (``ready``), so that a trial need not wait for it."""
        self.interpreter = interpreter
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.errors = tempfile.TemporaryFile()  # what the imports print; a pipe nobody reads could fill and block
        try:
            self.process = subprocess.Popen(
                [interpreter, __file__, str(theirs.fileno()), *imports, TITLE_ROOM],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=self.errors,
                stderr=subprocess.STDOUT,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as error:
            ours.close()
            self.errors.close()
            raise SlotUnavailable(f"cannot start {interpreter}: {error.strerror}") from None
        finally:
            theirs.close()
        self.connection = ours
        self.hung_up = False  # the slot closed its end: it has ended or is ending, whether or not it is reaped yet
        self.buffer = b""
        self.exit_codes: dict[int, int] = {}
        self.started_at = time.monotonic()
        self.import_s: float | None = None  # once ready: how long the imports took
        self.missing: list[str] = []  # once ready: the imports that failed, with why

    def ready(self, timeout_s: float = 0.0) -> bool:
        """Whether the slot has imported and can start trainers (waiting up to ``timeout_s``); a slot that
        cannot serve (its imports started CUDA, or it died) raises ``SlotUnavailable``."""
        if self.import_s is not None:
            return True
        message = self._receive(timeout_s)
        if message is None:
            importing = not self.hung_up and self.process.poll() is None
            if importing and time.monotonic() - self.started_at < READY_TIMEOUT_S:
                return False
            message = {}
        if "ready" not in message:
            why = message.get("unsafe") or self._stderr_tail() or self._why_silent()
            self.close()
            raise SlotUnavailable(f"the warm slot ({self.interpreter}) cannot serve trials: {why}")
        self.import_s = message["ready"]
        self.missing = message.get("missing", [])
        return True

    def start(self, python_args: Sequence[str], output_fd: int, cwd: str | None, env: Mapping[str, str]) -> int:
        """Fork a trainer running ``interpreter *python_args``, its output on ``output_fd``; returns its pid
        (which is also its process group). Waits for the slot's imports if need be."""
        self.ready(READY_TIMEOUT_S)
        request = json.dumps({"args": list(python_args), "cwd": cwd or os.getcwd(), "env": dict(env)}).encode()
        try:
            socket.send_fds(self.connection, [request + b"\n"], [output_fd])
        except OSError as error:
            raise SlotUnavailable(f"the warm slot is gone: {error.strerror}") from None
        while True:
            message = self._receive(READY_TIMEOUT_S)
            if message is None:
                raise SlotUnavailable(f"the warm slot is gone: {self._stderr_tail()}")
            if "started" in message:
                return message["started"]

    def exit_code(self, pid: int) -> int | None:
        """The trainer's exit code once it has ended (a signal's as ``-N``, as subprocess gives it)."""
        while pid not in self.exit_codes:
            if self._receive(0.0) is None:
                if self.hung_up or self.process.poll() is not None:
                    return -signal.SIGKILL  # the slot is gone, and its children died with it
                return None
        return self.exit_codes[pid]

    def _receive(self, timeout_s: float) -> dict | None:
        """One message from the slot (exit reports are kept on the way); None on timeout or end."""
        deadline = time.monotonic() + timeout_s
        while True:
            line, newline, rest = self.buffer.partition(b"\n")
            if newline:
                self.buffer = rest
                message = json.loads(line)
                if "exited" in message:
                    self.exit_codes[message["exited"]] = message["code"]
                return message
            remaining = deadline - time.monotonic()
            if (remaining < 0 and timeout_s > 0) or self.connection.fileno() < 0:  # timed out, or closed
                return None
            self.connection.settimeout(max(remaining, 0.0) if timeout_s > 0 else 0.0)
            try:
                chunk = self.connection.recv(65536)
            except OSError:  # timed out (TimeoutError, BlockingIOError are OSErrors), or the slot is gone
                return None
            if not chunk:
                self.hung_up = True
                return None
            self.buffer += chunk

    def _why_silent(self) -> str:
        """Why the slot never said it was ready: how it ended, once it has (a slot that hung up is reaped within
        a moment), else the time it was given."""
        if self.hung_up:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        code = self.process.poll()
        if code is None:
            return f"no answer within {READY_TIMEOUT_S:g} s"
        return f"it exited with code {code}" if code >= 0 else f"it was killed by signal {-code}"

    def _stderr_tail(self) -> str:
        self.errors.seek(0)
        return " ".join(self.errors.read().decode(errors="replace").strip().splitlines()[-3:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """End the slot; trainers still running die with it."""
        self.connection.close()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        self.errors.close()


# -- Both sides: the actor starts the slot with it, the slot its trainers ------------------------------------


def die_with_parent() -> None:
    """In a child: SIGKILL when the process that started it dies, so that nothing is orphaned."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# -- The slot's side: in the trainer's interpreter, standard library only -------------------------------------


def _serve(connection: socket.socket, imports: Sequence[str]) -> dict:
    """The slot: import, then fork a trainer per request. Returns only in a trainer, with its request."""
    started = time.monotonic()
    missing = _import_deferring_warps_runtime(imports)
    if reason := _cuda_started():
        _send(connection, {"unsafe": reason})
        os._exit(0)
    # Children share the imported objects' pages until they write them; a collection walking them would copy
    # every page into every child. Frozen, they stay out of collections (and of a trainer's file flush at exit).
    gc.freeze()
    _send(connection, {"ready": round(time.monotonic() - started, 3), "missing": missing})
    sys.stdout.flush()
    sys.stderr.flush()
    children: set[int] = set()
    events = selectors.DefaultSelector()
    events.register(connection, selectors.EVENT_READ)
    buffer = b""
    fds: list[int] = []
    while True:
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                _send(connection, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})
        if not events.select(timeout=0.05):
            continue
        data, received, _, _ = socket.recv_fds(connection, 1 << 20, 4)
        if not data:  # the trial actor closed the slot
            os._exit(0)
        buffer += data
        fds += received
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request, output_fd = json.loads(line), fds.pop(0)
            pid = os.fork()
            if pid == 0:
                events.close()
                connection.close()
                return {**request, "output_fd": output_fd}
            os.close(output_fd)
            children.add(pid)
            _send(connection, {"started": pid})


def _import_deferring_warps_runtime(imports: Sequence[str]) -> list[str]:
    """Import ``imports``; the ones that failed, with why. While they import, ``warp.init()`` does nothing:
    Isaac Lab calls it on import, and on a GPU node it opens the CUDA driver, which a forked trainer could
    not use. Warp starts its runtime on first use, so each trainer starts its own (about 35 ms)."""
    missing = []
    warp = None
    if "warp" in imports:
        try:
            warp = importlib.import_module("warp")
        except Exception:  # reported below, with the other imports
            pass
    real_init = getattr(warp, "init", None)
    if real_init is not None:
        warp.init = lambda: None
    try:
        for module in imports:
            try:
                importlib.import_module(module)
            except Exception as error:  # a module that will not import only makes the slot less warm
                missing.append(f"{module}: {type(error).__name__}: {error}")
    finally:
        if real_init is not None:
            warp.init = real_init
    return missing


def _cuda_started() -> str | None:
    """Why forking is unsafe after the imports: a child cannot use a CUDA driver its parent loaded."""
    with open("/proc/self/maps") as maps:
        if "/libcuda.so" in maps.read():
            return "the imports loaded the CUDA driver (libcuda.so)"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "the imports initialised CUDA in torch"
    warp_context = sys.modules.get("warp._src.context") or sys.modules.get("warp.context")
    if getattr(getattr(warp_context, "runtime", None), "cuda_devices", None):
        return "the imports initialised Warp on CUDA devices"
    return None


def _send(connection: socket.socket, message: dict) -> None:
    connection.sendall(json.dumps(message).encode() + b"\n")


def _become_trainer(request: dict, slot_pid: int) -> None:
    """In the forked child: become what ``python *args`` would be, then run it as ``__main__``."""
    os.setsid()
    die_with_parent()
    if os.getppid() != slot_pid:  # the slot died before the line above
        os._exit(1)
    output = request["output_fd"]
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    args = request["args"]
    _show_as([sys.executable, *args])
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            script = os.path.abspath(args[0])
            sys.argv = [args[0], *args[1:]]
            sys.path[0] = os.path.dirname(script)
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        _end_as_python_would(_exit_status(exit.code))
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        _end_as_python_would(-signal.SIGINT)
    except BaseException:  # an uncaught exception ends a fresh interpreter too, with its traceback
        sys.excepthook(*sys.exc_info())
        _end_as_python_would(1)
    _end_as_python_would(0)


def _exit_status(code: object) -> int:
    """The exit status ``SystemExit(code)`` gives a fresh interpreter (a message goes to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _end_as_python_would(status: int) -> None:
    """End the trainer as a fresh interpreter ends, less its teardown: join its threads, run its ``atexit``
    handlers, flush every file it left open, exit. Tearing down the interpreter (freeing every module and
    object Isaac Lab, Newton and torch made) takes ~4 s after the last iteration and writes nothing, and a
    finished trial waits for its trainer to end. A negative status is a signal, as a fresh interpreter
    ends on an uncaught ``KeyboardInterrupt``."""
    threading._shutdown()  # what the interpreter does first at exit: wait for non-daemon threads
    atexit._run_exitfuncs()
    for thing in gc.get_objects():  # only the trainer's: the slot froze its own objects (gc.freeze) before forking
        if isinstance(thing, io.IOBase):
            try:
                if not thing.closed:
                    thing.flush()
            except (OSError, ValueError):
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


def _show_as(argv: Sequence[str]) -> None:
    """Show ``argv`` as this process's command line, as a fresh trainer's would be: the kernel reads it from the
    memory the slot's own command line took (``TITLE_ROOM`` long), which the process may overwrite."""
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end, fields 48 and 49 of proc(5)
        text = "\0".join(argv).encode()[: end - start - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            memory.write(text + b"\0" * (end - start - len(text)))
    except (OSError, ValueError, IndexError):
        pass  # ps shows the slot's command line; nothing else depends on it


if __name__ == "__main__":
    _slot = socket.socket(fileno=int(sys.argv[1]))
    _slot_pid = os.getpid()
    _trainer = _serve(_slot, sys.argv[2:-1])
    # Only a forked trainer gets here; it ends with the exit status the program it runs gives.
    del _slot
    _become_trainer(_trainer, _slot_pid)
