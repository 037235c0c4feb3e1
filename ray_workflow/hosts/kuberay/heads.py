"""The head Pods of our RayClusters: whether each is Ready (and why not), their addresses and tokens, and
``kubectl port-forward`` to their dashboards for use from outside the cluster network."""

from __future__ import annotations

import base64
import logging
import re
import time
from dataclasses import dataclass, field
from subprocess import Popen
from typing import Any

from ray_workflow import auth
from ray_workflow.address_file import DASHBOARD_PORT, GCS_PORT, ClusterAddress, HostRecord
from ray_workflow.hosts.kuberay.kubectl import Kubectl, KubectlError
from ray_workflow.process_groups import end_process_group

logger = logging.getLogger(__name__)
HEAD_SELECTOR = "ray.io/node-type=head"
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(?P<port>\d+) ->")


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in pod.get("status", {}).get("conditions", []) if c.get("type") == kind), {})


def head_state(pod: dict[str, Any] | None) -> tuple[bool, str]:
    """Ready as ``kubectl get pods`` shows it (the Pod's Ready condition, so probes count), else why not."""
    if pod is None:
        return False, "no head pod yet"
    name = pod["metadata"]["name"]
    phase = pod.get("status", {}).get("phase", "Unknown")
    ip = pod.get("status", {}).get("podIP")
    if phase != "Running":
        scheduled = _condition(pod, "PodScheduled")
        why = f": {scheduled['message']}" if scheduled.get("status") == "False" and scheduled.get("message") else ""
        return False, f"head pod {name} is {phase}{why}"
    if _condition(pod, "Ready").get("status") != "True":
        return False, f"head pod {name} is Running but not Ready"
    if not ip:
        return False, f"head pod {name} has no IP yet"
    return True, ip


def head_pods(namespace: str, kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    """Each RayCluster's head pod (by the ray.io/cluster label KubeRay puts on it)."""
    pods = kubectl.get_json(["get", "pods", "--namespace", namespace, "-l", HEAD_SELECTOR]).get("items", [])
    heads: dict[str, dict[str, Any]] = {}
    for pod in pods:
        cluster = pod["metadata"].get("labels", {}).get("ray.io/cluster")
        if cluster and pod.get("metadata", {}).get("deletionTimestamp") is None:
            # A replaced head leaves its predecessor terminating; prefer the Running one.
            if cluster not in heads or head_state(pod)[0]:
                heads[cluster] = pod
    return heads


def wait_for_heads(
    names: list[str], namespace: str, kubectl: Kubectl, timeout_s: float = 600.0, poll_s: float = 2.0
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Wait until each RayCluster of ``names`` has a Ready head with an IP, for ``timeout_s`` at most: the Ready
    head Pods, and why each other cluster is not ready (empty once all are)."""
    deadline = time.monotonic() + timeout_s
    last_report = ""
    while True:
        heads = head_pods(namespace, kubectl)
        states = {name: head_state(heads.get(name)) for name in names}
        waiting = {name: why for name, (ready, why) in states.items() if not ready}
        ready = {name: heads[name] for name in names if name not in waiting}
        if not waiting or time.monotonic() >= deadline:
            return ready, waiting
        report = "; ".join(f"{name}: {why}" for name, why in sorted(waiting.items()))
        if report != last_report:
            logger.info("waiting for %d of %d cluster(s): %s", len(waiting), len(names), report)
            last_report = report
        time.sleep(poll_s)


def waiting_report(waiting: dict[str, str], timeout_s: float) -> str:
    return f"not ready after {timeout_s:g} s: " + "; ".join(f"{name}: {why}" for name, why in sorted(waiting.items()))


def head_token(pod: dict[str, Any], namespace: str, kubectl: Kubectl) -> str | None:
    """The cluster's Ray token, from the Secret that KubeRay hands the head as ``RAY_AUTH_TOKEN``."""
    for container in pod.get("spec", {}).get("containers", []):
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if variable.get("name") == "RAY_AUTH_TOKEN" and reference:
                secret = kubectl.get_json(["get", "secret", reference["name"], "--namespace", namespace])
                encoded = secret.get("data", {}).get(reference["key"])
                return base64.b64decode(encoded).decode() if encoded else None
            if variable.get("name") == "RAY_AUTH_TOKEN" and variable.get("value"):
                return variable["value"]
    return None


def keep_tokens(
    heads: dict[str, dict[str, Any]], addresses: list[ClusterAddress], namespace: str, kubectl: Kubectl
) -> None:
    """Keep each cluster's token for its address, so our clients send it (``auth``); never printed."""
    for cluster in addresses:
        if cluster.name in heads and (token := head_token(heads[cluster.name], namespace, kubectl)):
            auth.save_token([cluster.dashboard_url], token)


def pod_addresses(heads: dict[str, dict[str, Any]], record: HostRecord) -> list[ClusterAddress]:
    """``http://HEAD_IP:8265`` for each cluster, in name order."""
    return [
        ClusterAddress(
            name,
            f"http://{heads[name]['status']['podIP']}:{DASHBOARD_PORT}",
            record,
            gcs_address=f"{heads[name]['status']['podIP']}:{GCS_PORT}",
        )
        for name in sorted(heads)
    ]


@dataclass
class PortForwards:
    """``kubectl port-forward`` processes we started, one process group each."""

    addresses: list[ClusterAddress]
    processes: list[Popen[str]] = field(default_factory=list)

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            end_process_group(process.pid, grace_s=3, reap=process.poll)
            process.wait()


def port_forward(names: list[str], namespace: str, kubectl: Kubectl, timeout_s: float = 30.0) -> PortForwards:
    """Forward a free local port to each cluster's dashboard through its head service."""
    forwards = PortForwards([])
    try:
        for name in sorted(names):
            process = kubectl.popen(
                ["port-forward", "--namespace", namespace, f"svc/{name}-head-svc", f":{DASHBOARD_PORT}"]
            )
            forwards.processes.append(process)
            assert process.stdout is not None
            deadline = time.monotonic() + timeout_s
            port = None
            seen = []
            while port is None and time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    break
                seen.append(line.strip())
                if match := _FORWARDING.search(line):
                    port = match["port"]
            if port is None:
                raise KubectlError(f"kubectl port-forward to {name} failed: {' '.join(seen) or 'no output'}")
            forwards.addresses.append(ClusterAddress(name, f"http://127.0.0.1:{port}"))
    except BaseException:
        forwards.stop()
        raise
    return forwards
