"""End to end through Kubernetes: ``kubectl port-forward`` to a head Pod reaches a real Ray head, and
``multicluster_submit.py`` runs the cluster check and a sweep through the forwards.
"""

import os
import re
import signal
import subprocess
import sys

import psutil
from conftest import PROJECT_ROOT, wait_until_none
from kube import (
    CRD,
    SMALL,
    head_endpoint,
    launch,
    running_pods,
    secret_token,
)
from ray.job_submission import JobSubmissionClient

from ray_workflow import address_file, auth
from ray_workflow.hosts.kuberay.clusters import default_auth_secret


def test_port_forward_reaches_a_real_ray_head_through_kube_and_multicluster_submit_runs_the_check_and_a_sweep(
    kube, ray_cluster, tmp_path
):
    """Each head Pod's dashboard port is mapped (KWOK PortForward) to a real Ray head this test run started
    with the token of the cluster's Secret; the grok script forwards through the API server with real kubectl."""
    for name in ("tuner-1", "tuner-2"):
        assert launch("--namespace", kube.name, "--image", "img", "--name", name, *SMALL) == 0
    assert secret_token(kube, default_auth_secret(auth.owner())) == auth.user_token().value  # ray_cluster's token
    target = ray_cluster.dashboard_url.removeprefix("http://")
    for pod in running_pods(kube, 2):
        kube.plane.forward_pod(kube.name, pod["metadata"]["name"], 8265, target)
    output = tmp_path / "ray_address"
    process = subprocess.Popen(
        [
            str(PROJECT_ROOT / "grok_cluster_address_with_kubectl.sh"),
            "--namespace",
            kube.name,
            "--port_forward",
            "--output",
            str(output),
        ],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    forwarders = []
    try:
        for line in process.stdout:
            if "Ctrl-C stops forwarding" in line:
                break
        # The grok script's kubectl port-forward children, by pid: after Ctrl-C not one may be left.
        forwarders = psutil.Process(process.pid).children(recursive=True)
        assert sorted(p.cmdline()[1:6] for p in forwarders) == [
            ["port-forward", "--namespace", kube.name, f"svc/{name}-head-svc", ":8265"]
            for name in ("tuner-1", "tuner-2")
        ]
        clusters = address_file.read(output)
        assert [c.name for c in clusters] == ["tuner-1", "tuner-2"]
        assert all(c.dashboard_url.startswith("http://127.0.0.1:") for c in clusters)
        # One job per cluster, as a user runs them: the cluster check on tuner-1, a short sweep on tuner-2.
        jobs = subprocess.run(
            [
                *(sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(output)),
                *("--env", "CARTPOLE_MAX_ITERATIONS=3"),
                "test_kuberay_config.py --num_jobs 1 --gpus_per_job 0 --allow_missing_nvidia_smi",
                "hyper_parameter_tuning/config/cartpole_sweep.py --num_samples 2 --cpus_per_trial 0.5",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert jobs.returncode == 0, jobs.stdout + jobs.stderr
        assert "[tuner-1] OK: 1 task(s) x 0 GPU(s) passed every check" in jobs.stdout, jobs.stdout
        assert re.search(r"^\[tuner-2\] \[sweep +[\d.]+s\] 2/2 trials ended", jobs.stdout, flags=re.M), jobs.stdout
        # The real head's own job list holds both, submitted through the two forwards.
        client = JobSubmissionClient(ray_cluster.dashboard_url, headers=auth.http_headers(ray_cluster.dashboard_url))
        submitted = set(re.findall(r"raysubmit_\w+", jobs.stdout))
        assert len(submitted) == 2
        assert {
            job.submission_id: job.status.value for job in client.list_jobs() if job.submission_id in submitted
        } == {job_id: "SUCCEEDED" for job_id in submitted}
        os.killpg(process.pid, 2)
        assert process.wait(timeout=20) == 0
        assert wait_until_none(lambda: [p for p in forwarders if p.is_running() and p.status() != "zombie"], 10) == []
        assert [c.dashboard_url for c in address_file.read(output)] == [
            head_endpoint(kube, name) for name in ("tuner-1", "tuner-2")
        ], "forwarded addresses go when forwarding stops, the clusters' own come back"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
        for forwarder in forwarders:  # each in its own process group, as the grok script starts them
            if forwarder.is_running():
                forwarder.kill()


def test_launch_can_forward_as_the_grok_script_does_until_ctrl_c_takes_the_forwards_away(kube, tmp_path):
    addresses = tmp_path / "ray_address"
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "launch.py"), "--crd", str(CRD), "--namespace", kube.name, "--image", "img",
         "--name", "fwd", *SMALL, "--port_forward", "--address_file", str(addresses)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        for line in process.stdout:
            if "Ctrl-C stops forwarding" in line:
                break
        (forwarded,) = address_file.read(addresses)  # in place of the in-cluster address, while forwarding
        assert forwarded.name == "fwd" and forwarded.dashboard_url.startswith("http://127.0.0.1:")
        os.killpg(process.pid, signal.SIGINT)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0 and "stopped forwarding" in out
        assert address_file.read(addresses) == [address_file.ClusterAddress("fwd", head_endpoint(kube, "fwd"))]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
