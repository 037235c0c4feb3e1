"""Ray clusters on SLURM: one batch job per cluster, the head on its first node, a worker on each other.

A cluster is one job named after the cluster whose comment holds our marker, so ``squeue``
shows users what it is and ``cancel`` never touches a job that is not ours. The batch script
(``cluster_configs/slurm/ray_cluster.sbatch.jinja``) runs the setup lines and starts a Ray node on
each node with ``srun``; Ray node ``i`` of a cluster takes ports ``base_port + PORT_BLOCK * i`` onwards
(``ray_ports``). Nodes are shared, so the script first checks those ports on every node: a cluster
with ``--base_port`` fails at once naming the port and node that are taken, one without takes the
first block that is free everywhere, starting from one chosen by its job id. Every Ray node carries
the label ``JOB_LABEL=<job id>``, so readiness counts our own nodes, never another cluster's that
answers at the same address. The cluster's token, its script, its
record and its head's address live in ``state_dir``, which the compute nodes must share with
the machine that launches (home directories usually are shared). The token is the user's Ray
token (``auth.user_token``), copied there so that nodes read it from a file of the cluster's own,
or with ``own_token`` a new one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ray_workflow import PROJECT_ROOT, auth, ray_ports
from ray_workflow.address_file import ClusterAddress
from ray_workflow.atomic_file import atomic_write_text
from ray_workflow.errors import UserError, WorldError
from ray_workflow.names import SLURM_OWNER_COMMENT, check_cluster_name, is_member, numbered_names

logger = logging.getLogger(__name__)

TEMPLATE = PROJECT_ROOT / "cluster_configs" / "slurm" / "ray_cluster.sbatch.jinja"
MARKER = SLURM_OWNER_COMMENT  # the job comment that marks a job as one of our clusters
DEFAULT_STATE_DIR = Path("~/.cache/isaaclab_ray/slurm").expanduser()
AUTO_PORTS = range(20000, 32000)  # above Ray's default ports, below Linux's ephemeral ones
AUTO_PORT_TRIES = 8
JOB_LABEL = "isaaclab-ray/slurm-job"
DEFAULT_LOG_DIR = PROJECT_ROOT / "logs" / "slurm"  # ignored by git, left out of job uploads
HEAD_WAIT_S = 300  # how long the batch script waits for the head before giving up
PROGRESS_EVERY_S = 30.0  # a long wait in the queue says so at this pace
ALIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")
_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.-]+$")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$|^(UNLIMITED|INFINITE)$")
_GRES = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*(,[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*)*$")


class SlurmError(WorldError, RuntimeError):
    """SLURM refused, or a cluster's job ended or never became ready; the message names the cluster and job."""


class SlurmInputError(SlurmError, UserError, ValueError):
    """A setting that no SLURM cluster can be started with; the message names the flag and the value."""


@dataclass(frozen=True, kw_only=True)
class SlurmClusterSpec:
    """One Ray cluster as one SLURM job: ``1 + num_workers`` nodes alike, each a Ray node with all its resources."""

    name: str
    num_workers: int = 4
    cpus_per_node: int = 8
    gpus_per_node: int = 1
    mem_gb_per_node: float | None = None
    gres: str | None = None
    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None
    setup: tuple[str, ...] = ()
    base_port: int | None = None  # None: the batch script finds a block free on every node
    token_auth: bool = True
    own_token: bool = False
    storage_uri: str | None = None

    def __post_init__(self) -> None:
        check_cluster_name(self.name)
        checks = [
            ("--max_workers", self.num_workers, isinstance(self.num_workers, int) and self.num_workers >= 0),
            ("--cpu_per_worker", self.cpus_per_node, _is_whole(self.cpus_per_node) and self.cpus_per_node >= 1),
            ("--gpu_per_worker", self.gpus_per_node, _is_whole(self.gpus_per_node) and self.gpus_per_node >= 0),
            ("--ram_gb_per_worker", self.mem_gb_per_node, self.mem_gb_per_node is None or self.mem_gb_per_node > 0),
            ("--gres", self.gres, self.gres is None or bool(_GRES.match(self.gres))),
            ("--partition", self.partition, self.partition is None or bool(_SLURM_WORD.match(self.partition))),
            ("--account", self.account, self.account is None or bool(_SLURM_WORD.match(self.account))),
            ("--time", self.time_limit, self.time_limit is None or bool(_TIME.match(self.time_limit))),
        ]
        for flag, value, valid in checks:
            if not valid:
                raise SlurmInputError(f"{flag} {value!r}: {_RULES[flag]}")
        for line in self.setup:
            if "\n" in line or "\r" in line or not line.strip():
                raise SlurmInputError(f"--setup {line!r}: give one non-empty shell line per --setup")
        if self.base_port is None:
            if ray_ports.PORT_BLOCK * self.num_nodes > len(AUTO_PORTS):
                raise SlurmInputError(
                    f"--max_workers {self.num_workers}: {self.num_nodes} nodes need more ports than "
                    f"{AUTO_PORTS.start}-{AUTO_PORTS.stop - 1} holds; give --base_port"
                )
            return
        last_port = self.base_port + ray_ports.PORT_BLOCK * self.num_nodes - 1
        if not 1024 <= self.base_port or last_port > 65535:
            raise SlurmInputError(
                f"--base_port {self.base_port}: cluster {self.name!r} needs ports {self.base_port}-{last_port}, "
                "which must lie within 1024-65535"
            )

    @property
    def num_nodes(self) -> int:
        return 1 + self.num_workers


