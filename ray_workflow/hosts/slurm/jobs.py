"""Our SLURM clusters as SLURM sees them: submitting, waiting until every node has joined, cancelling, and
SLURM's own word on why a cluster ended.

A cluster is one job named after the cluster whose comment holds our marker, so ``squeue`` shows users what
it is and ``cancel`` never touches a job that is not ours. What we keep for a cluster (its record with the job
id, its script, its token, its head's address) lives in ``state_dir`` (``script.ClusterFiles``). The token is
the user's Ray token (``auth.user_token``), copied there so that nodes read it from a file of the cluster's
own, or with ``own_token`` a new one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ray_workflow import auth, cache_dir, ray_ports
from ray_workflow.address_file import ClusterAddress, HostRecord
from ray_workflow.errors import WorldError, setting
from ray_workflow.files import atomic_write_text
from ray_workflow.hosts import NotReady
from ray_workflow.hosts.slurm.script import JOB_LABEL, MARKER, ClusterFiles, SlurmClusterSpec, SlurmInputError

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = cache_dir("slurm")
PROGRESS_EVERY_S = 30.0  # a long wait in the queue says so at this pace
ALIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")


class SlurmError(WorldError, RuntimeError):
    """SLURM refused, or a cluster's job ended or never became ready; the message names the cluster and job."""


class SlurmRefused(SlurmError):
    """One of SLURM's commands exited non-zero; the message ends with its own last line."""


@dataclass(frozen=True, kw_only=True)
class SlurmJob:
    """One of our clusters as SLURM sees it: ``state`` is SLURM's job state (PENDING, RUNNING, TIMEOUT, ...)."""

    job_id: str
    name: str
    state: str
    nodes: str = ""
    reason: str = ""

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES

    @property
    def why(self) -> str:
        """SLURM's reason for the state, in words."""
        return "its time limit was reached" if self.state == "TIMEOUT" else f"reason {self.reason or 'none given'}"


def _run(command: list[str], what: str, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
        )
    except FileNotFoundError:
        raise SlurmError(f"{command[0]} not found: run this on a machine where SLURM's commands work") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise SlurmRefused(f"{what}: {command[0]} failed: {message[-1] if message else f'exit {result.returncode}'}")
    return result.stdout


def our_jobs() -> list[SlurmJob]:
    """The user's queued and running jobs that are our clusters (our marker as their comment)."""
    listing = _run(["squeue", "--me", "--noheader", "--format=%i|%j|%k|%T|%N|%r"], "listing our jobs")
    jobs = []
    for line in listing.splitlines():
        fields = line.split("|")
        if len(fields) != 6:
            continue
        job_id, job_name, comment, state, nodes, reason = (field.strip() for field in fields)
        if comment == MARKER:
            jobs.append(SlurmJob(job_id=job_id, name=job_name, state=state, nodes=nodes, reason=reason))
    return jobs


def job_state(job_id: str, name: str) -> SlurmJob:
    """A job's state also after it ended (SLURM keeps ended jobs for MinJobAge, 300 s by default)."""
    result = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, check=False
    )
    fields = dict(re.findall(r"(\w+)=(\S*)", result.stdout)) if result.returncode == 0 else {}
    if fields.get("JobName") != name:  # ended too long ago, or the id now belongs to another job
        return SlurmJob(job_id=job_id, name=name, state="ENDED", reason="SLURM no longer knows this job")
    return SlurmJob(
        job_id=job_id,
        name=name,
        state=fields.get("JobState", "ENDED"),
        nodes=fields.get("NodeList", ""),
        reason=fields.get("Reason", ""),
    )


def _record(files: ClusterFiles) -> dict | None:
    try:
        record = json.loads(files.record.read_text())
        return record if isinstance(record, dict) and isinstance(record.get("job_id"), str) else None
    except (OSError, ValueError):
        return None


# What ``sbatch --test-only`` says when a request cannot be met, and the settings that make the request.
_REFUSALS = {
    "node configuration is not available": ("num_workers", "cpus_per_node", "gpus_per_node", "mem_gb_per_node"),
    "generic resource": ("gres", "gpus_per_node"),
    "gres": ("gres", "gpus_per_node"),
    "partition": ("partition",),
    "account": ("account",),
    "time limit": ("time_limit",),
    "node count": ("num_workers",),
    "memory": ("mem_gb_per_node",),
    "processors": ("cpus_per_node",),
}


def check(scripts: list[tuple[SlurmClusterSpec, str]]) -> None:
    """``sbatch --test-only`` on each cluster's batch script: SLURM says whether it could schedule it (partition,
    account, time limit, nodes, GRES) without queueing anything; a refusal names the settings that asked for it."""
    for spec, script in scripts:
        try:
            _run(["sbatch", "--test-only"], f"cluster {spec.name!r} cannot be scheduled", stdin=script)
        except SlurmRefused as error:
            said = str(error).lower()
            fields = next((fields for words, fields in _REFUSALS.items() if words in said), ())
            given = [field for field in fields if getattr(spec, field) not in (None, 0)] or list(fields[:1])
            hint = f" (check {', '.join(setting(field) for field in given)})" if given else ""
            raise SlurmInputError(f"{error}{hint}") from None


