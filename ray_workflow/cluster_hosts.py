"""The two kinds of host launch.py drives, KubeRay (through kubectl) and SLURM (through sbatch), behind one face.

Both take the same verbs, with the same meanings and types:

- ``render(count)``: the text each cluster starts from (a RayCluster manifest, a batch script), by name;
- ``check(rendered, offline)``: refuse what the host would refuse, before anything starts (the RayCluster CRD, the
  live one unless offline; ``sbatch --test-only`` unless offline); says how they were checked;
- ``start(rendered)``: apply or submit them all, or none; lines saying what the host did;
- ``wait_ready(timeout_s)``: until every cluster started answers; their addresses, for the address file;
- ``withdraw()``: undo ``start`` (Ctrl-C while waiting): what it deleted or cancelled;
- ``status()``: what the host says of our clusters now;
- ``down(name)``: delete or cancel ``name`` and its numbered clusters: what it deleted or cancelled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from ray_workflow import auth, discovery, kuberay, slurm
from ray_workflow.address_file import ClusterAddress
from ray_workflow.kubectl import Kubectl
from ray_workflow.kuberay_manifest import ClusterSpec, render
from ray_workflow.names import numbered_names


@dataclass(frozen=True)
class Rendered:
    """One cluster as its host receives it."""

    name: str
    text: str


@dataclass(frozen=True)
class ClusterStatus:
    """One of our clusters as its host sees it: ``state`` in the host's words, ``detail`` where and why."""

    name: str
    state: str
    detail: str


class ClusterHost(Protocol):
    kind: str  # what one cluster is to the host
    scope: str  # where the host looks for our clusters, for messages
    dry_run_note: str

    def joined(self, rendered: list[Rendered]) -> str: ...
    def render(self, count: int) -> list[Rendered]: ...
    def check(self, rendered: list[Rendered], offline: bool) -> str: ...
    def start(self, rendered: list[Rendered]) -> list[str]: ...
    def wait_ready(self, timeout_s: float) -> list[ClusterAddress]: ...
    def withdraw(self) -> list[ClusterStatus]: ...
    def status(self) -> list[ClusterStatus]: ...
    def down(self, name: str) -> list[ClusterStatus]: ...


class KubeRayHost:
    """RayClusters in one namespace, rendered from ``cluster_configs/<host>/kuberay.yaml.jinja``."""

    kind = "RayCluster"

    def __init__(self, cluster_host: str, spec: ClusterSpec, kubectl: Kubectl, crd_file: Path | None = None) -> None:
        self.cluster_host, self.spec, self.kubectl, self.crd_file = cluster_host, spec, kubectl, crd_file
        self.scope = f" in namespace {spec.namespace}"
        shares_token = spec.token_auth and spec.auth_secret is not None
        self.shared_secret = spec.auth_secret if shares_token else None
        self.dry_run_note = f" and Secret {spec.auth_secret} holding your Ray token (not shown)" if shares_token else ""
        self.created: list[str] = []
        self.started: list[str] = []

    def joined(self, rendered: list[Rendered]) -> str:
        return "---\n".join(cluster.text for cluster in rendered)

    def render(self, count: int) -> list[Rendered]:
        specs = [dataclasses.replace(self.spec, name=name) for name in numbered_names(self.spec.name, count)]
        return [Rendered(spec.name, kuberay.to_yaml([render(self.cluster_host, spec)])) for spec in specs]

    def check(self, rendered: list[Rendered], offline: bool) -> str:
        validator, source = kuberay.load_validator(self.crd_file, None if offline else self.kubectl)
        kuberay.validate([yaml.safe_load(cluster.text) for cluster in rendered], validator)
        return f"validated against {source}"

    def start(self, rendered: list[Rendered]) -> list[str]:
        token = auth.user_token().value if self.shared_secret else None
        manifests = [yaml.safe_load(cluster.text) for cluster in rendered]
        said = kuberay.apply(manifests, self.spec.namespace, self.kubectl, token).splitlines()
        self.started = [cluster.name for cluster in rendered]
        self.created = [name for name in self.started if f"raycluster.ray.io/{name} created" in said]
        return said

    def wait_ready(self, timeout_s: float) -> list[ClusterAddress]:
        heads = discovery.wait_for_heads(
            self.spec.namespace, self.kubectl, self.spec.name, timeout_s, among=self.started
        )
        clusters = discovery.pod_addresses(heads)
        discovery.keep_tokens(heads, clusters, self.spec.namespace, self.kubectl)
        return clusters

    def withdraw(self) -> list[ClusterStatus]:
        """Delete the clusters this launch created (those it reconfigured stay)."""
        deleted = kuberay.delete(self.created, self.spec.namespace, self.kubectl)
        return [ClusterStatus(name, "deleted", "") for name in deleted]

    def status(self) -> list[ClusterStatus]:
        heads = discovery.head_pods(self.spec.namespace, self.kubectl)
        found = []
        for cluster in kuberay.our_clusters(self.spec.namespace, self.kubectl):
            name = cluster["metadata"]["name"]
            ready, why = discovery.head_state(heads.get(name))
            state = cluster.get("status", {}).get("state") or ("ready" if ready else "pending")
            found.append(ClusterStatus(name, state, f"head {why}" if ready else why))
        return found

    def down(self, name: str) -> list[ClusterStatus]:
        return [
            ClusterStatus(deleted, "deleted", "") for deleted in kuberay.down(name, self.spec.namespace, self.kubectl)
        ]


