"""The local host: several independent Ray clusters on this machine, each on its own ports and temp dir.

Ray clusters on one host collide unless every port differs (``ray_ports``) and each has
its own temp dir. ``ray stop`` would stop every cluster on the machine, so a cluster is
ended by ending the process group that started it, after checking that the group
still runs from that cluster's temp dir. ``LocalHost`` offers the verbs of every host
(``ray_workflow.hosts``); the functions below it are what they are made of.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from ray_workflow import RAY_NODE_ENVIRONMENT, auth, cache_dir, files, ray_ports
from ray_workflow.address_file import ClusterAddress, HostRecord
from ray_workflow.errors import UserError, WorldError, setting
from ray_workflow.files import atomic_write_text
from ray_workflow.hosts import ClusterStatus, Rendered, Started
from ray_workflow.names import KUBERNETES, LOCAL_OWNER_FILE, check_cluster_name, is_member, numbered_names
from ray_workflow.process_groups import end_process_group, live_members
from ray_workflow.ray_ports import PORT_BLOCK, ports_in_use

logger = logging.getLogger(__name__)

DEFAULT_BASE_PORT = 21000
DEFAULT_STATE_DIR = cache_dir("local_clusters")


class LocalClusterError(WorldError, RuntimeError):
    """A local cluster could not be started or stopped; the message says which and why."""


class LocalClusterInputError(UserError, ValueError):
    """A setting the user gave that no cluster can be started with (name, ports, GPU split)."""


@dataclass(kw_only=True)
class LocalCluster:
    """A running node we started (a head, or a worker joined to ``head_address``); saved as JSON
    so that another command can stop it."""

    name: str
    base_port: int
    temp_dir: str
    pgid: int
    num_cpus: int | None
    num_gpus: int | None
    head_address: str | None = None
    token_file: str | None = None
    node_ip: str = "127.0.0.1"
    hidden: tuple[str, ...] = ()  # folders this node cannot see: a node that shares no disk with the others

    def port(self, service: str) -> int:
        return self.base_port + ray_ports.offset(service)

    @property
    def gcs_address(self) -> str:
        return f"{self.node_ip}:{self.port('gcs')}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.node_ip}:{self.port('dashboard')}"


def free_base_port(start: int = DEFAULT_BASE_PORT, taken: set[int] | None = None) -> int:
    """The first port block at or after ``start`` that is wholly free."""
    base = start
    while base + PORT_BLOCK < 65536:
        if base not in (taken or set()) and not ports_in_use(base):
            return base
        base += PORT_BLOCK
    raise LocalClusterError(f"no free block of {PORT_BLOCK} ports at or above {start}")


def _ray_executable() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def start_command(cluster: LocalCluster) -> list[str]:
    is_head = cluster.head_address is None
    role = (
        ["--head", "--dashboard-host", cluster.node_ip, "--include-dashboard", "true"]
        if is_head
        else ["--address", cluster.head_address]
    )
    command = [
        _ray_executable(),
        "start",
        *role,
        "--disable-usage-stats",
        "--node-ip-address",
        cluster.node_ip,
        "--temp-dir",
        cluster.temp_dir,
    ]
    command += ray_ports.start_flags(cluster.base_port, head=is_head)
    if cluster.num_cpus is not None:
        command += ["--num-cpus", str(cluster.num_cpus)]
    if cluster.num_gpus is not None:
        command += ["--num-gpus", str(cluster.num_gpus)]
    if cluster.hidden:
        # A mount namespace of the node's own, where each hidden folder is an empty tmpfs (root only): on one
        # machine, a node that sees none of the other nodes' files, as nodes that share no disk.
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _HIDE, "sh", *cluster.hidden, "--"]
        command += start_command(dataclasses.replace(cluster, hidden=()))
    return command


_HIDE = 'while [ "$1" != -- ]; do mount -t tmpfs -o size=1m hidden "$1" || exit 1; shift; done; shift; exec "$@"'


def _token_of(cluster: LocalCluster) -> str | None:
    if not cluster.token_file:
        return None
    token = auth.read_token_file(Path(cluster.token_file))
    if token is None:
        raise LocalClusterError(f"cluster {cluster.name}: its token file {cluster.token_file} is gone")
    return token


def start_environment(cluster: LocalCluster, cuda_visible_devices: str | None = None) -> dict[str, str]:
    env = {
        **{key: value for key, value in os.environ.items() if key not in auth.AUTH_VARIABLES},
        **auth.cluster_environment(_token_of(cluster)),
        **RAY_NODE_ENVIRONMENT,
        **ray_ports.metric_environment(cluster.base_port),
    }
    # A job's `python` is the first one on the PATH that `ray start` saw: make it ours.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("RAY_ADDRESS", None)
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    return env


def wait_for_dashboard(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            request = urllib.request.Request(f"{url}/api/version", headers=auth.http_headers(url))
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise LocalClusterError(f"dashboard at {url} did not answer within {timeout_s:g} s")
        time.sleep(0.2)


def _check_node_ip(node_ip: str) -> None:
    try:
        address = ipaddress.ip_address(node_ip)
    except ValueError:
        raise LocalClusterInputError(f"{setting('node_ip')} {node_ip!r}: not an IP address") from None
    if address.is_unspecified or address.is_multicast:
        raise LocalClusterInputError(
            f"{setting('node_ip')} {node_ip}: clients cannot reach a cluster there; give this machine's address"
        )


def _check_base_port(base_port: int | None) -> None:
    if base_port is not None and not 1024 <= base_port <= 65535 - PORT_BLOCK:
        raise LocalClusterInputError(
            f"{setting('base_port')} {base_port}: must be between 1024 and {65535 - PORT_BLOCK}"
        )


def _state_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.json"


def start(
    name: str,
    *,
    base_port: int | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    cuda_visible_devices: str | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
    timeout_s: float = 60.0,
    head_address: str | None = None,
    token_auth: bool = True,
    own_token: bool = False,
    node_ip: str = "127.0.0.1",
    hidden: tuple[str, ...] = (),
) -> LocalCluster:
    """Start a head node named ``name`` and wait until it accepts jobs.

    With ``head_address``, start a worker node joined to that head instead (a second
    "machine" of a cluster, for tests of node loss). With ``token_auth`` (the default) the
    head takes the user's Ray token (``auth.user_token``), or with ``own_token`` a new one of
    its own; either is kept for its addresses (``auth``), and a worker uses its head's.
    The node announces itself and serves its dashboard on ``node_ip``: the loopback address
    unless the user names one that other machines can reach. ``hidden`` folders are out of the
    node's sight (see ``start_command``).
    """
    check_cluster_name(name)
    _check_node_ip(node_ip)
    _check_base_port(base_port)
    _replace_if_ended(name, state_dir)
    settings = _NodeSettings(
        hidden=tuple(hidden),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        cuda_visible_devices=cuda_visible_devices,
        head_address=head_address,
        token_auth=token_auth,
        own_token=own_token,
        node_ip=node_ip,
    )
    if base_port is not None:
        if busy := ports_in_use(base_port):
            raise LocalClusterError(
                f"cluster {name!r}: port {busy[0]} is already in use (ports {base_port}-{base_port + PORT_BLOCK - 1} "
                f"are needed); choose another {setting('base_port')}"
            )
        return _start_on(name, base_port, settings, state_dir, timeout_s)
    # A free block can be taken by another program between the check and `ray start`: then the next one is tried.
    taken = {c.base_port for c in load_all(state_dir)}
    attempts = 1
    while True:
        base_port = free_base_port(taken=taken)
        try:
            return _start_on(name, base_port, settings, state_dir, timeout_s)
        except PortTaken as error:
            if attempts == 3:
                raise LocalClusterError(f"cluster {name!r}: {error}, three times") from None
            logger.warning("cluster %r: %s; trying the next free ports", name, error)
            taken.add(base_port)
            attempts += 1


class PortTaken(LocalClusterError):
    """``ray start`` found a port of its block taken after we had checked it was free."""


@dataclass(frozen=True, kw_only=True)
class _NodeSettings:
    hidden: tuple[str, ...]
    num_cpus: int | None
    num_gpus: int | None
    cuda_visible_devices: str | None
    head_address: str | None
    token_auth: bool
    own_token: bool
    node_ip: str


def _replace_if_ended(name: str, state_dir: Path) -> None:
    """Refuse a name a running cluster has; a cluster of that name that has ended (killed, its machine restarted)
    leaves only its record and files, which go, so that starting it again is one command."""
    recorded = next((cluster for cluster in load_all(state_dir) if cluster.name == name), None)
    if recorded is None and not _state_path(state_dir, name).exists():
        return
    if recorded is None or is_running(recorded):
        raise LocalClusterError(f"a local cluster named {name!r} is already recorded in {state_dir}; end it first")
    logger.info("%s: the cluster recorded under this name has ended; its record and files are replaced", name)
    down(recorded, state_dir)


def _start_on(name: str, base_port: int, settings: _NodeSettings, state_dir: Path, timeout_s: float) -> LocalCluster:
    # Ray's socket paths must stay short, so temp dirs live directly under the system temp dir.
    temp_dir = tempfile.mkdtemp(prefix=f"ray_{name[:12]}_")
    (Path(temp_dir) / LOCAL_OWNER_FILE).write_text(name)
    cluster = LocalCluster(
        name=name,
        base_port=base_port,
        temp_dir=temp_dir,
        pgid=0,
        num_cpus=settings.num_cpus,
        num_gpus=settings.num_gpus,
        head_address=settings.head_address,
        node_ip=settings.node_ip,
        hidden=settings.hidden,
    )
    head_address = settings.head_address
    try:
        if settings.token_auth and head_address is None:
            token = auth.new_token() if settings.own_token else auth.user_token().value
            cluster.token_file = str(auth.save_token([cluster.gcs_address, cluster.dashboard_url], token))
        elif settings.token_auth:
            cluster.token_file = str(auth.token_path(head_address))
    except (auth.TokenError, OSError):
        _remove_temp_dir(cluster)
        raise
    output_path = Path(temp_dir) / "ray_start.out"
    try:
        with open(output_path, "wb") as output:
            process = subprocess.Popen(
                start_command(cluster),
                env=start_environment(cluster, settings.cuda_visible_devices),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as error:
        _remove_files(cluster)
        raise LocalClusterError(f"cannot run `ray start` ({error.strerror}: {error.filename})") from None
    cluster.pgid = process.pid
    # Recorded at once: whatever stops this command from here on (Ctrl-C, a kill), `status` and `down` see the node.
    atomic_write_text(_state_path(state_dir, name), json.dumps(asdict(cluster), indent=2))
    try:
        failure = _wait_for_ray_start(process, Path(temp_dir), timeout_s)
        if failure is None and head_address is None:
            wait_for_dashboard(cluster.dashboard_url, timeout_s)
    except BaseException:
        down(cluster, state_dir)
        process.poll()
        raise
    if failure is not None:
        text = output_path.read_text(errors="replace")
        down(cluster, state_dir)
        process.poll()
        if failure == "port" or "already in use" in text:
            raise PortTaken(f"a port of {base_port}-{base_port + PORT_BLOCK - 1} was taken before Ray could bind it")
        last = text.strip().splitlines()[-5:]
        raise LocalClusterError(f"ray start for cluster {name!r} {failure}:\n" + "\n".join(last))
    return cluster


def _wait_for_ray_start(process: subprocess.Popen, temp_dir: Path, timeout_s: float) -> str | None:
    """None once ``ray start`` has succeeded; else what went wrong: ``"port"`` when its GCS or raylet could not
    bind a port (they log it at once, while ``ray start`` itself gives up only after ~40 s), or why it failed."""
    deadline = time.monotonic() + timeout_s
    while (code := process.poll()) is None:
        for log in temp_dir.glob("session_*/logs/*.out"):
            if log.name.startswith(("gcs_server", "raylet")) and _BIND_FAILURE in log.read_bytes():
                return "port"
        if time.monotonic() > deadline:
            return f"did not finish within {timeout_s:g} s"
        time.sleep(0.2)
    return None if code == 0 else "failed"


# What Ray's gRPC servers (GCS, raylet) log when a port is taken.
_BIND_FAILURE = b"Failed to start the grpc server"


def load_all(state_dir: Path = DEFAULT_STATE_DIR) -> list[LocalCluster]:
    """The clusters recorded in ``state_dir``, by name; a damaged record is reported and skipped."""
    if state_dir.exists() and not state_dir.is_dir():
        raise LocalClusterInputError(f"{setting('state_dir')} {state_dir}: is a file, not a folder")
    if not state_dir.is_dir():
        return []
    clusters = []
    for path in sorted(state_dir.glob("*.json")):
        try:
            cluster = LocalCluster(**json.loads(files.read_text(path, 64 << 10)))
            check_cluster_name(cluster.name, "recorded name")
            if path.stem != cluster.name or not isinstance(cluster.pgid, int) or not isinstance(cluster.base_port, int):
                raise ValueError("its fields do not describe a cluster of that file's name")
            # Processes are matched by their temp dir: an empty or relative one would match anyone's.
            if not isinstance(cluster.temp_dir, str) or not Path(cluster.temp_dir).is_absolute() or cluster.pgid < 2:
                raise ValueError(
                    f"temp_dir {cluster.temp_dir!r} or pgid {cluster.pgid!r} cannot be one of our clusters'"
                )
        except (OSError, ValueError, TypeError) as error:
            logger.warning("%s: damaged local-cluster record skipped (%s)", path, error)
            continue
        clusters.append(cluster)
    return sorted(clusters, key=lambda cluster: cluster.name)


def _remove_files(cluster: LocalCluster) -> None:
    """Remove what we made for a cluster that has ended: its temp dir and, for a head, its token."""
    _remove_temp_dir(cluster)
    if cluster.head_address is None and cluster.token_file:
        auth.forget_token([cluster.gcs_address, cluster.dashboard_url])


def _remove_temp_dir(cluster: LocalCluster) -> None:
    """Delete the cluster's temp dir only if we created it for this cluster (it holds our marker)."""
    temp_dir = Path(cluster.temp_dir)
    if _owns(cluster):
        shutil.rmtree(temp_dir, ignore_errors=True)
    elif temp_dir.exists():
        logger.warning("kept %s: it was not created for local cluster %r", temp_dir, cluster.name)