_RULES = {
    "--max_workers": "must be a whole number of worker nodes, 0 or more",
    "--cpu_per_worker": "SLURM allocates whole CPUs: give a whole number, 1 or more",
    "--gpu_per_worker": "SLURM allocates whole GPUs: give a whole number, 0 or more",
    "--ram_gb_per_worker": "must be more than 0",
    "--gres": "not a SLURM GRES such as gpu:a100:2",
    "--partition": "a SLURM partition name holds letters, digits, '_', '.' and '-' only",
    "--account": "a SLURM account name holds letters, digits, '_', '.' and '-' only",
    "--time": "not a SLURM time limit such as 90, 4:00:00 or 1-12:00:00",
}


def _is_whole(value: float) -> bool:
    return float(value).is_integer()


def specs_for(base: SlurmClusterSpec, count: int) -> list[SlurmClusterSpec]:
    """``count`` clusters like ``base``: ``name-1`` .. ``name-N``; with a ``base_port``, each on its own ports
    after the previous one's."""
    names = numbered_names(base.name, count)
    if base.base_port is None:
        return [dataclasses.replace(base, name=name) for name in names]
    stride = ray_ports.PORT_BLOCK * base.num_nodes
    return [
        dataclasses.replace(base, name=name, base_port=base.base_port + index * stride)
        for index, name in enumerate(names)
    ]


@dataclass(frozen=True, kw_only=True)
class ClusterFiles:
    """What we keep for one cluster in the shared ``state_dir``."""

    state_dir: Path
    name: str

    def path(self, suffix: str) -> Path:
        return self.state_dir / f"{self.name}.{suffix}"

    @property
    def record(self) -> Path:
        return self.path("json")

    @property
    def script(self) -> Path:
        return self.path("sbatch")

    @property
    def token(self) -> Path:
        return self.path("token")

    @property
    def head(self) -> Path:
        return self.path("head")

    @property
    def failure(self) -> Path:
        return self.path("failure")

    def remove(self) -> None:
        for path in (self.record, self.script, self.token, self.head, self.failure):
            path.unlink(missing_ok=True)


def render(spec: SlurmClusterSpec, state_dir: Path, log_dir: Path) -> str:
    """The batch script of one cluster; a variable the template needs but is not given is an error."""
    files = ClusterFiles(state_dir=state_dir, name=spec.name)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    environment.filters["quote"] = shlex.quote
    return environment.get_template(TEMPLATE.name).render(
        name=spec.name,
        marker=MARKER,
        num_nodes=spec.num_nodes,
        cpus_per_node=int(spec.cpus_per_node),
        gpus_per_node=int(spec.gpus_per_node),
        mem_mb_per_node=None if spec.mem_gb_per_node is None else int(spec.mem_gb_per_node * 1024),
        gres=spec.gres,
        partition=spec.partition,
        account=spec.account,
        time_limit=spec.time_limit,
        log_file=_sbatch_value(log_dir.resolve() / "%x-%j.out"),
        python_bin=str(Path(sys.executable).parent),
        setup=spec.setup,
        node_environment=node_environment(spec, files),
        unset_environment=[*auth.AUTH_VARIABLES, "RAY_ADDRESS"],
        base_port=spec.base_port,
        port_range=AUTO_PORTS,
        port_tries=AUTO_PORT_TRIES,
        port_block=ray_ports.PORT_BLOCK,
        job_label=JOB_LABEL,
        head_file=str(files.head),
        failure_file=str(files.failure),
        project_root=str(PROJECT_ROOT),
        head_port_flags=[(flag, ray_ports.offset(service)) for flag, service in ray_ports.HEAD_PORT_FLAGS.items()],
        node_port_flags=ray_ports.flag_offsets(head=False),
        head_metric_offsets=[(variable, ray_ports.offset(service)) for variable, service in ray_ports.METRIC_VARIABLES],
        gcs_offset=ray_ports.offset("gcs"),
        head_wait_s=HEAD_WAIT_S,
    )