def submit(scripts: list[tuple[SlurmClusterSpec, str]], state_dir: Path, log_dir: Path) -> list[SlurmJob]:
    """Submit one job per cluster (its spec and the batch script ``render`` made), or none: if a later submission
    fails, the jobs already submitted are cancelled."""
    specs = [spec for spec, _ in scripts]
    names = {spec.name for spec in specs}
    if clashing := [job for job in our_jobs() if job.name in names]:
        raise SlurmInputError(
            f"{setting('name')}: cluster {clashing[0].name!r} already runs as SLURM job {clashing[0].job_id}; "
            f"end it with {setting('down')} or choose another {setting('name')}"
        )
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_dir.mkdir(parents=True, exist_ok=True)
    submitted: list[SlurmJob] = []
    try:
        for spec, script in scripts:
            atomic_write_text(ClusterFiles(state_dir=state_dir, name=spec.name).script, script)
        # The user's token is read (or made) once, after sbatch has accepted every script and before the first job.
        user_token = auth.user_token().value if any(s.token_auth and not s.own_token for s in specs) else None
        for spec, _ in scripts:
            files = ClusterFiles(state_dir=state_dir, name=spec.name)
            files.head.unlink(missing_ok=True)
            files.failure.unlink(missing_ok=True)
            if spec.token_auth:
                auth.write_private(files.token, auth.new_token() if spec.own_token else user_token)
            job_id = _run(["sbatch", "--parsable", str(files.script)], f"submitting cluster {spec.name!r}")
            job = SlurmJob(job_id=job_id.strip().split(";")[0], name=spec.name, state="PENDING")
            submitted.append(job)
            record = {"job_id": job.job_id, "spec": dataclasses.asdict(spec), "log": _log_file(log_dir, job)}
            atomic_write_text(files.record, json.dumps(record, indent=2))
    except BaseException:
        if submitted:
            subprocess.run(["scancel", *[job.job_id for job in submitted]], check=False)
        for spec, _ in scripts:
            ClusterFiles(state_dir=state_dir, name=spec.name).remove()
        raise
    return submitted


def _log_file(log_dir: Path, job: SlurmJob) -> str:
    return str(log_dir.resolve() / f"{job.name}-{job.job_id}.out")


def _addresses(head_ip: str, base_port: int) -> list[str]:
    """A cluster's GCS address and dashboard URL, the two addresses its token is kept under."""
    return [
        f"{head_ip}:{base_port + ray_ports.offset('gcs')}",
        f"http://{head_ip}:{base_port + ray_ports.offset('dashboard')}",
    ]


def _alive_nodes(dashboard: str, token: str | None, job_id: str) -> int:
    """The alive Ray nodes at ``dashboard`` that job ``job_id`` started (another cluster's count for nothing)."""
    request = urllib.request.Request(f"{dashboard}/api/v0/nodes?limit=10000", headers=auth.bearer_headers(token))
    with urllib.request.urlopen(request, timeout=5) as response:
        nodes = json.load(response)["data"]["result"]["result"]
    return sum(node.get("state") == "ALIVE" and (node.get("labels") or {}).get(JOB_LABEL) == job_id for node in nodes)


def gcs_address(job: SlurmJob, state_dir: Path) -> str | None:
    """The GCS address of the cluster's head, once the batch script has written it."""
    head = _head(ClusterFiles(state_dir=state_dir, name=job.name))
    return _addresses(head[1], head[2])[0] if head and head[0] == job.job_id else None


def _head(files: ClusterFiles) -> tuple[str, str, int] | None:
    """The job id, head IP and base port the batch script wrote once its head answered."""
    try:
        job_id, head_ip, base_port = files.head.read_text().split()
        return job_id, head_ip, int(base_port)
    except (OSError, ValueError):
        return None


def _ready_address(job: SlurmJob, state_dir: Path) -> ClusterAddress | None:
    """The cluster's address once its head answers with every node alive; its token is kept for our clients."""
    files = ClusterFiles(state_dir=state_dir, name=job.name)
    record = _record(files)
    head = _head(files)
    if record is None or head is None or head[0] != job.job_id or record["job_id"] != job.job_id:
        return None
    spec = record["spec"]
    addresses = _addresses(head[1], head[2])
    dashboard = addresses[1]
    try:
        token = files.token.read_text().strip() if spec["token_auth"] else None
        alive = _alive_nodes(dashboard, token, job.job_id)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if alive < 1 + int(spec["num_workers"]):
        return None
    if token:
        auth.save_token(addresses, token)
    return ClusterAddress(job.name, dashboard, host_record(state_dir), gcs_address=addresses[0])


def host_record(state_dir: Path) -> HostRecord:
    """How an address block names our SLURM clusters recorded in ``state_dir``."""
    return HostRecord.of("slurm", state_dir=str(state_dir))


