"""Daemons the test harnesses start (SLURM's, Kubernetes'): each in a process group of its own with its output in
a log file, waited for by a condition (never by time), and ended by its group, never by name. The benchmarks use
them through the harnesses."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_workflow.process_groups import end_process_group


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Daemons:
    """The processes one harness started, their logs in ``log_dir``; ``stop`` ends them, the last started first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` (as ``user`` if given) in a session of its own, its output in ``<name>.log``."""
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "wb") as output:
            self.processes[name] = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        return self.processes[name]

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}")

    def wait(self, what: str, ready: Callable[[], Any], timeout_s: float = 120.0, poll_s: float = 0.5) -> Any:
        """``ready()``'s first true value; a daemon that exits meanwhile, or the timeout, fails naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            if result := ready():
                return result
            if time.monotonic() > deadline:
                logs = "\n".join(f"== {name}\n{self.log(name)[-1500:]}" for name in self.processes)
                raise TimeoutError(f"{what} not ready after {timeout_s:g} s (logs in {self.log_dir}):\n{logs}")
            time.sleep(poll_s)

    def end(self, name: str, grace_s: float = 5.0) -> None:
        """End ``name``'s process group, if it was started."""
        process = self.processes.pop(name, None)
        if process is not None:
            end_process_group(process.pid, grace_s, reap=process.poll)
            process.wait(timeout=30)

    def stop(self, grace_s: float = 5.0) -> None:
        for name in reversed(list(self.processes)):
            self.end(name, grace_s)


def lose_head(head: Any) -> None:
    """A local cluster's head (a ``LocalCluster``) lost as its machine would be: its processes, and the drivers of
    its running jobs (Ray starts each in a session of its own, so they would outlive a killed group), end at once.
    The drivers are the ones the cluster's job list names, by pid."""
    import signal

    from ray.job_submission import JobStatus, JobSubmissionClient

    from ray_workflow import auth

    client = JobSubmissionClient(head.dashboard_url, headers=auth.http_headers(head.dashboard_url))
    jobs = client.list_jobs()
    drivers = [int(job.driver_info.pid) for job in jobs if job.status == JobStatus.RUNNING and job.driver_info]
    os.killpg(head.pgid, signal.SIGKILL)
    for pid in drivers:
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:  # it ended with the head
            continue
        if group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
