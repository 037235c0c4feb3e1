"""What the KubeRay tests share: a test's namespace on the real control plane (``Namespace``), the cluster specs
and launch flags they use, and helpers that ask the API server. The control plane itself is ``conftest.py``'s
``control_plane`` fixture (one per test session) and a test's namespace its ``kube`` fixture."""

import base64
import dataclasses
import json
from pathlib import Path

import k8s_harness
import yaml
from conftest import PROJECT_ROOT, wait_for

from launch import main as launch_main
from ray_workflow.grok import main as discovery_main
from ray_workflow.hosts.kuberay import manifest as km
from ray_workflow.names import KUBERAY_OWNER_LABEL, OWNER

CRD = PROJECT_ROOT / "cluster_configs" / "kuberay_crd" / "ray.io_rayclusters.yaml"  # the bundled copy
RAY_VERSION = km.PINNED_RAY  # the Ray pinned in pyproject.toml, which the Dockerfile installs
OURS = {KUBERAY_OWNER_LABEL: OWNER}


class Namespace:
    """One test's namespace on the real control plane, and what the API server says is in it."""

    def __init__(self, plane: k8s_harness.KubernetesForTests, name: str) -> None:
        self.plane, self.name = plane, name

    def kubectl(self, *args: str, **options) -> str:
        return self.plane.kubectl(*args, "--namespace", self.name, **options)

    def items(self, kind: str, selector: str | None = None) -> list[dict]:
        args = ["get", kind, "-o", "json", *(["-l", selector] if selector else [])]
        return json.loads(self.kubectl(*args))["items"]

    def names(self, kind: str, selector: str | None = None) -> list[str]:
        return sorted(item["metadata"]["name"] for item in self.items(kind, selector))

    def clusters(self) -> dict[str, dict]:
        return {item["metadata"]["name"]: item for item in self.items("rayclusters.ray.io")}

    def apply(self, document: dict) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(document))

    def foreign_cluster(self, name: str, labels: dict[str, str]) -> None:
        """A RayCluster someone else made: rendered like ours, with their labels."""
        small = (km.WorkerGroup(min_workers=0, max_workers=1, gpus=0, cpus=1, ram_gb=2, accelerator=None),)
        cluster = spec(name=name, namespace=self.name, head_cpus=1, head_ram_gb=2, worker_groups=small)
        manifest = km.render(dataclasses.replace(cluster, template="local", token_auth=False))
        manifest["metadata"]["labels"] = labels
        self.apply(manifest)


def spec(**changes):
    fields = dict(
        template="google_cloud",
        name="tuner",
        namespace="ns",
        image="nvcr.io/isaac-lab:2.0",
        ray_version=RAY_VERSION,
        head_cpus=8,
        head_ram_gb=32,
        worker_groups=(
            km.WorkerGroup(min_workers=1, max_workers=4, gpus=1, cpus=8, ram_gb=32, accelerator="nvidia-l4"),
        ),
    )
    fields.update(changes)
    return km.ClusterSpec(**fields)


GROUP_SETS = [
    (km.WorkerGroup(min_workers=0, max_workers=4, gpus=1, cpus=8, ram_gb=32, accelerator="nvidia-l4"),),
    (
        km.WorkerGroup(min_workers=2, max_workers=2, gpus=2, cpus=16, ram_gb=64, accelerator="nvidia-tesla-a100"),
        km.WorkerGroup(min_workers=0, max_workers=8, gpus=0, cpus=4, ram_gb=8, accelerator=None),
    ),
    (km.WorkerGroup(min_workers=0, max_workers=0, gpus=0, cpus=0.5, ram_gb=1.5, accelerator=None),),
]


def launch(*args: str) -> int:
    """launch.py checked against the bundled CRD, returning once the clusters are applied."""
    return launch_main(["--crd", str(CRD), "--no_wait", *args])


# Small clusters (one CPU head, no workers), so that many fit on the KWOK nodes at once.
SMALL = ("--num_head_cpu", "1", "--head_ram_gb", "2", "--min_workers", "0")


SEED_NAMES = [f"isaac-lab-hyperparameter-tuner-{i}" for i in (1, 2, 3)]


def running_pods(kube: Namespace, count: int) -> list[dict]:
    """The namespace's Pods once ``count`` of them are Running (the operator made them, KWOK runs them)."""

    def all_running():
        pods = kube.items("pods")
        return pods if sum(pod["status"].get("phase") == "Running" for pod in pods) == count else None

    return wait_for(all_running, 120, f"{count} Running pods in {kube.name}")


def namespace_user(kube: Namespace, tmp_path: Path, user: str = "viewer") -> Path:
    """A kubeconfig for ``user``, who may do what a Role in this namespace allows and nothing cluster-wide."""
    config = yaml.safe_load(kube.plane.kubeconfig.read_text())
    config["users"] = [{"name": user, "user": {"token": kube.plane.tokens[user]}}]
    config["contexts"][0]["context"]["user"] = user
    path = tmp_path / f"{user}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def grok(*args):
    return discovery_main(["kubectl", *args])


def head_endpoint(kube: Namespace, cluster: str) -> str:
    """The head Service's dashboard address, as a job inside the cluster reaches it by DNS, once the Service routes
    to a Ready head (its EndpointSlice says so)."""
    service = kube.items("services", f"ray.io/cluster={cluster},ray.io/node-type=head")
    (port,) = [port["port"] for svc in service for port in svc["spec"]["ports"] if port["name"] == "dashboard"]
    (endpoints,) = kube.items("endpointslices", f"kubernetes.io/service-name={cluster}-head-svc")
    (endpoint,) = endpoints["endpoints"]
    assert endpoint["conditions"]["ready"] is True
    return f"http://{cluster}-head-svc.{kube.name}.svc.cluster.local:{port}"


def secret_token(kube: Namespace, name: str) -> str:
    secret = json.loads(kube.kubectl("get", "secret", name, "-o", "json"))
    return base64.b64decode(secret["data"]["auth_token"]).decode()


def head_spec(manifest):
    return manifest["spec"]["headGroupSpec"]


def head_container(manifest):
    return head_spec(manifest)["template"]["spec"]["containers"][0]


def first_group(manifest):
    return manifest["spec"]["workerGroupSpecs"][0]


def head_limits(manifest):
    return head_container(manifest).setdefault("resources", {}).setdefault("limits", {})