def _sbatch_value(path: Path) -> str:
    """A path as an ``#SBATCH`` line reads it: sbatch splits at spaces unless the value is in double quotes."""
    text = str(path)
    if '"' in text or "\n" in text:
        raise SlurmInputError(f"--log_dir {path.parent}: sbatch cannot take a path with a double quote or newline")
    return f'"{text}"' if any(character.isspace() for character in text) else text


def node_environment(spec: SlurmClusterSpec, files: ClusterFiles) -> dict[str, str]:
    """What every Ray node of the cluster runs with."""
    return {
        # The token's file, never the token, goes into the script; each node reads it into RAY_AUTH_TOKEN at start.
        **(
            {auth.AUTH_MODE: "token", auth.TOKEN_PATH_VARIABLE: str(files.token)}
            if spec.token_auth
            else auth.cluster_environment(None)
        ),
        "RAY_USAGE_STATS_ENABLED": "0",
        # The whole cluster goes at once, so a node has no one to drain its work to: stop at SIGTERM.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        **({"ISAACLAB_RAY_STORAGE_URI": spec.storage_uri} if spec.storage_uri else {}),
    }


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
        raise SlurmError(f"{what}: {command[0]} failed: {message[-1] if message else f'exit {result.returncode}'}")
    return result.stdout


def our_jobs(name: str | None = None) -> list[SlurmJob]:
    """The user's queued and running jobs that are our clusters: exact ``name`` or its ``name-N``, our marker."""
    listing = _run(["squeue", "--me", "--noheader", "--format=%i|%j|%k|%T|%N|%r"], "listing our jobs")
    jobs = []
    for line in listing.splitlines():
        fields = line.split("|")
        if len(fields) != 6:
            continue
        job_id, job_name, comment, state, nodes, reason = (field.strip() for field in fields)
        if comment == MARKER and (name is None or is_member(job_name, name)):
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


def check(scripts: list[tuple[str, str]]) -> None:
    """``sbatch --test-only`` on each cluster's batch script (name, text): SLURM says whether it could schedule it
    (partition, account, time limit, nodes, GRES) without queueing anything."""
    for name, script in scripts:
        try:
            _run(["sbatch", "--test-only"], f"cluster {name!r} cannot be scheduled", stdin=script)
        except SlurmError as error:
            raise SlurmInputError(str(error)) from None