def processes(cluster: LocalCluster) -> list[int]:
    """PIDs of the cluster's live processes: members of its process group whose command line names its temp dir,
    if that temp dir is one we made for this cluster (it holds our mark): a record naming someone else's folder
    or group (``/``, a forged one) never gets a process signalled."""
    if not _owns(cluster):
        return []
    pids = []
    for member in live_members(cluster.pgid):
        try:
            if any(_names_dir(arg, cluster.temp_dir) for arg in member.cmdline()):
                pids.append(member.pid)
        except psutil.Error:  # a process that ended while we looked is simply gone
            continue
    return pids


def _owns(cluster: LocalCluster) -> bool:
    try:
        return files.read_text(Path(cluster.temp_dir) / LOCAL_OWNER_FILE, 1024) == cluster.name
    except (OSError, ValueError):
        return False


def _names_dir(arg: str, folder: str) -> bool:
    """``--temp-dir /tmp/ray_x``, ``--temp_dir=/tmp/ray_x``, ``/tmp/ray_x/session_.../raylet``: the folder itself
    or a path inside it, never a mere prefix of another name."""
    value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
    return value == folder or value.startswith(folder.rstrip("/") + "/")


def is_running(cluster: LocalCluster) -> bool:
    return bool(processes(cluster))


def down(cluster: LocalCluster, state_dir: Path = DEFAULT_STATE_DIR, grace_s: float = 2.0) -> bool:
    """End one node we started and remove its record and files; returns False if it was no longer running.

    The process group is ended only if it still holds the cluster's processes, so a
    group id reused by an unrelated program after a crash is never signalled. Ray's
    daemons take many seconds over SIGTERM, so what is left after ``grace_s`` is killed.
    """
    was_running = is_running(cluster)
    if was_running:
        end_process_group(cluster.pgid, grace_s)
    _remove_files(cluster)
    _state_path(state_dir, cluster.name).unlink(missing_ok=True)
    return was_running


