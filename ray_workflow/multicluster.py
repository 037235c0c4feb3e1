"""Sending jobs to several Ray clusters at once with Ray's ``JobSubmissionClient``.

Job ``i`` goes to the ``i``-th cluster of the address file; one job goes to every
cluster (the check step of the original design document); with a queue, jobs beyond
the number of clusters go to whichever cluster is free first.

One asyncio event loop drives every cluster, a coroutine each; the SDK's blocking calls run
in asyncio's thread pool (``asyncio.to_thread``) and its log stream is a coroutine already.
Progress (each job's log lines with a ``[cluster]`` prefix) goes to this module's logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from ray_workflow import CLUSTER_VARIABLE, PROJECT_ROOT, address_file, auth, code_upload, hosts
from ray_workflow.address_file import ClusterAddress, redact
from ray_workflow.connection import drop_address_overrides
from ray_workflow.errors import UserError, WorkflowError, setting

logger = logging.getLogger(__name__)
STATUS_POLL_S = 0.25
LOST_SETTLE_S = 30.0  # how long a host may take to see that a cluster which stopped answering has ended
ANSWER_POLL_S = 2.0  # how often a lost cluster is asked whether it answers again


class RunStatus(str, Enum):
    """Where a job stands: Ray's job statuses, and ours for jobs that never reached a cluster."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    UNREACHABLE = "UNREACHABLE"
    TOKEN_REFUSED = "TOKEN_REFUSED"
    CLUSTER_LOST = "CLUSTER_LOST"
    SUBMIT_FAILED = "SUBMIT_FAILED"
    NOT_RUN = "NOT_RUN"

    @classmethod
    def of(cls, status: JobStatus) -> RunStatus:
        return cls(status.value)

    @property
    def final(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)

    def __str__(self) -> str:
        return self.value


class SubmissionError(UserError, ValueError):
    """Jobs and clusters that cannot be paired; the message says why."""


@dataclass(kw_only=True)
class JobRun:
    """One job on one cluster, from submission to its final status."""

    cluster: ClusterAddress
    job: str
    job_id: str | None = None
    status: RunStatus = RunStatus.PENDING
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    attempt: int = 1
    resubmitted: bool = False  # lost with its cluster, and sent again once the cluster answered

    @property
    def cluster_name(self) -> str:
        return self.cluster.name or self.cluster.dashboard_url

    @property
    def duration_s(self) -> float | None:
        return None if self.started is None or self.ended is None else self.ended - self.started

    @property
    def failed(self) -> bool:
        return self.status != RunStatus.SUCCEEDED and not self.resubmitted