def submit(scripts: list[tuple[SlurmClusterSpec, str]], state_dir: Path, log_dir: Path) -> list[SlurmJob]:
    """Submit one job per cluster (its spec and the batch script ``render`` made), or none: if a later submission
    fails, the jobs already submitted are cancelled."""
    specs = [spec for spec, _ in scripts]
    names = {spec.name for spec in specs}
    if clashing := [job for job in our_jobs() if job.name in names]:
        raise SlurmInputError(
            f"--name: cluster {clashing[0].name!r} already runs as SLURM job {clashing[0].job_id}; "
            "cancel it with --down or choose another --name"
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
                files.token.touch(mode=0o600, exist_ok=True)
                files.token.chmod(0o600)
                atomic_write_text(files.token, auth.new_token() if spec.own_token else user_token)
            job_id = _run(["sbatch", "--parsable", str(files.script)], f"submitting cluster {spec.name!r}")
            job = SlurmJob(job_id=job_id.strip().split(";")[0], name=spec.name, state="PENDING")
            submitted.append(job)
            record = {"job_id": job.job_id, "spec": dataclasses.asdict(spec), "log": _log_file(log_dir, job)}
            atomic_write_text(files.record, json.dumps(record, indent=2))
            logger.info("submitted %s as SLURM job %s", spec.name, job.job_id)
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
    return ClusterAddress(job.name, dashboard)


def why_cluster_ended(name: str | None, state_dir: Path, settle_s: float = 30.0) -> str | None:
    """SLURM's word on our cluster ``name`` launched with this ``state_dir``, once SLURM has ended its job
    (``SLURM TIMEOUT (its time limit was reached)``); None if it is not one of ours or still runs after ``settle_s``
    (a job being killed is still RUNNING or COMPLETING for a moment after its nodes stop answering)."""
    if not name:
        return None
    record = _record(ClusterFiles(state_dir=state_dir, name=name))
    if record is None:
        return None
    deadline = time.monotonic() + settle_s
    try:
        while (ended := job_state(record["job_id"], name)).state in ALIVE_STATES and time.monotonic() < deadline:
            time.sleep(1.0)
    except OSError:  # no SLURM commands on this machine
        return None
    if ended.state in ALIVE_STATES:
        return None
    why = "its time limit was reached" if ended.state == "TIMEOUT" else f"reason {ended.reason or 'none given'}"
    return f"SLURM {ended.state} ({why})"


def ended_message(job: SlurmJob, state_dir: Path) -> str:
    """Why a cluster's job ended, in one line: SLURM's state, the batch script's first failure, the log file."""
    ended = job_state(job.job_id, job.name)
    files = ClusterFiles(state_dir=state_dir, name=job.name)
    record = _record(files) or {}
    why = "its time limit was reached" if ended.state == "TIMEOUT" else f"reason {ended.reason or 'none given'}"
    try:
        failure = f": {files.failure.read_text().strip()}"
    except OSError:
        failure = ""
    log = record.get("log", "?")
    return f"cluster {job.name}: SLURM job {job.job_id} ended {ended.state} ({why}){failure}; log: {log}"


def wait_ready(jobs: list[SlurmJob], state_dir: Path, timeout_s: float, poll_s: float = 2.0) -> list[ClusterAddress]:
    """Wait until every cluster's head answers with all its nodes alive; a job that ends first is an error.

    Polls ``squeue`` and each head every ``poll_s`` seconds (cheap for the login node) and logs each
    change of a job's state, so a long wait in the queue shows why it waits.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    ready: dict[str, ClusterAddress] = {}
    last_seen: dict[str, str] = {}
    last_said = started
    while True:
        current = {job.job_id: job for job in our_jobs()}
        waiting = []
        for job in jobs:
            if job.name in ready:
                continue
            now = current.get(job.job_id)
            if now is None or not now.alive:
                raise SlurmError(ended_message(job, state_dir))
            why = f" ({now.reason})" if now.state == "PENDING" and now.reason not in ("", "None") else ""
            seen = f"{now.state}{why}"
            waiting.append(f"{job.name} {seen}")
            if last_seen.get(job.name) != seen:
                logger.info("%s: SLURM job %s is %s", job.name, job.job_id, seen)
                last_seen[job.name] = seen
                last_said = time.monotonic()
            if now.state == "RUNNING" and (address := _ready_address(now, state_dir)):
                ready[job.name] = address
                logger.info("%s: ready at %s", job.name, address.dashboard_url)
        if len(ready) == len(jobs):
            return [ready[job.name] for job in jobs]
        if time.monotonic() - last_said >= PROGRESS_EVERY_S:
            logger.info("still waiting after %s: %s", _elapsed(time.monotonic() - started), ", ".join(waiting))
            last_said = time.monotonic()
        if time.monotonic() > deadline:
            waiting = ", ".join(f"{job.name} (job {job.job_id})" for job in jobs if job.name not in ready)
            raise SlurmError(
                f"not ready within {timeout_s:g} s: {waiting}; the jobs stay queued: run "
                "grok_slurm_address.sh later, or cancel them with --down"
            )
        time.sleep(poll_s)


def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def recorded(state_dir: Path) -> list[SlurmJob]:
    """Our clusters recorded in ``state_dir`` (those launched from here), with the state SLURM gives each now."""
    jobs = []
    for path in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        files = ClusterFiles(state_dir=state_dir, name=path.stem)
        record = _record(files)
        if record is None:
            continue
        jobs.append(job_state(record["job_id"], path.stem))
    return jobs


def cancel(name: str, state_dir: Path, timeout_s: float = 60.0) -> list[SlurmJob]:
    """Cancel our clusters ``name`` and ``name-N`` (exact name, our marker, the user's own jobs), wait until SLURM
    has ended them, and forget what we kept for them; returns the jobs cancelled."""
    check_cluster_name(name)
    jobs = our_jobs(name)
    withdraw(jobs, state_dir, _names_in(state_dir, name), timeout_s)
    return jobs


def withdraw(
    jobs: list[SlurmJob], state_dir: Path, names: Iterable[str] | None = None, timeout_s: float = 60.0
) -> None:
    """``scancel`` exactly ``jobs``, wait until SLURM has ended them, and forget what we kept for the clusters
    ``names`` (by default, those jobs' clusters): record, script, head address, tokens."""
    if jobs:
        _run(["scancel", *[job.job_id for job in jobs]], f"cancelling {', '.join(job.name for job in jobs)}")
        deadline = time.monotonic() + timeout_s
        cancelled = {job.job_id for job in jobs}
        while left := cancelled & {job.job_id for job in our_jobs()}:
            if time.monotonic() > deadline:
                raise SlurmError(f"SLURM has not ended {', '.join(sorted(left))} after {timeout_s:g} s")
            time.sleep(1.0)
    for cluster in [job.name for job in jobs] if names is None else names:
        files = ClusterFiles(state_dir=state_dir, name=cluster)
        if head := _head(files):
            auth.forget_token(_addresses(head[1], head[2]))
        files.remove()


def _names_in(state_dir: Path, name: str) -> Iterable[str]:
    if not state_dir.is_dir():
        return []
    return sorted({path.stem for path in state_dir.glob("*.json") if is_member(path.stem, name)})
