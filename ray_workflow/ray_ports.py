"""The ports of one Ray node: one block of ``PORT_BLOCK`` ports from a base port, every port distinct.

Several Ray nodes share a machine only if every port differs (GCS, dashboard, client
server, dashboard agent, runtime-env agent, node manager, object manager, metrics, the
worker range, and two metric ports that Ray reads from the environment). Local clusters and
SLURM clusters both give each node its own block, so one rule serves both.
"""

from __future__ import annotations

import socket

PORT_BLOCK = 200  # ports reserved for one node: 11 service ports, then 100 worker ports
WORKER_PORTS = range(100, 200)
SERVICE_PORTS = (
    "gcs",
    "dashboard",
    "client_server",
    "dashboard_agent_listen",
    "dashboard_agent_grpc",
    "runtime_env_agent",
    "node_manager",
    "object_manager",
    "metrics_export",
    "autoscaler_metric",
    "dashboard_metric",
)
# `ray start` flags that take one of a node's ports: the head's own, then every node's.
HEAD_PORT_FLAGS = {"--port": "gcs", "--dashboard-port": "dashboard", "--ray-client-server-port": "client_server"}
# The two metric ports Ray reads from the environment instead of flags.
METRIC_VARIABLES = (("AUTOSCALER_METRIC_PORT", "autoscaler_metric"), ("DASHBOARD_METRIC_PORT", "dashboard_metric"))
NODE_PORT_FLAGS = {
    "--dashboard-agent-listen-port": "dashboard_agent_listen",
    "--dashboard-agent-grpc-port": "dashboard_agent_grpc",
    "--runtime-env-agent-port": "runtime_env_agent",
    "--node-manager-port": "node_manager",
    "--object-manager-port": "object_manager",
    "--metrics-export-port": "metrics_export",
}


def offset(service: str) -> int:
    return SERVICE_PORTS.index(service)


def flag_offsets(head: bool) -> list[tuple[str, int]]:
    """Each port flag of `ray start` with its port's offset from the node's base port."""
    flags = {**(HEAD_PORT_FLAGS if head else {}), **NODE_PORT_FLAGS}
    return [(flag, offset(service)) for flag, service in flags.items()] + [
        ("--min-worker-port", WORKER_PORTS.start),
        ("--max-worker-port", WORKER_PORTS.stop - 1),
    ]


def start_flags(base_port: int, head: bool) -> list[str]:
    """The port flags of `ray start` for a node whose block starts at ``base_port``."""
    return [part for flag, delta in flag_offsets(head) for part in (flag, str(base_port + delta))]


def metric_environment(base_port: int) -> dict[str, str]:
    return {variable: str(base_port + offset(service)) for variable, service in METRIC_VARIABLES}


def ports_in_use(base_port: int) -> list[int]:
    """The ports of the block at ``base_port`` that something on this machine already holds.

    A port is held if a socket is bound to it; one left in TIME_WAIT by a cluster that just stopped is free, as
    it is for Ray, whose servers bind with ``SO_REUSEADDR``. Runs on SLURM's compute nodes too (the batch script
    checks each node's block before Ray starts), so it needs nothing beyond Python's standard library.
    """
    busy = []
    for port in [base_port + offset for offset in range(len(SERVICE_PORTS))] + [
        base_port + offset for offset in WORKER_PORTS
    ]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                busy.append(port)
    return busy