def why_cluster_ended(name: str, state_dir: Path) -> str | None:
    """SLURM's word on our cluster ``name`` recorded in ``state_dir`` once SLURM has ended its job (``SLURM TIMEOUT
    (its time limit was reached)``); None while it is queued or runs, or where this machine cannot tell (no such
    state folder here)."""
    if not state_dir.is_dir():
        return None
    record = _record(ClusterFiles(state_dir=state_dir, name=name))
    if record is None:
        return f"no SLURM cluster of ours named {name!r} is recorded in {state_dir} any more"
    ended = job_state(record["job_id"], name)
    return None if ended.alive else f"SLURM {ended.state} ({ended.why})"


def ended_message(job: SlurmJob, state_dir: Path) -> str:
    """Why a cluster's job ended, in one line: SLURM's state, the batch script's first failure, the log file."""
    ended = job_state(job.job_id, job.name)
    files = ClusterFiles(state_dir=state_dir, name=job.name)
    record = _record(files) or {}
    try:
        failure = f": {files.failure.read_text().strip()}"
    except OSError:
        failure = ""
    log = record.get("log", "?")
    return f"cluster {job.name}: SLURM job {job.job_id} ended {ended.state} ({ended.why}){failure}; log: {log}"


def wait_ready(jobs: list[SlurmJob], state_dir: Path, timeout_s: float, poll_s: float = 2.0) -> list[ClusterAddress]:
    """Wait until every cluster's head answers with all its nodes alive. A cluster whose job ends first, or that is
    not ready in time, is reported once every other cluster is ready or has ended too (``NotReady``, which carries
    the ready ones: a partly ready launch still gets those).

    Polls ``squeue`` and each head every ``poll_s`` seconds (cheap for the login node) and logs each
    change of a job's state, so a long wait in the queue shows why it waits.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    ready: dict[str, ClusterAddress] = {}
    ended: dict[str, str] = {}
    last_seen: dict[str, str] = {}
    last_said = started
    while True:
        current = {job.job_id: job for job in our_jobs()}
        waiting = []
        for job in jobs:
            if job.name in ready or job.name in ended:
                continue
            now = current.get(job.job_id)
            if now is None or not now.alive:
                ended[job.name] = ended_message(job, state_dir)
                logger.info("%s", ended[job.name])
                continue
            why = f" ({now.reason})" if now.state == "PENDING" and now.reason not in ("", "None") else ""
            seen = f"{now.state}{why}"
            waiting.append(job)
            if last_seen.get(job.name) != seen:
                logger.info("%s: SLURM job %s is %s", job.name, job.job_id, seen)
                last_seen[job.name] = seen
                last_said = time.monotonic()
            if now.state == "RUNNING" and (address := _ready_address(now, state_dir)):
                ready[job.name] = address
                waiting.remove(job)
                logger.info("%s: ready at %s", job.name, address.dashboard_url)
        if not waiting and not ended:
            return [ready[job.name] for job in jobs]
        if not waiting or time.monotonic() > deadline:
            late = [f"{job.name} (job {job.job_id}) is not ready within {timeout_s:g} s" for job in waiting]
            later = (
                f"; {', '.join(job.name for job in waiting)} stay queued: grok_slurm_address.sh --name NAME adds "
                f"each once it is ready, or end them with {setting('down')}"
                if waiting
                else ""
            )
            raise NotReady(
                "; ".join([*ended.values(), *late]) + later, [ready[job.name] for job in jobs if job.name in ready]
            )
        if time.monotonic() - last_said >= PROGRESS_EVERY_S:
            said = ", ".join(f"{job.name} {last_seen[job.name]}" for job in waiting)
            logger.info("still waiting after %s: %s", _elapsed(time.monotonic() - started), said)
            last_said = time.monotonic()
        time.sleep(poll_s)


def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def recorded(state_dir: Path, names: Iterable[str] | None = None) -> list[SlurmJob]:
    """Our clusters recorded in ``state_dir`` (those launched with it; all, or those of ``names``), with the state
    SLURM gives each now."""
    jobs = []
    for path in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        if names is not None and path.stem not in names:
            continue
        record = _record(ClusterFiles(state_dir=state_dir, name=path.stem))
        if record is not None:
            jobs.append(job_state(record["job_id"], path.stem))
    return jobs


def cancel(jobs: list[SlurmJob], state_dir: Path, timeout_s: float = 60.0) -> None:
    """``scancel`` exactly those of ``jobs`` that SLURM has not ended, wait until it has, and remove what we kept for
    their clusters: record, script, head address, tokens."""
    if alive := [job for job in jobs if job.alive]:
        _run(["scancel", *[job.job_id for job in alive]], f"cancelling {', '.join(job.name for job in alive)}")
        deadline = time.monotonic() + timeout_s
        cancelled = {job.job_id for job in alive}
        while left := cancelled & {job.job_id for job in our_jobs()}:
            if time.monotonic() > deadline:
                raise SlurmError(f"SLURM has not ended {', '.join(sorted(left))} after {timeout_s:g} s")
            time.sleep(1.0)
    for job in jobs:
        files = ClusterFiles(state_dir=state_dir, name=job.name)
        if head := _head(files):
            auth.forget_token(_addresses(head[1], head[2]))
        files.remove()