class SlurmHost:
    """One SLURM job per cluster, rendered from ``cluster_configs/slurm/ray_cluster.sbatch.jinja``."""

    kind = "SLURM job"
    scope = ""
    dry_run_note = ""

    def __init__(self, spec: slurm.SlurmClusterSpec, state_dir: Path, log_dir: Path) -> None:
        self.spec, self.state_dir, self.log_dir = spec, state_dir, log_dir
        self.specs: dict[str, slurm.SlurmClusterSpec] = {}
        self.jobs: list[slurm.SlurmJob] = []

    def joined(self, rendered: list[Rendered]) -> str:
        return "".join(cluster.text for cluster in rendered)

    def render(self, count: int) -> list[Rendered]:
        self.specs = {spec.name: spec for spec in slurm.specs_for(self.spec, count)}
        return [Rendered(name, slurm.render(spec, self.state_dir, self.log_dir)) for name, spec in self.specs.items()]

    def check(self, rendered: list[Rendered], offline: bool) -> str:
        if offline:
            return "not checked by SLURM (sbatch --test-only runs before they are submitted)"
        slurm.check([(cluster.name, cluster.text) for cluster in rendered])
        return "accepted by sbatch --test-only"

    def start(self, rendered: list[Rendered]) -> list[str]:
        scripts = [(self.specs[cluster.name], cluster.text) for cluster in rendered]
        self.jobs = slurm.submit(scripts, self.state_dir, self.log_dir)
        return [f"submitted {job.name} (job {job.job_id})" for job in self.jobs]

    def wait_ready(self, timeout_s: float) -> list[ClusterAddress]:
        return slurm.wait_ready(self.jobs, self.state_dir, timeout_s)

    def withdraw(self) -> list[ClusterStatus]:
        slurm.withdraw(self.jobs, self.state_dir)
        return [ClusterStatus(job.name, "cancelled", f"job {job.job_id}") for job in self.jobs]

    def status(self) -> list[ClusterStatus]:
        return [
            ClusterStatus(job.name, job.state, " ".join(filter(None, [f"job {job.job_id}", job.nodes, job.reason])))
            for job in slurm.recorded(self.state_dir)
        ]

    def down(self, name: str) -> list[ClusterStatus]:
        return [ClusterStatus(job.name, "cancelled", f"job {job.job_id}") for job in slurm.cancel(name, self.state_dir)]
