"""Ending the process groups we started, and only those: never by name, never with ``ray stop``."""

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