def visible_gpu_ids() -> list[str]:
    """GPU indices this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    if visible := os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [gpu for gpu in visible.split(",") if gpu]
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()] if listing.returncode == 0 else []


def split_gpus(gpu_ids: list[str], count: int, per_cluster: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` for each of ``count`` clusters, ``per_cluster`` GPUs each, none shared."""
    if per_cluster < 1 or per_cluster * count > len(gpu_ids):
        raise LocalClusterInputError(
            f"{setting('gpus_per_cluster')} {per_cluster} x {count} clusters needs {per_cluster * count} GPUs; "
            f"this machine has {len(gpu_ids)}"
        )
    return [",".join(gpu_ids[index * per_cluster : (index + 1) * per_cluster]) for index in range(count)]


def running_local_head() -> ClusterAddress:
    """The Ray cluster this machine's ``ray start`` runs (as ``ray.init(address='auto')`` finds it)."""
    import ray

    try:
        ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
        url = ray._private.worker.get_dashboard_url()
    except (ConnectionError, RuntimeError) as error:
        raise LocalClusterError(
            f"no running Ray cluster found on this machine ({error}); pass {setting('address')}"
        ) from None
    finally:
        ray.shutdown()
    if not url:
        raise LocalClusterError("the running Ray cluster has no dashboard (was it started without one?)")
    return ClusterAddress("local", url if url.startswith("http") else f"http://{url}")


