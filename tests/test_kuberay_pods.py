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
from conftest import PROJECT_ROOT, needs, wait_for
from kube import CRD, Namespace
from ray.job_submission import JobSubmissionClient

from launch import main as launch_main
from ray_workflow import address_file, auth
from ray_workflow.grok import main as discovery_main

pytestmark = needs(k8s_harness.missing() or k8s_node.missing(k8s_harness.binaries()), "real-node tests")


@pytest.fixture(scope="module")
def real_node():
    """The control plane and the real node (``k8s_node.control_plane_with_real_node``); afterwards nothing of the
    node may be left on the machine."""
    with k8s_node.control_plane_with_real_node(k8s_harness.binaries()) as (plane, node):
        yield plane, node
    assert node.leftovers() == []


@pytest.fixture(scope="module")
def control_plane(real_node):
    """This module's control plane, the one beside the real node: conftest's ``kube`` makes each test's namespace
    on it."""
    return real_node[0]


def _launch_flags(kube: Namespace, image: str, name: str, addresses: Path) -> list[str]:
    """launch.py's flags for a small cluster on the real node (flags given after them win)."""
    return ["--crd", str(CRD), *k8s_node.SMALL_CLUSTER_FLAGS, "--namespace", kube.name, "--image", image,
            "--name", name, "--timeout_s", "300", "--address_file", str(addresses)]  # fmt: skip


def _launch(kube: Namespace, image: str, name: str, addresses: Path, *flags: str) -> int:
    return launch_main([*_launch_flags(kube, image, name, addresses), *flags])


def _down(kube: Namespace, node: k8s_node.RealNode, name: str, addresses: Path) -> None:
    """``launch.py --down``: the kubelet ends the Pods, and containerd keeps no container of them."""
    assert launch_main(["--down", "--namespace", kube.name, "--name", name, "--address_file", str(addresses)]) == 0
    wait_for(
        lambda: not node.containers() and not kube.items("pods", f"ray.io/cluster={name}"),
        180,
        "no Pod of the cluster, and no container left in containerd",
    )


def _pod(kube: Namespace, cluster: str, node_type: str) -> dict:
    (pod,) = kube.items("pods", f"ray.io/cluster={cluster},ray.io/node-type={node_type}")
    return pod


def _in_head(kube: Namespace, cluster: str, *command: str) -> str:
    head = _pod(kube, cluster, "head")["metadata"]["name"]
    return kube.plane.kubectl("exec", "--namespace", kube.name, head, "-c", "ray-head", "--", *command)


def test_launch_runs_ray_in_real_pods_a_worker_joins_by_the_service_name_and_down_leaves_no_container(
    real_node, kube, tmp_path
):
    _, node = real_node
    addresses = tmp_path / "ray_address"
    assert _launch(kube, node.image, "real", addresses, "--min_workers", "1") == 0

    # launch.py waited for the head's Ready condition, which KubeRay's probes against Ray decide.
    head = _pod(kube, "real", "head")
    assert head["spec"]["nodeName"] == k8s_node.NODE_NAME
    containers = {c["name"]: c["ready"] for c in head["status"]["containerStatuses"]}
    assert containers == {"ray-head": True, "autoscaler": True}
    (cluster,) = address_file.read(addresses)
    assert cluster.name == "real"

    # The worker joins the head through the head Service's DNS name, with the token from our Secret.
    wait_for(
        lambda: _in_head(kube, "real", "python", "-c", k8s_node.ALIVE_NODES).strip() == "2",
        180,
        "the worker Pod's Ray node alive beside the head's",
    )
    worker = _pod(kube, "real", "worker")
    assert worker["spec"]["nodeName"] == k8s_node.NODE_NAME
    # /dev/shm is the size our manifest asks for (half the head's memory), a tmpfs the kubelet mounted.
    assert _in_head(kube, "real", "df", "--output=size", "-B", "1M", "/dev/shm").split()[-1] == "2048"

    # A job sent from inside the cluster, to the address the address file holds, runs on the cluster.
    script = "import ray; ray.init(); print('CPUs:', ray.cluster_resources()['CPU'])"
    said = _in_head(
        kube, "real", "ray", "job", "submit", "--address", cluster.dashboard_url, "--", "python", "-c", script
    )
    assert "CPUs:" in said and "succeeded" in said, said

    _down(kube, node, "real", addresses)
    assert kube.items("pods") == []
    assert address_file.read(addresses) == []


def test_an_image_the_node_cannot_pull_is_named_by_launch_with_kubernetes_own_reason(real_node, kube, capsys, tmp_path):
    _, node = real_node
    addresses = tmp_path / "ray_address"
    code = _launch(
        kube, "isaaclab-ray.local/ray:not-built", "nopull", addresses, "--min_workers", "0", "--timeout_s", "40"
    )
    said = capsys.readouterr().err
    assert code != 0
    assert "ErrImagePull" in said or "ImagePullBackOff" in said, said
    _down(kube, node, "nopull", addresses)


