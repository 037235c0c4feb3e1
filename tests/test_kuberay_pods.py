"""KubeRay clusters whose Pods really run Ray: ``launch.py`` against the real control plane and a real node beside
the KWOK GPU nodes (tests/k8s_node.py: containerd, runc, kubelet, kube-proxy, CNI, CoreDNS, and the Ray image
k8s/ray-image.sh builds), all built by ``make k8s``. The KubeRay operator makes the Pods from our manifests; the
kubelet starts them, KubeRay's probes decide when they are Ready, and the workers find the head by its Service's DNS
name. What the tests check, they ask of Ray in the Pods, of the API server or of containerd.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import k8s_harness
import k8s_node
import pytest
from conftest import PROJECT_ROOT, wait_for
from kube import CRD, Namespace
from ray.job_submission import JobSubmissionClient

from launch import main as launch_main
from ray_workflow import address_file, auth
from ray_workflow.grok import main as discovery_main


def _missing() -> str | None:
    return k8s_harness.missing() or k8s_node.missing(k8s_harness.binaries())


@pytest.fixture(scope="module")
def real_node():
    """The control plane and the real node (``k8s_node.control_plane_with_real_node``); afterwards nothing of the
    node may be left on the machine."""
    reason = _missing()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the real-node tests: {reason}")
    if reason:
        pytest.skip(reason)
    with k8s_node.control_plane_with_real_node(k8s_harness.binaries()) as (plane, node):
        yield plane, node
    assert node.leftovers() == []


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
        namespace, "isaaclab-ray.local/ray:not-built", "--name", "nopull", "--min_workers", "0", "--timeout_s", "40"
    )
    said = capsys.readouterr().err
    assert code != 0
    assert "ErrImagePull" in said or "ImagePullBackOff" in said, said
    assert launch_main(["--down", "--namespace", namespace.name, "--name", "nopull"]) == 0


# Two actors of one CPU each: one fits on the head (1 CPU), the other only on a worker the autoscaler must add.
TWO_NODES_JOB = """
import ray
ray.init()

@ray.remote(num_cpus=1)
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id()

print("nodes used:", len({ray.get(actor.node.remote()) for actor in [Where.remote(), Where.remote()]}))
"""


def _job_succeeded(namespace: Namespace, cluster: str, address: str, submission_id: str) -> bool:
    said = _in_head(namespace, cluster, "ray", "job", "status", "--address", address, submission_id)
    assert f"Job '{submission_id}' failed" not in said and f"Job '{submission_id}' was stopped" not in said, said
    return f"Job '{submission_id}' succeeded" in said


def test_with_no_workers_a_job_that_needs_one_makes_the_autoscaler_add_it_and_idle_it_goes(
    real_node, namespace, tmp_path
):
    _, node = real_node
    addresses = tmp_path / "ray_address"
    assert (
        _launch(
            namespace,
            node.image,
            "--name",
            "scales",
            "--min_workers",
            "0",
            "--idle_timeout_s",
            "20",
            "--timeout_s",
            "300",
            "--address_file",
            str(addresses),
        )
        == 0
    )
    (cluster,) = address_file.read(addresses)
    assert namespace.items("pods", "ray.io/cluster=scales,ray.io/node-type=worker") == []

    _in_head(
        namespace,
        "scales",
        "ray",
        "job",
        "submit",
        "--no-wait",
        "--address",
        cluster.dashboard_url,
        "--submission-id",
        "two-nodes",
        "--",
        "python",
        "-c",
        TWO_NODES_JOB,
    )
    wait_for(
        lambda: _job_succeeded(namespace, "scales", cluster.dashboard_url, "two-nodes"),
        300,
        "the job, once the autoscaler's worker joined",
    )
    logs = _in_head(namespace, "scales", "ray", "job", "logs", "--address", cluster.dashboard_url, "two-nodes")
    assert "nodes used: 2" in logs
    # The sidecar raised the group's replicas (our manifest said 0) and the operator made the worker for it.
    assert "Created worker Pod" in namespace.kubectl("get", "events", "--field-selector", "reason=CreatedWorkerPod")
    (cluster_object,) = namespace.items("rayclusters.ray.io")
    assert cluster_object["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 20
    # Idle for --idle_timeout_s, the worker goes (well before the default 120 s), and its containers with it.
    wait_for(
        lambda: not namespace.items("pods", "ray.io/cluster=scales,ray.io/node-type=worker"),
        90,
        "the idle worker removed by the autoscaler",
    )
    assert (
        launch_main(["--down", "--namespace", namespace.name, "--name", "scales", "--address_file", str(addresses)])
        == 0
    )
    wait_for(lambda: not node.containers(), 180, "no container left in containerd")


def test_through_launch_port_forward_ray_job_submit_and_multicluster_submit_run_the_cluster_check_in_the_pods(
    real_node, namespace, tmp_path
):
    """The design's step 4 as a user types it, from outside the cluster network: ``launch.py --port_forward``
    forwards through the real kubelet, and ``ray job submit --working-dir .`` and ``multicluster_submit.py`` send
    the cluster check, which runs in the head Pod. Our Ray image has no torch (a training image has), so the check
    must fail there, naming it; both say so, and the head's own job list holds both jobs as FAILED."""
    _, node = real_node
    addresses = tmp_path / "ray_address"
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "launch.py"), "--crd", str(CRD), "--cluster_host", "local",
         "--namespace", namespace.name, "--image", node.image, "--name", "fwd", *SMALL_REAL, "--min_workers", "0",
         "--timeout_s", "300", "--port_forward", "--address_file", str(addresses)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        for line in process.stdout:
            if "Ctrl-C stops forwarding" in line:
                break
        (forwarded,) = address_file.read(addresses)
        assert forwarded.dashboard_url.startswith("http://127.0.0.1:")
        check = ["test_kuberay_config.py", "--num_jobs", "1", "--gpus_per_job", "0", "--allow_missing_nvidia_smi"]
        ray = str(Path(sys.executable).parent / "ray")  # Ray's CLI, as the README's one-time set-up leaves it
        by_ray = subprocess.run(
            [ray, "job", "submit", "--working-dir", ".", "--address", forwarded.dashboard_url, "--", "python", *check],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "token"},
        )  # fmt: skip
        said = by_ray.stdout + by_ray.stderr
        assert by_ray.returncode != 0 and re.search(
            r"task 0 on fwd-head-\w+ \(10\.88\.[\d.]+\): cannot import torch", said
        )
        assert "3.11.2 /opt/ray/bin/python3" in said, said  # the image's Python, not this machine's
        by_us = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(addresses),
             " ".join(check)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert by_us.returncode != 0 and "cannot import torch" in by_us.stdout + by_us.stderr, by_us.stdout
        submitted = set(re.findall(r"raysubmit_\w+", said + by_us.stdout + by_us.stderr))
        client = JobSubmissionClient(forwarded.dashboard_url, headers=auth.http_headers(forwarded.dashboard_url))
        jobs = {job.submission_id: job.status.value for job in client.list_jobs()}
        assert len(submitted) == 2 and {job: jobs.get(job) for job in submitted} == dict.fromkeys(submitted, "FAILED")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.communicate(timeout=60)
    assert (
        launch_main(["--down", "--namespace", namespace.name, "--name", "fwd", "--address_file", str(addresses)]) == 0
    )
    wait_for(lambda: not node.containers(), 180, "no container left in containerd")