@dataclass(frozen=True, kw_only=True)
class LocalSpec:
    """What each local cluster of a launch offers and how it is reached: CPUs and GPU slots (or GPUs of this
    machine split between them), ports (a free block each, or from ``base_port``), token auth, its address."""

    num_cpus: int | None = None
    num_gpus: int | None = None
    gpus_per_cluster: int | None = None
    base_port: int | None = None
    token_auth: bool = True
    own_token: bool = False
    node_ip: str = "127.0.0.1"

    def __post_init__(self) -> None:
        _check_node_ip(self.node_ip)
        _check_base_port(self.base_port)


class LocalHost:
    """Ray clusters on this machine, recorded in ``state_dir``: the host verbs of ``ray_workflow.hosts``."""

    kind = "local cluster"
    name_rule = KUBERNETES

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.state_dir = Path(state_dir)
        self.scope = f" in {self.state_dir}"

    @property
    def record(self) -> HostRecord:
        return HostRecord.of("local", state_dir=str(self.state_dir))

    @classmethod
    def from_record(cls, record: HostRecord) -> LocalHost:
        return cls(Path(record.get("state_dir") or DEFAULT_STATE_DIR))

    def render(self, spec: LocalSpec, names: list[str]) -> list[Rendered]:
        ports = f"ports from {spec.base_port}" if spec.base_port else "the first free block of ports"
        return [Rendered(name, f"{name}: a Ray head on {spec.node_ip}, {ports}\n", spec) for name in names]

    def check(self, rendered: list[Rendered], offline: bool) -> str:
        running = {cluster.name for cluster in load_all(self.state_dir) if is_running(cluster)}
        if clashing := [cluster.name for cluster in rendered if cluster.name in running]:
            raise LocalClusterError(
                f"a local cluster named {clashing[0]!r} is already recorded in {self.state_dir}; end it first"
            )
        spec = rendered[0].document
        if spec.gpus_per_cluster is not None:
            split_gpus(visible_gpu_ids(), len(rendered), spec.gpus_per_cluster)
        return "checked"

    def start(self, rendered: list[Rendered]) -> Started:
        """Start every cluster, or none: if one fails, the ones already started are ended again.

        ``gpus_per_cluster`` splits this machine's GPUs between the clusters with ``CUDA_VISIBLE_DEVICES``;
        ``num_gpus`` instead declares GPU slots (fake ones on a CPU-only machine, which is how GPU scheduling is
        tested without a GPU).
        """
        spec: LocalSpec = rendered[0].document
        device_sets: list[str | None] = [None] * len(rendered)
        num_gpus = spec.num_gpus
        if spec.gpus_per_cluster is not None:
            device_sets = list(split_gpus(visible_gpu_ids(), len(rendered), spec.gpus_per_cluster))
            num_gpus = spec.gpus_per_cluster
        started: list[LocalCluster] = []
        try:
            for index, cluster in enumerate(rendered):
                node = start(
                    cluster.name,
                    base_port=None if spec.base_port is None else spec.base_port + index * PORT_BLOCK,
                    num_cpus=spec.num_cpus,
                    num_gpus=num_gpus,
                    cuda_visible_devices=device_sets[index],
                    state_dir=self.state_dir,
                    token_auth=spec.token_auth,
                    own_token=spec.own_token,
                    node_ip=spec.node_ip,
                )
                started.append(node)
                logger.info("started %s: %s (GCS %s)", node.name, node.dashboard_url, node.gcs_address)
        except BaseException:
            for node in started:
                down(node, self.state_dir)
            raise
        names = [node.name for node in started]
        return Started(names=names, new=names, said=[])

    def wait_ready(self, names: list[str], timeout_s: float) -> list[ClusterAddress]:
        """Every cluster ``start`` started answers already; each one's address, in the order of ``names``."""
        recorded = {cluster.name: cluster for cluster in load_all(self.state_dir)}
        if missing := [name for name in names if name not in recorded or not is_running(recorded[name])]:
            raise LocalClusterError(f"local cluster {missing[0]!r} is not running{self.scope}")
        for name in names:
            wait_for_dashboard(recorded[name].dashboard_url, timeout_s)
        return [
            ClusterAddress(name, recorded[name].dashboard_url, self.record, gcs_address=recorded[name].gcs_address)
            for name in names
        ]

    def status(self, name: str | None = None) -> list[ClusterStatus]:
        if name is not None:
            check_cluster_name(name)
        found = []
        for cluster in load_all(self.state_dir):
            if name is None or is_member(cluster.name, name):
                running = is_running(cluster)
                detail = f"{cluster.dashboard_url} (GCS {cluster.gcs_address}), temp dir {cluster.temp_dir}"
                found.append(ClusterStatus(cluster.name, "running" if running else "dead", detail, alive=running))
        return found

    def why_ended(self, name: str) -> str | None:
        if not self.state_dir.is_dir():
            return None
        recorded = [cluster for cluster in load_all(self.state_dir) if cluster.name == name]
        if not recorded:
            return f"no local cluster named {name!r} is recorded in {self.state_dir} any more"
        return None if is_running(recorded[0]) else f"its Ray processes (group {recorded[0].pgid}) are gone"

    def down(self, names: list[str]) -> list[ClusterStatus]:
        """End exactly the recorded clusters ``names``; one that cannot be ended does not keep the others running."""
        chosen = [cluster for cluster in load_all(self.state_dir) if cluster.name in names]
        failed = []
        for cluster in chosen:
            try:
                down(cluster, self.state_dir)
            except OSError as error:
                failed.append(f"{cluster.name} ({error})")
        if failed:
            raise LocalClusterError(f"could not end {', '.join(failed)}")
        return [ClusterStatus(cluster.name, "stopped", "", alive=False) for cluster in chosen]


@contextlib.contextmanager
def running(count: int, *, name: str, state_dir: Path = DEFAULT_STATE_DIR, **spec: Any) -> Iterator[list[LocalCluster]]:
    """``count`` clusters named after ``name`` (``LocalSpec`` settings ``spec``) for the ``with`` block, ended when
    it ends, however it ends."""
    host = LocalHost(state_dir)
    started = host.start(host.render(LocalSpec(**spec), numbered_names(name, count)))
    try:
        recorded = {cluster.name: cluster for cluster in load_all(state_dir)}
        yield [recorded[member] for member in started.names]
    finally:
        host.down(started.names)
