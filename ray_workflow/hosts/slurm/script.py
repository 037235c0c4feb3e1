"""A SLURM cluster's batch script: the cluster's settings, checked, rendered from a Jinja template.

One cluster is one job of ``1 + num_workers`` nodes alike. The batch script
(``cluster_configs/slurm/ray_cluster.sbatch.jinja``) runs the setup lines and starts a Ray node on each node
with ``srun``; Ray node ``i`` of a cluster takes ports ``base_port + PORT_BLOCK * i`` onwards (``ray_ports``).
Nodes are shared, so the script first checks those ports on every node: a cluster with ``base_port`` fails at
once naming the port and node that are taken, one without takes the first block that is free everywhere,
starting from one chosen by its job id. Every Ray node carries the label ``JOB_LABEL=<job id>``, so readiness
counts our own nodes, never another cluster's that answers at the same address. What the nodes read (the
token, the head's address, the first failure) lives in ``state_dir`` (``ClusterFiles``), which the compute
nodes share with the machine that launches.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ray_workflow import PROJECT_ROOT, RAY_NODE_ENVIRONMENT, auth, ray_ports
from ray_workflow.errors import UserError, setting
from ray_workflow.names import SLURM, SLURM_OWNER_COMMENT, check_cluster_name

TEMPLATE = PROJECT_ROOT / "cluster_configs" / "slurm" / "ray_cluster.sbatch.jinja"
MARKER = SLURM_OWNER_COMMENT  # the job comment that marks a job as one of our clusters
AUTO_PORTS = range(20000, 32000)  # above Ray's default ports, below Linux's ephemeral ones
AUTO_PORT_TRIES = 8
JOB_LABEL = "isaaclab-ray/slurm-job"
HEAD_WAIT_S = 300  # how long the batch script waits for the head before giving up
_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.-]+$")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$|^(UNLIMITED|INFINITE)$")
_GRES = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*(,[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*)*$")


class SlurmInputError(UserError, ValueError):
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
        check_cluster_name(self.name, rule=SLURM)
        checks = [
            ("num_workers", self.num_workers, isinstance(self.num_workers, int) and self.num_workers >= 0),
            ("cpus_per_node", self.cpus_per_node, _is_whole(self.cpus_per_node) and self.cpus_per_node >= 1),
            ("gpus_per_node", self.gpus_per_node, _is_whole(self.gpus_per_node) and self.gpus_per_node >= 0),
            ("mem_gb_per_node", self.mem_gb_per_node, self.mem_gb_per_node is None or self.mem_gb_per_node > 0),
            ("gres", self.gres, self.gres is None or bool(_GRES.match(self.gres))),
            ("partition", self.partition, self.partition is None or bool(_SLURM_WORD.match(self.partition))),
            ("account", self.account, self.account is None or bool(_SLURM_WORD.match(self.account))),
            ("time_limit", self.time_limit, self.time_limit is None or bool(_TIME.match(self.time_limit))),
        ]
        for field, value, valid in checks:
            if not valid:
                raise SlurmInputError(f"{setting(field)} {value!r}: {_RULES[field]}")
        for line in self.setup:
            if "\n" in line or "\r" in line or not line.strip():
                raise SlurmInputError(f"{setting('setup')} {line!r}: give one non-empty shell line each")
        if self.base_port is None:
            if ray_ports.PORT_BLOCK * self.num_nodes > len(AUTO_PORTS):
                raise SlurmInputError(
                    f"{setting('num_workers')} {self.num_workers}: {self.num_nodes} nodes need more ports than "
                    f"{AUTO_PORTS.start}-{AUTO_PORTS.stop - 1} holds; give {setting('base_port')}"
                )
            return
        last_port = self.base_port + ray_ports.PORT_BLOCK * self.num_nodes - 1
        if not 1024 <= self.base_port or last_port > 65535:
            raise SlurmInputError(
                f"{setting('base_port')} {self.base_port}: cluster {self.name!r} needs ports "
                f"{self.base_port}-{last_port}, which must lie within 1024-65535"
            )

    @property
    def num_nodes(self) -> int:
        return 1 + self.num_workers


_RULES = {
    "num_workers": "must be a whole number of worker nodes, 0 or more",
    "cpus_per_node": "SLURM allocates whole CPUs: give a whole number, 1 or more",
    "gpus_per_node": "SLURM allocates whole GPUs: give a whole number, 0 or more",
    "mem_gb_per_node": "must be more than 0",
    "gres": "not a SLURM GRES such as gpu:a100:2",
    "partition": "a SLURM partition name holds letters, digits, '_', '.' and '-' only",
    "account": "a SLURM account name holds letters, digits, '_', '.' and '-' only",
    "time_limit": "not a SLURM time limit such as 90, 4:00:00 or 1-12:00:00",
}


def _is_whole(value: float) -> bool:
    return float(value).is_integer()


def specs_for(base: SlurmClusterSpec, names: list[str]) -> list[SlurmClusterSpec]:
    """A spec like ``base`` for each cluster of ``names``; with a ``base_port``, each on its own ports after the
    previous one's."""
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
        raise SlurmInputError(
            f"{setting('log_dir')} {path.parent}: sbatch cannot take a path with a double quote or newline"
        )
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
        **RAY_NODE_ENVIRONMENT,
        # The whole cluster goes at once, so a node has no one to drain its work to: stop at SIGTERM.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        **({"ISAACLAB_RAY_STORAGE_URI": spec.storage_uri} if spec.storage_uri else {}),
    }