LONG_JOB = "import time; print('started', flush=True); time.sleep(600)"


def test_a_deleted_head_pod_comes_back_under_the_same_address_and_the_running_job_is_gone_from_its_list(
    real_node, namespace, tmp_path
):
    """What KubeRay and Ray do when the head Pod goes (no GCS fault tolerance, as our manifests ask for none): the
    operator makes a new head Pod, Ray on it starts empty (the running job is gone from the job list), and the
    address in the address file (the head Service's name) takes jobs again. The grok script finds the new head."""
    _, node = real_node
    addresses = tmp_path / "ray_address"
    assert _launch(namespace, node.image, "--name", "lost", "--min_workers", "0", "--timeout_s", "300",
                   "--address_file", str(addresses)) == 0  # fmt: skip
    (cluster,) = address_file.read(addresses)
    _in_head(namespace, "lost", "ray", "job", "submit", "--no-wait", "--address", cluster.dashboard_url,
             "--submission-id", "long", "--", "python", "-c", LONG_JOB)  # fmt: skip
    wait_for(lambda: "started" in _in_head(namespace, "lost", "ray", "job", "logs", "--address",
                                           cluster.dashboard_url, "long"), 120, "the long job running")  # fmt: skip
    old_head = _pod(namespace, "lost", "head")["metadata"]["name"]
    namespace.kubectl("delete", "pod", old_head, "--wait=false")

    def new_head_ready() -> bool:
        pods = namespace.items("pods", "ray.io/cluster=lost,ray.io/node-type=head")
        return any(
            pod["metadata"]["name"] != old_head and pod.get("metadata", {}).get("deletionTimestamp") is None
            and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
            for pod in pods
        )  # fmt: skip

    wait_for(new_head_ready, 300, "a new head Pod Ready")
    found = tmp_path / "found"
    assert discovery_main(["kubectl", "--namespace", namespace.name, "--output", str(found), "--timeout_s", "120"]) == 0
    assert address_file.read(found) == [cluster]  # the same address: the Service follows the new head
    said = _in_head(namespace, "lost", "ray", "job", "list", "--address", cluster.dashboard_url)
    assert "long" not in said, said  # Ray's job list starts empty with a new GCS
    said = _in_head(namespace, "lost", "ray", "job", "submit", "--address", cluster.dashboard_url, "--",
                    "python", "-c", "print('after the new head')")  # fmt: skip
    assert "after the new head" in said and "succeeded" in said, said
    assert launch_main(["--down", "--namespace", namespace.name, "--name", "lost",
                        "--address_file", str(addresses)]) == 0  # fmt: skip
    wait_for(lambda: not node.containers(), 180, "no container left in containerd")
