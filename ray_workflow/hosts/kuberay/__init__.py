"""The KubeRay host: RayClusters in one namespace, through ``kubectl`` (the user's own configuration, contexts
and auth plugins; ``kubectl apply`` as the design asks; ``port-forward`` needs it anyway).

``manifest`` renders a RayCluster from ``cluster_configs/<template>/kuberay.yaml.jinja``, ``crd_schema`` checks
it offline as the API server would, ``clusters`` applies, lists and deletes our RayClusters and their token
Secret, ``heads`` waits for their head Pods and forwards ports to them. ``KubeRayHost`` offers the verbs of
every host (``ray_workflow.hosts``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from pathlib import Path

from ray_workflow import auth
from ray_workflow.address_file import ClusterAddress, HostRecord
from ray_workflow.auth import Owner
from ray_workflow.errors import setting
from ray_workflow.hosts import ClusterStatus, NotReady, Rendered, Started
from ray_workflow.hosts.kuberay import clusters, heads
from ray_workflow.hosts.kuberay.kubectl import Kubectl
from ray_workflow.hosts.kuberay.manifest import ClusterSpec, render
from ray_workflow.names import KUBERNETES, check_cluster_name, is_member

logger = logging.getLogger(__name__)


class KubeRayHost:
    """Our RayClusters in ``namespace``, through ``kubectl``; ``crd_file`` is the CRD to check manifests against
    (default: the live one, else the bundled one)."""

    kind = "RayCluster"
    name_rule = KUBERNETES

    def __init__(
        self,
        namespace: str,
        kubectl: Kubectl,
        crd_file: Path | None = None,
        everyone: bool = False,
        restart: bool = False,
    ) -> None:
        """``everyone``: act on every owner's RayClusters of ours in the namespace, not only this user's;
        ``restart``: let a launch that changes a running cluster restart its Pods (ending its jobs)."""
        self.namespace, self.kubectl, self.crd_file = namespace, kubectl, crd_file
        self.everyone, self.restart = everyone, restart
        self.scope = f" in namespace {namespace}"

    @functools.cached_property
    def owner(self) -> Owner:
        """The person acting: their clusters are the ones status, wait and down see (and their token Secret)."""
        return auth.owner()

    def _mine(self, cluster: dict) -> bool:
        return self.everyone or clusters.owner_of(cluster) == self.owner.id

    @property
    def record(self) -> HostRecord:
        return HostRecord.of("kuberay", namespace=self.namespace, context=self.kubectl.context)

    @classmethod
    def from_record(cls, record: HostRecord) -> KubeRayHost:
        return cls(record.get("namespace") or "default", Kubectl(record.get("context")))

    def render(self, spec: ClusterSpec, names: list[str]) -> list[Rendered]:
        rendered = []
        for name in names:
            manifest = render(dataclasses.replace(spec, name=name, owner=self.owner))
            rendered.append(Rendered(name, clusters.to_yaml([manifest]), manifest))
        return rendered

    def check(self, rendered: list[Rendered], offline: bool) -> str:
        validator, source = clusters.load_validator(self.crd_file, None if offline else self.kubectl)
        clusters.validate([cluster.document for cluster in rendered], validator)
        if not offline:
            self._check_against_live(rendered)
        secrets = sorted({name for cluster in rendered if (name := clusters.secret_name(cluster.document))})
        shared = f", with Secret {', '.join(secrets)} holding your Ray token (not shown)" if secrets else ""
        return f"validated against {source}{shared}"

    def _check_against_live(self, rendered: list[Rendered]) -> None:
        """Before anything is applied: a name another person's cluster holds is theirs, and a change that would
        restart one of ours (ending its jobs) needs ``restart``; what will restart, and why, is said."""
        live = self._live()
        for cluster in rendered:
            found = live.get(cluster.name)
            if found is None:
                continue
            if not self._mine(found):
                raise clusters.KubeRayInputError(
                    f"RayCluster {cluster.name}{self.scope} belongs to {clusters.owner_said(found)}, not you: "
                    f"choose another {setting('name')}, or {setting('adopt')} to take it over"
                )
            if reasons := clusters.restart_reasons(found, cluster.document):
                if not self.restart:
                    raise clusters.KubeRayInputError(
                        f"re-applying RayCluster {cluster.name}{self.scope} would restart its Pods, ending any job "
                        f"running there ({'; '.join(reasons)}): give {setting('restart')} to go on"
                    )
                logger.warning("RayCluster %s restarts its Pods: %s", cluster.name, "; ".join(reasons))

    def _live(self) -> dict[str, dict]:
        """Every RayCluster of ours in the namespace (every owner's), by name."""
        return {cluster["metadata"]["name"]: cluster for cluster in clusters.our_clusters(self.namespace, self.kubectl)}

    def start(self, rendered: list[Rendered]) -> Started:
        live = self._live()
        manifests = [copy.deepcopy(cluster.document) for cluster in rendered]
        for manifest in manifests:
            if manifest["metadata"]["name"] in live:
                clusters.keep_replicas(live[manifest["metadata"]["name"]], manifest)
        token = auth.user_token().value if any(clusters.secret_name(manifest) for manifest in manifests) else None
        said = clusters.apply(manifests, self.namespace, self.kubectl, self.owner, token).splitlines()
        names = [cluster.name for cluster in rendered]
        created = [name for name in names if f"raycluster.ray.io/{name} created" in said]
        return Started(names=names, new=created, said=said)

    def wait_ready(self, names: list[str], timeout_s: float) -> list[ClusterAddress]:
        found, waiting = heads.wait_for_heads(names, self.namespace, self.kubectl, timeout_s)
        addresses = heads.service_addresses(list(found), self.namespace, self.record)
        heads.keep_tokens(found, addresses, self.namespace, self.kubectl)
        live = self._live() if found else {}
        for name in sorted(set(found) & set(live)):
            ready, desired, problem = heads.workers_state(live[name], self.namespace, self.kubectl)
            if ready < desired:
                logger.warning(
                    "RayCluster %s is ready, but not all its workers: %d/%d: %s", name, ready, desired, problem
                )
        if waiting:
            left = f"they stay{self.scope}: end them with {setting('down')}, or let the grok script wait again"
            raise NotReady(f"{heads.waiting_report(waiting, timeout_s)}; {left}", addresses)
        return addresses

    def port_forward(self, names: list[str], timeout_s: float) -> heads.PortForwards:
        """Once each cluster is Ready, a local port forwarded to its dashboard, its token kept for that address."""
        found, waiting = heads.wait_for_heads(names, self.namespace, self.kubectl, timeout_s)
        if waiting:
            raise clusters.KubeRayError(heads.waiting_report(waiting, timeout_s))
        forwards = heads.port_forward(names, self.namespace, self.kubectl)
        try:
            forwards.addresses = [dataclasses.replace(address, host=self.record) for address in forwards.addresses]
            forwards.in_cluster = heads.service_addresses(names, self.namespace, self.record)
            heads.keep_tokens(found, [*forwards.addresses, *forwards.in_cluster], self.namespace, self.kubectl)
        except BaseException:
            forwards.stop()
            raise
        return forwards

    def status(self, name: str | None = None) -> list[ClusterStatus]:
        """Each of our clusters as its Pods show it: ``ready`` once its head is Ready and every worker its groups
        ask for is too, else what keeps the head (``starting``) or a worker (``workers waiting``) from running."""
        if name is not None:
            check_cluster_name(name)
        ours = [
            cluster
            for cluster in clusters.our_clusters(self.namespace, self.kubectl)
            if self._mine(cluster) and (name is None or is_member(cluster["metadata"]["name"], name))
        ]
        found = heads.head_pods(self.namespace, self.kubectl) if ours else {}
        warned = heads.warnings(self.namespace, self.kubectl) if ours else {}
        statuses = []
        for cluster in ours:
            cluster_name = cluster["metadata"]["name"]
            ready, why = heads.head_state(found.get(cluster_name))
            if not ready and found.get(cluster_name) is None:
                why = warned.get(cluster_name) or heads.unreconciled(cluster, self.namespace) or why
            if not ready:
                statuses.append(ClusterStatus(cluster_name, "starting", why))
                continue
            ready_workers, desired, problem = heads.workers_state(cluster, self.namespace, self.kubectl)
            detail = f"head {why}, workers {ready_workers}/{desired} ready"
            if ready_workers < desired:
                statuses.append(ClusterStatus(cluster_name, "workers waiting", f"{detail}: {problem}"))
            else:
                statuses.append(ClusterStatus(cluster_name, "ready", detail))
        return statuses

    def why_ended(self, name: str) -> str | None:
        listed = [cluster["metadata"]["name"] for cluster in clusters.our_clusters(self.namespace, self.kubectl)]
        return None if name in listed else f"RayCluster {name} no longer exists{self.scope}"

    def down(self, names: list[str]) -> list[ClusterStatus]:
        deleted = clusters.delete(names, self.namespace, self.kubectl, self.owner, self.everyone)
        return [ClusterStatus(name, "deleted", "", alive=False) for name in deleted]
