"""The KubeRay host: RayClusters in one namespace, through ``kubectl`` (the user's own configuration, contexts
and auth plugins; ``kubectl apply`` as the design asks; ``port-forward`` needs it anyway).

``manifest`` renders a RayCluster from ``cluster_configs/<template>/kuberay.yaml.jinja``, ``crd_schema`` checks
it offline as the API server would, ``clusters`` applies, lists and deletes our RayClusters and their token
Secret, ``heads`` waits for their head Pods and forwards ports to them. ``KubeRayHost`` offers the verbs of
every host (``ray_workflow.hosts``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ray_workflow import auth
from ray_workflow.address_file import ClusterAddress, HostRecord
from ray_workflow.errors import setting
from ray_workflow.hosts import ClusterStatus, NotReady, Rendered, Started
from ray_workflow.hosts.kuberay import clusters, heads
from ray_workflow.hosts.kuberay.kubectl import Kubectl
from ray_workflow.hosts.kuberay.manifest import ClusterSpec, render
from ray_workflow.names import KUBERNETES, check_cluster_name, is_member


class KubeRayHost:
    """Our RayClusters in ``namespace``, through ``kubectl``; ``crd_file`` is the CRD to check manifests against
    (default: the live one, else the bundled one)."""

    kind = "RayCluster"
    name_rule = KUBERNETES

    def __init__(self, namespace: str, kubectl: Kubectl, crd_file: Path | None = None) -> None:
        self.namespace, self.kubectl, self.crd_file = namespace, kubectl, crd_file
        self.scope = f" in namespace {namespace}"

    @property
    def record(self) -> HostRecord:
        return HostRecord.of("kuberay", namespace=self.namespace, context=self.kubectl.context)

    @classmethod
    def from_record(cls, record: HostRecord) -> KubeRayHost:
        return cls(record.get("namespace") or "default", Kubectl(record.get("context")))

    def render(self, spec: ClusterSpec, names: list[str]) -> list[Rendered]:
        rendered = []
        for name in names:
            manifest = render(dataclasses.replace(spec, name=name))
            rendered.append(Rendered(name, clusters.to_yaml([manifest]), manifest))
        return rendered

    def check(self, rendered: list[Rendered], offline: bool) -> str:
        validator, source = clusters.load_validator(self.crd_file, None if offline else self.kubectl)
        clusters.validate([cluster.document for cluster in rendered], validator)
        secrets = sorted({name for cluster in rendered if (name := clusters.secret_name(cluster.document))})
        shared = f", with Secret {', '.join(secrets)} holding your Ray token (not shown)" if secrets else ""
        return f"validated against {source}{shared}"

    def start(self, rendered: list[Rendered]) -> Started:
        manifests = [cluster.document for cluster in rendered]
        token = auth.user_token().value if any(clusters.secret_name(manifest) for manifest in manifests) else None
        said = clusters.apply(manifests, self.namespace, self.kubectl, token).splitlines()
        names = [cluster.name for cluster in rendered]
        created = [name for name in names if f"raycluster.ray.io/{name} created" in said]
        return Started(names=names, new=created, said=said)

    def wait_ready(self, names: list[str], timeout_s: float) -> list[ClusterAddress]:
        found, waiting = heads.wait_for_heads(names, self.namespace, self.kubectl, timeout_s)
        addresses = heads.pod_addresses(found, self.record)
        heads.keep_tokens(found, addresses, self.namespace, self.kubectl)
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
            heads.keep_tokens(found, forwards.addresses, self.namespace, self.kubectl)
        except BaseException:
            forwards.stop()
            raise
        forwards.addresses = [dataclasses.replace(address, host=self.record) for address in forwards.addresses]
        return forwards

    def status(self, name: str | None = None) -> list[ClusterStatus]:
        if name is not None:
            check_cluster_name(name)
        ours = clusters.our_clusters(self.namespace, self.kubectl)
        ours = [cluster for cluster in ours if name is None or is_member(cluster["metadata"]["name"], name)]
        found = heads.head_pods(self.namespace, self.kubectl) if ours else {}
        statuses = []
        for cluster in ours:
            cluster_name = cluster["metadata"]["name"]
            ready, why = heads.head_state(found.get(cluster_name))
            state = cluster.get("status", {}).get("state") or ("ready" if ready else "pending")
            statuses.append(ClusterStatus(cluster_name, state, f"head {why}" if ready else why))
        return statuses

    def why_ended(self, name: str) -> str | None:
        listed = [cluster["metadata"]["name"] for cluster in clusters.our_clusters(self.namespace, self.kubectl)]
        return None if name in listed else f"RayCluster {name} no longer exists{self.scope}"

    def down(self, names: list[str]) -> list[ClusterStatus]:
        deleted = clusters.delete(names, self.namespace, self.kubectl)
        return [ClusterStatus(name, "deleted", "", alive=False) for name in deleted]