def _job_succeeded(kube: Namespace, cluster: str, address: str, submission_id: str) -> bool:
    said = _in_head(kube, cluster, "ray", "job", "status", "--address", address, submission_id)
    assert f"Job '{submission_id}' failed" not in said and f"Job '{submission_id}' was stopped" not in said, said
    return f"Job '{submission_id}' succeeded" in said


def test_with_no_workers_a_job_that_needs_one_makes_the_autoscaler_add_it_and_idle_it_goes(real_node, kube, tmp_path):
    _, node = real_node
    addresses = tmp_path / "ray_address"
    assert _launch(kube, node.image, "scales", addresses, "--min_workers", "0", "--idle_timeout_s", "20") == 0
    (cluster,) = address_file.read(addresses)
    workers = "ray.io/cluster=scales,ray.io/node-type=worker"
    assert kube.items("pods", workers) == []

    _in_head(kube, "scales", "ray", "job", "submit", "--no-wait", "--address", cluster.dashboard_url,
             "--submission-id", "two-nodes", "--", "python", "-c", k8s_node.TWO_NODES_JOB)  # fmt: skip
    wait_for(
        lambda: _job_succeeded(kube, "scales", cluster.dashboard_url, "two-nodes"),
        300,
        "the job, once the autoscaler's worker joined",
    )
    logs = _in_head(kube, "scales", "ray", "job", "logs", "--address", cluster.dashboard_url, "two-nodes")
    assert "nodes used: 2" in logs
    # The sidecar raised the group's replicas (our manifest said 0) and the operator made the worker for it.
    assert "Created worker Pod" in kube.kubectl("get", "events", "--field-selector", "reason=CreatedWorkerPod")
    (cluster_object,) = kube.items("rayclusters.ray.io")
    assert cluster_object["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 20
    # Idle for --idle_timeout_s, the worker goes (well before the default 120 s), and its containers with it.
    wait_for(lambda: not kube.items("pods", workers), 90, "the idle worker removed by the autoscaler")
    _down(kube, node, "scales", addresses)


def test_through_launch_port_forward_ray_job_submit_and_multicluster_submit_run_the_cluster_check_in_the_pods(
    real_node, kube, tmp_path
):
    """The design's step 4 as a user types it, from outside the cluster network: ``launch.py --port_forward``
    forwards through the real kubelet, and ``ray job submit --working-dir .`` and ``multicluster_submit.py`` send
    the cluster check, which runs in the head Pod. Our Ray image has no torch (a training image has), so the check
    must fail there, naming it; both say so, and the head's own job list holds both jobs as FAILED."""
    _, node = real_node
    addresses = tmp_path / "ray_address"
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "launch.py"), *_launch_flags(kube, node.image, "fwd", addresses),
         "--min_workers", "0", "--port_forward"],
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
    _down(kube, node, "fwd", addresses)


LONG_JOB = "import time; print('started', flush=True); time.sleep(600)"


def test_a_deleted_head_pod_comes_back_under_the_same_address_and_the_running_job_is_gone_from_its_list(
    real_node, kube, tmp_path
):
    """What KubeRay and Ray do when the head Pod goes (no GCS fault tolerance, as our manifests ask for none): the
    operator makes a new head Pod, Ray on it starts empty (the running job is gone from the job list), and the
    address in the address file (the head Service's name) takes jobs again. The grok script finds the new head."""
    _, node = real_node
    addresses = tmp_path / "ray_address"
    assert _launch(kube, node.image, "lost", addresses, "--min_workers", "0") == 0
    (cluster,) = address_file.read(addresses)
    _in_head(kube, "lost", "ray", "job", "submit", "--no-wait", "--address", cluster.dashboard_url,
             "--submission-id", "long", "--", "python", "-c", LONG_JOB)  # fmt: skip
    wait_for(lambda: "started" in _in_head(kube, "lost", "ray", "job", "logs", "--address",
                                           cluster.dashboard_url, "long"), 120, "the long job running")  # fmt: skip
    old_head = _pod(kube, "lost", "head")["metadata"]["name"]
    kube.kubectl("delete", "pod", old_head, "--wait=false")

    def new_head_ready() -> bool:
        pods = kube.items("pods", "ray.io/cluster=lost,ray.io/node-type=head")
        return any(
            pod["metadata"]["name"] != old_head and pod["metadata"].get("deletionTimestamp") is None
            and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
            for pod in pods
        )  # fmt: skip

    wait_for(new_head_ready, 300, "a new head Pod Ready")
    found = tmp_path / "found"
    assert discovery_main(["kubectl", "--namespace", kube.name, "--output", str(found), "--timeout_s", "120"]) == 0
    assert address_file.read(found) == [cluster]  # the same address: the Service follows the new head
    said = _in_head(kube, "lost", "ray", "job", "list", "--address", cluster.dashboard_url)
    assert "long" not in said, said  # Ray's job list starts empty with a new GCS
    said = _in_head(kube, "lost", "ray", "job", "submit", "--address", cluster.dashboard_url, "--",
                    "python", "-c", "print('after the new head')")  # fmt: skip
    assert "after the new head" in said and "succeeded" in said, said
    _down(kube, node, "lost", addresses)
