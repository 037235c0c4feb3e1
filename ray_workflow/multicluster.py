"""Sending jobs to several Ray clusters at once with Ray's ``JobSubmissionClient``.

Job ``i`` goes to the ``i``-th cluster of the address file; one job goes to every
cluster (the check step of the original design document); with a queue, jobs beyond
the number of clusters go to whichever cluster is free first.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shlex
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ray.job_submission import JobStatus, JobSubmissionClient

from ray_workflow import PROJECT_ROOT, UPLOAD_EXCLUDES, auth
from ray_workflow.address_file import ClusterAddress, redact

TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
STATUS_POLL_S = 0.25


class SubmissionError(ValueError):
    """Jobs and clusters that cannot be paired; the message says why."""


@dataclass
class JobRun:
    """One job on one cluster, from submission to its final status."""

    cluster: ClusterAddress
    job: str
    job_id: str | None = None
    status: str = "PENDING"
    started: float | None = None
    ended: float | None = None
    error: str | None = None

    @property
    def cluster_name(self) -> str:
        return self.cluster.name or self.cluster.dashboard_url

    @property
    def duration_s(self) -> float | None:
        return None if self.started is None or self.ended is None else self.ended - self.started

    @property
    def failed(self) -> bool:
        return self.status != JobStatus.SUCCEEDED


@dataclass
class SubmitOptions:
    python: str = "python"
    working_dir: Path = PROJECT_ROOT
    env: dict[str, str] = field(default_factory=dict)
    queue: bool = False
    wait: bool = True
    connect_timeout_s: float = 10.0


def assign(jobs: list[str], clusters: list[ClusterAddress], use_queue: bool) -> tuple[list[list[str]], list[str]]:
    """Each cluster's first job, the jobs left for the queue, and nothing else.

    Returns (per-cluster job lists of length 0 or 1, queued jobs).
    """
    if not clusters:
        raise SubmissionError("the address file lists no clusters")
    if not jobs:
        raise SubmissionError("no job given")
    for job in jobs:
        try:
            if not shlex.split(job):
                raise SubmissionError("an empty job was given")
        except ValueError as error:
            raise SubmissionError(f"job {job!r}: {error}") from None
    if len(jobs) == 1:
        return [[jobs[0]] for _ in clusters], []
    if len(jobs) > len(clusters) and not use_queue:
        raise SubmissionError(
            f"{len(jobs)} jobs for {len(clusters)} clusters; start more clusters or pass --queue "
            "to run the extra jobs on whichever cluster is free first"
        )
    first = [[jobs[index]] if index < len(jobs) else [] for index in range(len(clusters))]
    return first, jobs[len(clusters) :]


def check_reachable(cluster: ClusterAddress, timeout_s: float) -> str | None:
    """None if the cluster's dashboard answers within ``timeout_s``, else why not."""
    try:
        request = urllib.request.Request(
            f"{cluster.dashboard_url}/api/version", headers=auth.http_headers(cluster.dashboard_url)
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            json.load(response)
        return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"cluster {cluster.name or '(unnamed)'} at {redact(cluster.dashboard_url)} is unreachable: {reason}"


class MultiClusterSubmitter:
    """Runs the plan: one thread a cluster, logs streamed with a ``[cluster]`` prefix."""

    def __init__(self, clusters: list[ClusterAddress], options: SubmitOptions, out: TextIO) -> None:
        self.clusters = clusters
        self.options = options
        self.out = out
        self.runs: list[JobRun] = []
        self._lock = threading.Lock()
        self._clients: dict[str, JobSubmissionClient] = {}

    def _print(self, prefix: str, text: str) -> None:
        with self._lock:
            for line in text.splitlines():
                self.out.write(f"[{prefix}] {line}\n")
            self.out.flush()

    def _entrypoint(self, job: str) -> str:
        return f"{shlex.quote(self.options.python)} {job}"

    def _runtime_env(self) -> dict:
        env = {"working_dir": str(self.options.working_dir), "excludes": UPLOAD_EXCLUDES}
        if self.options.env:
            env["env_vars"] = dict(self.options.env)
        return env

    def _run_one(self, client: JobSubmissionClient, run: JobRun) -> None:
        run.started = time.monotonic()
        run.job_id = client.submit_job(entrypoint=self._entrypoint(run.job), runtime_env=self._runtime_env())
        run.status = JobStatus.RUNNING
        self._print(run.cluster_name, f"submitted {run.job_id}: {self._entrypoint(run.job)}")
        if not self.options.wait:
            run.status = client.get_job_status(run.job_id).value
            return
        asyncio.run(self._follow(client, run))
        run.ended = time.monotonic()
        if run.status != JobStatus.SUCCEEDED:
            run.error = (client.get_job_info(run.job_id).message or "").strip() or None

    async def _follow(self, client: JobSubmissionClient, run: JobRun) -> None:
        """Stream the job's logs until its status is final, then print what the stream had not yet.

        Ray's log stream ends a second or two after the job; polling the status is what
        tells us the job is over, so the next queued job starts without that delay.
        """
        assert run.job_id is not None
        printed = 0

        async def stream() -> None:
            nonlocal printed
            async for chunk in client.tail_job_logs(run.job_id):
                self._print(run.cluster_name, chunk.rstrip("\n"))
                printed += len(chunk)

        streaming = asyncio.create_task(stream())
        while (status := await asyncio.to_thread(client.get_job_status, run.job_id)) not in TERMINAL:
            await asyncio.sleep(STATUS_POLL_S)
        streaming.cancel()
        rest = (await asyncio.to_thread(client.get_job_logs, run.job_id))[printed:]
        if rest.strip():
            self._print(run.cluster_name, rest.rstrip("\n"))
        run.status = status.value

    def _cluster_worker(self, cluster: ClusterAddress, first: list[str], shared: queue.Queue[str]) -> None:
        try:
            client = JobSubmissionClient(cluster.dashboard_url, headers=auth.http_headers(cluster.dashboard_url))
            self._clients[cluster.dashboard_url] = client
        except Exception as error:  # noqa: BLE001 - reported per cluster; the other clusters go on
            with self._lock:
                self.runs += [JobRun(cluster, job, status="UNREACHABLE", error=str(error)) for job in first]
            return
        pending = list(first)
        while True:
            if pending:
                job = pending.pop(0)
            elif self.options.queue:
                try:
                    job = shared.get_nowait()
                except queue.Empty:
                    return
            else:
                return
            run = JobRun(cluster, job)
            with self._lock:
                self.runs.append(run)
            try:
                self._run_one(client, run)
            except Exception as error:  # noqa: BLE001 - one failed submission must not stop the others
                run.status, run.error, run.ended = "SUBMIT_FAILED", str(error), time.monotonic()
                self._print(run.cluster_name, f"submission failed: {error}")

    def run(self, jobs: list[str]) -> list[JobRun]:
        first, extra = assign(jobs, self.clusters, self.options.queue)
        shared: queue.Queue[str] = queue.Queue()
        for job in extra:
            shared.put(job)
        threads = []
        busy = [
            (cluster, cluster_jobs) for cluster, cluster_jobs in zip(self.clusters, first, strict=True) if cluster_jobs
        ]
        # Every cluster is asked at once: silent ones cost one timeout in all and delay no live one.
        with ThreadPoolExecutor(max_workers=max(1, len(busy))) as pool:
            reasons = list(pool.map(lambda pair: check_reachable(pair[0], self.options.connect_timeout_s), busy))
        for (cluster, cluster_jobs), reason in zip(busy, reasons, strict=True):
            if reason:
                self._print(cluster.name or cluster.dashboard_url, reason)
                self.runs += [JobRun(cluster, job, status="UNREACHABLE", error=reason) for job in cluster_jobs]
                continue
            thread = threading.Thread(target=self._cluster_worker, args=(cluster, cluster_jobs, shared), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
        unassigned = list(shared.queue)
        if unassigned:
            self.runs += [
                JobRun(ClusterAddress("(none)", "-"), job, status="NOT_RUN", error="no reachable cluster took it")
                for job in unassigned
            ]
        return self.runs

    def stop_submitted(self) -> list[JobRun]:
        """Stop every job we submitted that has not ended (after Ctrl-C)."""
        stopped = []
        for run in self.runs:
            client = self._clients.get(run.cluster.dashboard_url)
            if run.job_id and client and run.status not in TERMINAL:
                try:
                    client.stop_job(run.job_id)
                except Exception:  # noqa: BLE001, S112 - the job may have ended meanwhile
                    continue
                run.status = JobStatus.STOPPED
                stopped.append(run)
        return stopped
