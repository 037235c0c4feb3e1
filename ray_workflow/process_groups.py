"""Ending the process groups we started, and only those: never by name, never with ``ray stop``. What leaves its
group (a daemon that double-forks into a session of its own) is found by a mark in the environment that every
descendant inherits, and ended too."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil


def live_members(pgid: int) -> list[psutil.Process]:
    """Processes of the group that are still running (zombies waiting to be reaped do not count)."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def _signal(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def end_process_group(pgid: int, grace_s: float = 5.0, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM the group, then SIGKILL what is left after ``grace_s``.

    ``reap`` is called while waiting, so that a leader which is our own child does not
    linger as a zombie.
    """
    _signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not live_members(pgid):
            return
        time.sleep(0.1)
    _signal(pgid, signal.SIGKILL)


def marked(variable: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment holds ``variable=value`` (ours to read: the user's own processes)."""
    found = []
    for process in psutil.process_iter(["status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and process.environ().get(variable) == value:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def end_marked(variable: str, value: str, grace_s: float = 5.0) -> None:
    """SIGTERM every live process marked ``variable=value``, then SIGKILL what is left after ``grace_s``."""
    survivors = marked(variable, value)
    for process in survivors:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(survivors, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
