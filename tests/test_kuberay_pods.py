"""KubeRay clusters whose Pods really run Ray: ``launch.py`` against the real control plane and a real node beside
the KWOK GPU nodes (tests/k8s_node.py: containerd, runc, kubelet, kube-proxy, CNI, CoreDNS, and the Ray image
k8s/ray-image.sh builds), all built by ``make k8s``. The KubeRay operator makes the Pods from our manifests; the
kubelet starts them, KubeRay's probes decide when they are Ready, and the workers find the head by its Service's DNS
name. What the tests check, they ask of Ray in the Pods, of the API server or of containerd.
"""

import os

import k8s_harness
import k8s_node
import pytest
from conftest import wait_for
from kube import CRD, Namespace

from launch import main as launch_main
from ray_workflow import address_file


def _missing() -> str | None:
    return k8s_harness.missing() or k8s_node.missing(k8s_harness.binaries())


@pytest.fixture(scope="module")
def real_node():
    """A control plane listening on the node's link, KWOK GPU nodes (no KWOK CPU node, so CPU Pods go to the real
    node), and the real node. Afterwards nothing of the node may be left on the machine."""
    reason = _missing()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the real-node tests: {reason}")
    if reason:
        pytest.skip(reason)
    network = k8s_node.NodeNetwork()
    plane = k8s_harness.KubernetesForTests(k8s_harness.binaries(), host=network.host_address, cpu_nodes=False)
    node = None
    try:
        network.create()
        plane.start()
        certificate = plane.root / "apiserver-certificates" / "apiserver.crt"
        node = k8s_node.RealNode(plane.bin, network, plane.server, plane.tokens["admin"], certificate)
        node.start()
        node.daemons.wait("the real node Ready", lambda: _ready(plane), timeout_s=120)
        yield plane, node
    finally:
        if node is not None:
            node.stop()
        plane.stop()
        network.delete()
    assert node.leftovers() == []


def _ready(plane: k8s_harness.KubernetesForTests) -> bool:
    jsonpath = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    return plane.kubectl("get", "node", k8s_node.NODE_NAME, "-o", jsonpath, check=False).strip() == "True"


@pytest.fixture
def namespace(real_node, monkeypatch, request) -> Namespace:
    plane, _ = real_node
    name = f"t{abs(hash(request.node.nodeid)) % 10**8}"
    plane.kubectl("create", "namespace", name)
    for variable, value in plane.environment.items():
        monkeypatch.setenv(variable, value)
    return Namespace(plane, name)


# What fits the 2-CPU node: a head of half a CPU beside KubeRay's autoscaler sidecar (half a CPU), one worker.
SMALL_REAL = (
    "--num_head_cpu",
    "0.5",
    "--head_ram_gb",
    "4",
    "--gpu_per_worker",
    "0",
    "--cpu_per_worker",
    "1",
    "--ram_gb_per_worker",
    "2",
    "--max_workers",
    "1",
)


def _launch(namespace: Namespace, image: str, *flags: str) -> int:
    return launch_main(
        [
            "--crd",
            str(CRD),
            "--cluster_host",
            "local",
            "--namespace",
            namespace.name,
            "--image",
            image,
            *SMALL_REAL,
            *flags,
        ]
    )


def _pod(namespace: Namespace, cluster: str, node_type: str) -> dict:
    (pod,) = namespace.items("pods", f"ray.io/cluster={cluster},ray.io/node-type={node_type}")
    return pod


def _in_head(namespace: Namespace, cluster: str, *command: str) -> str:
    head = _pod(namespace, cluster, "head")["metadata"]["name"]
    return namespace.plane.kubectl("exec", "--namespace", namespace.name, head, "-c", "ray-head", "--", *command)


ALIVE_NODES = "import ray; ray.init(address='auto'); print(sum(node['Alive'] for node in ray.nodes()))"


def test_launch_runs_ray_in_real_pods_a_worker_joins_by_the_service_name_and_down_leaves_no_container(
    real_node, namespace, tmp_path
):
    plane, node = real_node
    addresses = tmp_path / "ray_address"
    assert (
        _launch(
            namespace,
            node.image,
            "--name",
            "real",
            "--min_workers",
            "1",
            "--timeout_s",
            "300",
            "--address_file",
            str(addresses),
        )
        == 0
    )

    # launch.py waited for the head's Ready condition, which KubeRay's probes against Ray decide.
    head = _pod(namespace, "real", "head")
    assert head["spec"]["nodeName"] == k8s_node.NODE_NAME
    assert {c["name"]: c["ready"] for c in head["status"]["containerStatuses"]} == {
        "ray-head": True,
        "autoscaler": True,
    }
    (cluster,) = address_file.read(addresses)
    assert cluster.name == "real"

    # The worker joins the head through the head Service's DNS name, with the token from our Secret.
    wait_for(
        lambda: _in_head(namespace, "real", "python", "-c", ALIVE_NODES).strip() == "2",
        180,
        "the worker Pod's Ray node alive beside the head's",
    )
    worker = _pod(namespace, "real", "worker")
    assert worker["spec"]["nodeName"] == k8s_node.NODE_NAME
    # /dev/shm is the size our manifest asks for (half the head's memory), a tmpfs the kubelet mounted.
    assert _in_head(namespace, "real", "df", "--output=size", "-B", "1M", "/dev/shm").split()[-1] == "2048"

    # A job sent from inside the cluster, to the address the address file holds, runs on the cluster.
    script = "import ray; ray.init(); print('CPUs:', ray.cluster_resources()['CPU'])"
    said = _in_head(
        namespace, "real", "ray", "job", "submit", "--address", cluster.dashboard_url, "--", "python", "-c", script
    )
    assert "CPUs:" in said and "succeeded" in said, said

    # --down: the kubelet ends the Pods and containerd keeps no container of them.
    assert (
        launch_main(["--down", "--namespace", namespace.name, "--name", "real", "--address_file", str(addresses)]) == 0
    )
    wait_for(lambda: not node.containers() and not namespace.items("pods"), 180, "no container left in containerd")
    assert address_file.read(addresses) == []


def test_an_image_the_node_cannot_pull_is_named_by_launch_with_kubernetes_own_reason(real_node, namespace, capsys):
    code = _launch(
        namespace, "isaaclab-ray.local/ray:not-built", "--name", "nopull", "--min_workers", "0", "--timeout_s", "60"
    )
    said = capsys.readouterr().err
    assert code != 0
    assert "ErrImagePull" in said or "ImagePullBackOff" in said, said
    assert launch_main(["--down", "--namespace", namespace.name, "--name", "nopull"]) == 0