@dataclass(frozen=True, kw_only=True)
class SubmitOptions:
    python: str = "python"
    working_dir: Path = PROJECT_ROOT
    env: dict[str, str] = field(default_factory=dict)
    queue: bool = False
    wait: bool = True
    connect_timeout_s: float = 10.0
    resubmit: int = 0  # times a job lost with its cluster is sent again once the cluster answers
    resubmit_wait_s: float = 1800.0  # how long a lost cluster is waited for, each time
    address_file: Path | None = None  # where a cluster started again has its new address


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Which job each cluster starts with, which jobs wait for a free cluster, which clusters get none."""

    first: list[tuple[ClusterAddress, str]]
    queued: list[str]
    idle: list[ClusterAddress]


def assign(jobs: list[str], clusters: list[ClusterAddress], use_queue: bool) -> Plan:
    """Job ``i`` to cluster ``i``; one job to every cluster; jobs beyond the clusters queued only if asked."""
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
        return Plan(first=[(cluster, jobs[0]) for cluster in clusters], queued=[], idle=[])
    if len(jobs) > len(clusters) and not use_queue:
        raise SubmissionError(
            f"{len(jobs)} jobs for {len(clusters)} clusters; start more clusters or pass {setting('queue')} "
            "to run the extra jobs on whichever cluster is free first"
        )
    return Plan(
        first=list(zip(clusters, jobs, strict=False)),
        queued=jobs[len(clusters) :],
        idle=clusters[len(jobs) :],
    )


def why_not_ready(cluster: ClusterAddress, timeout_s: float) -> tuple[RunStatus, str] | None:
    """None if the cluster's dashboard answers within ``timeout_s`` and takes our token, else why not:
    ``UNREACHABLE``, or ``TOKEN_REFUSED`` naming the token file (or variable) we sent or looked in."""
    where = f"cluster {cluster.name or '(unnamed)'} at {redact(cluster.dashboard_url)}"
    try:
        request = urllib.request.Request(
            f"{cluster.dashboard_url}/api/version", headers=auth.http_headers(cluster.dashboard_url)
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            json.load(response)
        return None
    except auth.TokenError as error:
        return RunStatus.TOKEN_REFUSED, f"{where}: {error}"
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return RunStatus.TOKEN_REFUSED, auth.refusal(where, cluster.dashboard_url, error.code)
        return RunStatus.UNREACHABLE, f"{where} is unreachable: HTTP {error.code} {error.reason}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return RunStatus.UNREACHABLE, f"{where} is unreachable: {getattr(error, 'reason', error)}"


def why_ended(cluster: ClusterAddress, settle_s: float = 0.0) -> str | None:
    """The host's own word on a cluster that does not answer (``SLURM TIMEOUT (...)``), when the address block says
    where it runs and the host knows it has ended; else None. ``settle_s`` gives a host that has not yet noticed (a
    job being killed stays RUNNING a moment after its nodes stop answering) that long to."""
    host = hosts.from_record(cluster.host) if cluster.host is not None and cluster.name else None
    deadline = time.monotonic() + settle_s
    while host is not None:
        try:
            if why := host.why_ended(cluster.name):
                return why
        except WorkflowError:  # the host cannot be asked either (kubectl or SLURM's commands failing)
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(1.0)
    return None


class MultiClusterSubmitter:
    """Runs a plan: every cluster at once, each job's logs streamed with a ``[cluster]`` prefix."""

    def __init__(self, options: SubmitOptions) -> None:
        self.options = options
        self.runs: list[JobRun] = []
        self._clients: dict[str, JobSubmissionClient] = {}

    def run(self, plan: Plan) -> list[JobRun]:
        """Every job's run, in the order they started; after Ctrl-C, ``stop_submitted`` stops what still runs."""
        drop_address_overrides()
        return asyncio.run(self._run(plan))

    @staticmethod
    def _say(prefix: str, text: str) -> None:
        for line in text.splitlines():
            logger.info("[%s] %s", prefix, line)

    def _entrypoint(self, job: str) -> str:
        return f"{shlex.quote(self.options.python)} {job}"

    def _runtime_env(self, cluster: ClusterAddress) -> dict:
        env = code_upload(self.options.working_dir)
        env["env_vars"] = {**({CLUSTER_VARIABLE: cluster.name} if cluster.name else {}), **self.options.env}
        return env

    async def _run(self, plan: Plan) -> list[JobRun]:
        queued: asyncio.Queue[str] = asyncio.Queue()
        for job in plan.queued:
            queued.put_nowait(job)
        # Every cluster goes its own way at once: a silent one costs one timeout and delays no live one.
        await asyncio.gather(*(self._cluster(cluster, job, queued) for cluster, job in plan.first))
        while not queued.empty():
            self.runs.append(
                JobRun(
                    cluster=ClusterAddress("(none)", "-"),
                    job=queued.get_nowait(),
                    status=RunStatus.NOT_RUN,
                    error="no reachable cluster took it",
                )
            )
        return self.runs

    async def _cluster(self, cluster: ClusterAddress, job: str, queued: asyncio.Queue[str]) -> None:
        """One cluster's jobs, once it answers: its first, then (with a queue) whatever is left when it is free; a
        job lost with its cluster is sent again when the cluster answers again, up to ``resubmit`` times."""
        if problem := await asyncio.to_thread(why_not_ready, cluster, self.options.connect_timeout_s):
            status, reason = problem
            if status == RunStatus.UNREACHABLE and (why := await asyncio.to_thread(why_ended, cluster)):
                status, reason = RunStatus.CLUSTER_LOST, f"cluster {cluster.name} has ended: {why}"
            self._say(cluster.name or cluster.dashboard_url, reason)
            self.runs.append(JobRun(cluster=cluster, job=job, status=status, error=reason))
            return
        next_job: str | None = job
        attempt = 1
        while next_job is not None:
            # One client per cluster: a queue's jobs share it.
            if (client := self._clients.get(cluster.dashboard_url)) is None:
                try:
                    client = await asyncio.to_thread(
                        JobSubmissionClient, cluster.dashboard_url, headers=auth.http_headers(cluster.dashboard_url)
                    )
                except Exception as error:  # reported per cluster; the other clusters go on
                    failed = JobRun(cluster=cluster, job=next_job, status=RunStatus.UNREACHABLE, error=str(error))
                    self.runs.append(failed)
                    return
                self._clients[cluster.dashboard_url] = client
            run = JobRun(cluster=cluster, job=next_job, attempt=attempt)
            self.runs.append(run)
            try:
                await self._run_one(client, run)
            except Exception as error:  # one failed job must not stop the others
                run.ended = time.monotonic()
                if run.job_id is None:
                    run.status, run.error = RunStatus.SUBMIT_FAILED, str(error)
                    self._say(run.cluster_name, f"submission failed: {error}")
                else:
                    # Submitted, then the cluster stopped answering: it ended (a SLURM time limit, say) or was lost.
                    why = await asyncio.to_thread(why_ended, cluster, LOST_SETTLE_S)
                    run.status = RunStatus.CLUSTER_LOST
                    run.error = f"cluster {run.cluster_name} ended: {why or f'it stopped answering ({error})'}"
                    self._say(run.cluster_name, run.error)
                    if attempt > self.options.resubmit or not (back := await self._answering_again(run)):
                        return
                    del self._clients[cluster.dashboard_url]  # started again: perhaps the same address, a new token
                    cluster, run.resubmitted, attempt = back, True, attempt + 1
                    continue
            attempt = 1
            next_job = queued.get_nowait() if self.options.queue and not queued.empty() else None

    async def _answering_again(self, run: JobRun) -> ClusterAddress | None:
        """The lost cluster, once it answers again (started again under its name: its new address from the address
        file), or None after ``resubmit_wait_s``."""
        name = run.cluster_name
        self._say(name, f"waiting up to {self.options.resubmit_wait_s:g} s for {name} to answer again, to send "
                        f"the job again (try {run.attempt + 1} of {self.options.resubmit + 1})")  # fmt: skip
        deadline = time.monotonic() + self.options.resubmit_wait_s
        while time.monotonic() < deadline:
            candidate = await asyncio.to_thread(self._listed_as, run.cluster)
            if not await asyncio.to_thread(why_not_ready, candidate, self.options.connect_timeout_s):
                return candidate
            await asyncio.sleep(ANSWER_POLL_S)
        self._say(name, f"{name} did not answer again within {self.options.resubmit_wait_s:g} s")
        return None

    def _listed_as(self, cluster: ClusterAddress) -> ClusterAddress:
        """The address file's block for the cluster (its name on its host) now, or the cluster as it was."""
        if self.options.address_file is None or not cluster.name:
            return cluster
        try:
            blocks = address_file.read(self.options.address_file)
        except (WorkflowError, OSError):  # being rewritten, or gone for a moment
            return cluster
        return next((block for block in blocks if (block.name, block.host) == (cluster.name, cluster.host)), cluster)

    async def _run_one(self, client: JobSubmissionClient, run: JobRun) -> None:
        run.started = time.monotonic()
        run.job_id = await asyncio.to_thread(
            client.submit_job, entrypoint=self._entrypoint(run.job), runtime_env=self._runtime_env(run.cluster)
        )
        run.status = RunStatus.RUNNING
        self._say(run.cluster_name, f"submitted {run.job_id}: {self._entrypoint(run.job)}")
        if not self.options.wait:
            run.status = RunStatus.of(await asyncio.to_thread(client.get_job_status, run.job_id))
            return
        await self._follow(client, run)
        run.ended = time.monotonic()
        if run.status != RunStatus.SUCCEEDED:
            info = await asyncio.to_thread(client.get_job_info, run.job_id)
            run.error = (info.message or "").strip() or None

    async def _follow(self, client: JobSubmissionClient, run: JobRun) -> None:
        """Stream the job's logs until its status is final, then say what the stream had not yet.

        Ray's log stream ends a second or two after the job; polling the status is what
        tells us the job is over, so the next queued job starts without that delay.
        """
        assert run.job_id is not None
        printed = 0

        async def stream() -> None:
            nonlocal printed
            async for chunk in client.tail_job_logs(run.job_id):
                self._say(run.cluster_name, chunk.rstrip("\n"))
                printed += len(chunk)

        streaming = asyncio.create_task(stream())
        try:
            while not (status := RunStatus.of(await asyncio.to_thread(client.get_job_status, run.job_id))).final:
                await asyncio.sleep(STATUS_POLL_S)
        finally:
            # The stream dies with its cluster too: its end is awaited here, never left for asyncio to report.
            streaming.cancel()
            with contextlib.suppress(BaseException):
                await streaming
        rest = (await asyncio.to_thread(client.get_job_logs, run.job_id))[printed:]
        if rest.strip():
            self._say(run.cluster_name, rest.rstrip("\n"))
        run.status = status

    def stop_submitted(self) -> list[JobRun]:
        """Stop every job we submitted that has not ended (after Ctrl-C)."""
        stopped = []
        for run in self.runs:
            client = self._clients.get(run.cluster.dashboard_url)
            if run.job_id and client and not run.status.final:
                try:
                    client.stop_job(run.job_id)
                except Exception:  # the job may have ended meanwhile
                    continue
                run.status = RunStatus.STOPPED
                stopped.append(run)
        return stopped
