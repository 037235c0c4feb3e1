"""The head Pods of our RayClusters: whether each is Ready (and why not), their addresses and tokens, and
``kubectl port-forward`` to their dashboards for use from outside the cluster network."""

from __future__ import annotations

import base64
import datetime
import logging
import re
import time
from dataclasses import dataclass, field
from subprocess import Popen
from typing import Any

from ray_workflow import auth
from ray_workflow.address_file import DASHBOARD_PORT, GCS_PORT, ClusterAddress, HostRecord
from ray_workflow.hosts.kuberay.clusters import our_clusters
from ray_workflow.hosts.kuberay.kubectl import Kubectl, KubectlError
from ray_workflow.process_groups import end_process_group

logger = logging.getLogger(__name__)
HEAD_SELECTOR = "ray.io/node-type=head"
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(?P<port>\d+) ->")


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in pod.get("status", {}).get("conditions", []) if c.get("type") == kind), {})


# An operator records a cluster's status within seconds; none after this long means no operator is looking.
UNRECONCILED_AFTER_S = 30.0
# Container states that say only that a container is on its way, not what stops it.
_ON_ITS_WAY = ("ContainerCreating", "PodInitializing")


def pod_problem(pod: dict[str, Any]) -> str | None:
    """What keeps a Pod from running, in Kubernetes' own words: a container waiting (``ImagePullBackOff``,
    ``CreateContainerConfigError``, ``CrashLoopBackOff`` with how it last ended: ``OOMKilled``), an init container
    that failed, or the scheduler's message; None if nothing says."""
    status = pod.get("status", {})
    for kind, what in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for container in status.get(kind, []):
            state, last = container.get("state", {}), container.get("lastState", {}).get("terminated")
            waiting, ended = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason") not in _ON_ITS_WAY:
                said = f"{what} {container['name']} is waiting: {waiting.get('reason')}"
                said += f": {waiting['message']}" if waiting.get("message") else ""
                if last:
                    said += f" (it last ended {last.get('reason')}, exit code {last.get('exitCode')})"
                return said
            if ended and (kind == "containerStatuses" or ended.get("exitCode")):
                return f"{what} {container['name']} ended: {ended.get('reason')}, exit code {ended.get('exitCode')}"
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("message"):
        return scheduled["message"]
    return None


def head_state(pod: dict[str, Any] | None) -> tuple[bool, str]:
    """Ready as ``kubectl get pods`` shows it (the Pod's Ready condition, so probes count), else why not."""
    if pod is None:
        return False, "no head pod yet"
    name = pod["metadata"]["name"]
    phase = pod.get("status", {}).get("phase", "Unknown")
    ip = pod.get("status", {}).get("podIP")
    problem = pod_problem(pod)
    if phase != "Running":
        return False, f"head pod {name} is {phase}" + (f": {problem}" if problem else "")
    if _condition(pod, "Ready").get("status") != "True":
        return False, f"head pod {name} is Running but not Ready" + (f": {problem}" if problem else "")
    if not ip:
        return False, f"head pod {name} has no IP yet"
    return True, ip


def head_pods(namespace: str, kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    """Each RayCluster's head pod (by the ray.io/cluster label KubeRay puts on it)."""
    heads: dict[str, dict[str, Any]] = {}
    for pod in _pods(namespace, kubectl, HEAD_SELECTOR):
        cluster = pod["metadata"].get("labels", {}).get("ray.io/cluster")
        if cluster:
            # A replaced head leaves its predecessor terminating; prefer the Running one.
            if cluster not in heads or head_state(pod)[0]:
                heads[cluster] = pod
    return heads


def _pods(namespace: str, kubectl: Kubectl, selector: str) -> list[dict[str, Any]]:
    pods = kubectl.get_json(["get", "pods", "--namespace", namespace, "-l", selector]).get("items", [])
    return [pod for pod in pods if pod.get("metadata", {}).get("deletionTimestamp") is None]


def workers_state(cluster: dict[str, Any], namespace: str, kubectl: Kubectl) -> tuple[int, int, str | None]:
    """The cluster's Ready workers, how many its groups ask for now (the autoscaler's replicas), and what keeps the
    first of the others from running."""
    name = cluster["metadata"]["name"]
    desired = sum(int(group.get("replicas") or 0) for group in cluster.get("spec", {}).get("workerGroupSpecs", []))
    pods = _pods(namespace, kubectl, f"ray.io/cluster={name},ray.io/node-type=worker")
    ready = [pod for pod in pods if _condition(pod, "Ready").get("status") == "True"]
    waiting = [pod for pod in pods if pod not in ready]
    problem = next((why for pod in waiting if (why := pod_problem(pod))), None)
    if waiting and problem is None:
        problem = f"worker pod {waiting[0]['metadata']['name']} is {waiting[0].get('status', {}).get('phase')}"
    return len(ready), desired, problem


def warnings(namespace: str, kubectl: Kubectl) -> dict[str, str]:
    """Each RayCluster's latest Warning event (KubeRay records through both event APIs; both are listed here)."""
    try:
        listing = kubectl.get_json(
            [
                "get",
                "events",
                "--namespace",
                namespace,
                "--field-selector",
                "type=Warning,involvedObject.kind=RayCluster",
            ]
        )
    except KubectlError:  # a user who may not list events waits without the operator's words
        return {}
    latest: dict[str, tuple[str, str]] = {}
    for event in listing.get("items", []):
        when = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp") or ""
        name = event.get("involvedObject", {}).get("name")
        if name and when >= latest.get(name, ("", ""))[0]:
            latest[name] = (when, f"Warning {event.get('reason')}: {event.get('message', '').strip()}")
    return {name: said for name, (_, said) in latest.items()}


def unreconciled(cluster: dict[str, Any], namespace: str) -> str | None:
    """Said when no KubeRay operator has looked at the cluster ``UNRECONCILED_AFTER_S`` after it was made (it never
    records ``status.observedGeneration``): none runs, or none watches this namespace."""
    if cluster.get("status", {}).get("observedGeneration") is not None:
        return None
    made = cluster["metadata"].get("creationTimestamp")
    age = time.time() - datetime.datetime.fromisoformat(made.replace("Z", "+00:00")).timestamp() if made else 0
    return (
        f"no KubeRay operator is reconciling namespace {namespace} ({age:.0f} s on)"
        if age > UNRECONCILED_AFTER_S
        else None
    )


def wait_for_heads(
    names: list[str], namespace: str, kubectl: Kubectl, timeout_s: float = 600.0, poll_s: float = 2.0
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Wait until each RayCluster of ``names`` has a Ready head with an IP, for ``timeout_s`` at most: the Ready
    head Pods, and why each other cluster is not ready (empty once all are), in the words of the operator (its
    Warning events), of the head's containers or of the scheduler. A kubectl call that fails (a blip of the API
    server) is tried again at the next poll, twice, before the wait gives up."""
    deadline = time.monotonic() + timeout_s
    last_report = ""
    failures = 0
    while True:
        try:
            heads, waiting = _look(names, namespace, kubectl)
            failures = 0
        except KubectlError as error:
            failures += 1
            if failures > 2 or time.monotonic() >= deadline:
                raise
            logger.info("%s; trying again", error)
            time.sleep(poll_s)
            continue
        ready = {name: heads[name] for name in names if name not in waiting}
        if not waiting or time.monotonic() >= deadline:
            return ready, waiting
        report = "; ".join(f"{name}: {why}" for name, why in sorted(waiting.items()))
        if report != last_report:
            logger.info("waiting for %d of %d cluster(s): %s", len(waiting), len(names), report)
            last_report = report
        time.sleep(poll_s)


def _look(names: list[str], namespace: str, kubectl: Kubectl) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The head Pods, and why each cluster of ``names`` that is not ready waits."""
    heads = head_pods(namespace, kubectl)
    states = {name: head_state(heads.get(name)) for name in names}
    waiting = {name: why for name, (ready, why) in states.items() if not ready}
    if waiting:
        clusters = {item["metadata"]["name"]: item for item in our_clusters(namespace, kubectl)}
        warned = warnings(namespace, kubectl)
        for name in waiting:
            cluster = clusters.get(name)
            if cluster is None:
                waiting[name] = f"RayCluster {name} no longer exists"
            elif heads.get(name) is None and (said := warned.get(name) or unreconciled(cluster, namespace)):
                waiting[name] = said  # the operator's own word on why it makes no head, or that none is there
    return heads, waiting


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
            auth.save_token([cluster.dashboard_url, *filter(None, [cluster.gcs_address])], token)


def service_addresses(names: list[str], namespace: str, record: HostRecord) -> list[ClusterAddress]:
    """Each cluster's head Service by its DNS name, in name order: the address a job inside the cluster reaches it
    at, which stays true when the head Pod is replaced (its IP does not)."""
    return [
        ClusterAddress(
            name,
            f"http://{service_host(name, namespace)}:{DASHBOARD_PORT}",
            record,
            gcs_address=f"{service_host(name, namespace)}:{GCS_PORT}",
        )
        for name in sorted(names)
    ]


def service_host(name: str, namespace: str) -> str:
    return f"{name}-head-svc.{namespace}.svc.cluster.local"


@dataclass
class PortForwards:
    """``kubectl port-forward`` processes we started, one process group each: the ``addresses`` they serve, and
    the clusters' own (``in_cluster``), which stand in the address file again once forwarding stops."""

    addresses: list[ClusterAddress]
    processes: list[Popen[str]] = field(default_factory=list)
    in_cluster: list[ClusterAddress] = field(default_factory=list)

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
