"""``launch.py`` on KubeRay against a real control plane (tests/k8s_harness.py, built by ``make k8s``): etcd,
kube-apiserver, kube-controller-manager (its garbage collector included), kube-scheduler, the KubeRay operator and
KWOK nodes shaped like GKE's L4 and CPU node pools, with the real kubectl. Each test works in a namespace of its
own and asks the API server, never our own output, what is there.
"""

import base64
import itertools
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT_ROOT, wait_for
from kube import (
    CRD,
    OURS,
    SEED_NAMES,
    SMALL,
    head_endpoint,
    launch,
    running_pods,
    secret_token,
)

from launch import main as launch_main
from ray_workflow import address_file, auth
from ray_workflow.hosts.kuberay import manifest as km
from ray_workflow.hosts.kuberay.clusters import default_auth_secret
from ray_workflow.names import KUBERAY_OWNER_ID_LABEL, KUBERAY_OWNER_LABEL


@pytest.mark.parametrize("host", ["google_cloud", "local"])
def test_seed_flags_make_clusters_the_kuberay_operator_runs_on_the_right_kube_nodes(kube, capsys, tmp_path, host):
    addresses = tmp_path / "ray_address"
    code = launch_main(
        [
            *("--cluster_host", host, "--namespace", kube.name, "--image", "nvcr.io/nvidia/isaac-lab:2.3.0"),
            *("--min_workers", "1", "--max_workers", "4", "--num_clusters", "3", "--kubectl_context", "pytest"),
            *("--address_file", str(addresses)),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "validated against the cluster's rayclusters.ray.io CRD" in out
    clusters = kube.clusters()
    assert sorted(clusters) == SEED_NAMES
    assert all(c["metadata"]["labels"] == {**OURS, KUBERAY_OWNER_ID_LABEL: auth.owner().id} for c in clusters.values())
    assert [c["spec"]["workerGroupSpecs"][0]["minReplicas"] for c in clusters.values()] == [1, 1, 1]
    # The operator makes a head and a worker per cluster; the scheduler puts GPU workers on the L4 nodes only
    # (node selector and toleration right) and heads on the CPU pool (the L4 nodes' taint keeps them off).
    pods = running_pods(kube, 6)
    placed = {(p["metadata"]["labels"]["ray.io/cluster"], p["metadata"]["labels"]["ray.io/node-type"]): p for p in pods}
    assert sorted(placed) == sorted(itertools.product(SEED_NAMES, ["head", "worker"]))
    for (_, kind), pod in placed.items():
        assert pod["spec"]["nodeName"].startswith("gke-l4-" if kind == "worker" else "gke-cpu-"), pod["spec"]
        ray_container = pod["spec"]["containers"][0]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in ray_container["volumeMounts"]
        gpus = ray_container["resources"]["limits"].get("nvidia.com/gpu")
        assert gpus == ("1" if kind == "worker" else None)
        gke_worker = host == "google_cloud" and kind == "worker"
        assert pod["spec"].get("nodeSelector") == (
            {"cloud.google.com/gke-accelerator": "nvidia-l4"} if gke_worker else None
        )
    for name in SEED_NAMES:
        service = json.loads(kube.kubectl("get", "service", f"{name}-head-svc", "-o", "json"))
        ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
        assert (ports["dashboard"], ports["gcs-server"], ports["client"]) == (8265, 6379, 10001)
    # launch.py waited for every head to be Ready and wrote where a job inside the cluster reaches each dashboard.
    assert address_file.read(addresses) == [
        address_file.ClusterAddress(name, head_endpoint(kube, name)) for name in SEED_NAMES
    ]
    assert f"wrote 3 cluster address(es) to {addresses}" in out
    # The user's token in one Secret of ours, and every Ray container (autoscaler too) reads it from there.
    secret_name = default_auth_secret(auth.owner())
    secret = json.loads(kube.kubectl("get", "secret", secret_name, "-o", "json"))
    assert secret["metadata"]["labels"] == {**OURS, KUBERAY_OWNER_ID_LABEL: auth.owner().id}
    assert base64.b64decode(secret["data"]["auth_token"]).decode() == auth.user_token().value
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {variable["name"]: variable for variable in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": "auth_token"}


def test_launching_the_same_name_again_says_what_restarts_and_another_name_adds(kube, capsys):
    """A new image restarts the cluster's Pods, ending its jobs: refused until --restart, saying why; worker counts
    alone restart nothing and leave the autoscaler's replicas as they are."""
    assert launch("--namespace", kube.name, "--image", "img:1", "--name", "tuner") == 0
    kube.kubectl("patch", "rayclusters.ray.io", "tuner", "--type=json",
                 "-p", '[{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3}]')  # fmt: skip
    capsys.readouterr()
    assert launch("--namespace", kube.name, "--image", "img:2", "--name", "tuner", "--max_workers", "8") == 2
    err = capsys.readouterr().err
    assert "re-applying RayCluster tuner in namespace" in err and "give --restart to go on" in err
    assert "head: image img:1 -> img:2" in err and err.count("\n") == 1
    assert kube.clusters()["tuner"]["metadata"]["generation"] == 2, "nothing applied (the patch was generation 2)"
    assert launch("--namespace", kube.name, "--image", "img:1", "--name", "tuner", "--max_workers", "8") == 0
    assert launch("--namespace", kube.name, "--image", "img:2", "--name", "tuner", "--max_workers", "8",
                  "--restart") == 0  # fmt: skip
    assert launch("--namespace", kube.name, "--image", "img:1", "--name", "tuner-cnn", "--gpu_per_worker", "2") == 0
    captured = capsys.readouterr()
    assert "RayCluster tuner restarts its Pods: head: image img:1 -> img:2" in captured.err
    assert "raycluster.ray.io/tuner configured" in captured.out
    assert "raycluster.ray.io/tuner-cnn created" in captured.out
    clusters = kube.clusters()
    assert sorted(clusters) == ["tuner", "tuner-cnn"]
    group = clusters["tuner"]["spec"]["workerGroupSpecs"][0]
    assert (group["maxReplicas"], group["replicas"]) == (8, 3), "the autoscaler's 3 workers stay"
    assert clusters["tuner"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "img:2"
    # The operator follows: the head it runs now is the new image's.
    wait_for(
        lambda: [
            pod
            for pod in kube.items("pods", "ray.io/cluster=tuner,ray.io/node-type=head")
            if pod["spec"]["containers"][0]["image"] == "img:2" and pod["status"].get("phase") == "Running"
        ],
        120,
        "the operator to run tuner's head with img:2",
    )


def test_several_worker_groups_from_flag_lists_reach_the_kube_api(kube):
    assert (
        launch(
            *("--namespace", kube.name, "--image", "img", "--min_workers", "0", "--max_workers", "4", "2"),
            *("--gpu_per_worker", "1", "0", "--worker_accelerator", "nvidia-l4", "none"),
        )
        == 0
    )
    (manifest,) = kube.clusters().values()
    groups = manifest["spec"]["workerGroupSpecs"]
    assert [(g["groupName"], g["maxReplicas"]) for g in groups] == [("nvidia-l4-group-0", 4), ("cpu-group-1", 2)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min_workers", "5", "--max_workers", "2"], "--min_workers 5 is greater than --max_workers 2"),
        (["--name", "Tuner_1"], "--name 'Tuner_1' is not a valid Kubernetes name"),
        (["--name", "a" * 52, "--num_clusters", "12"], "once suffixed"),
        (
            ["--cluster_host", "azure"],
            "--cluster_host 'azure': no kuberay.yaml.jinja there; choose one of google_cloud, local",
        ),
        (["--max_workers", "1", "2", "3", "--min_workers", "0", "1"], "--min_workers has 2 values"),
        (["--ray_version", "latest"], "--ray_version 'latest'"),
        (["--image", "img", "--namespace", "My NS"], "--namespace 'My NS' is not a valid Kubernetes namespace"),
        # KubeRay's own limits, which it would only record in a Warning event.
        (["--name", "a" * 52, "--num_clusters", "3"], "is 54 characters; at most 53 fit KubeRay's RayCluster names"),
        (["--image", "rayproject/ray:2.41.0"], "--ray_version 2.41.0: token authentication needs Ray 2.52 or newer"),
        (["--worker_accelerator", "nvidia-l5"], "--worker_accelerator 'nvidia-l5' is not an accelerator"),
    ],
)
def test_bad_input_is_refused_in_one_line_and_nothing_reaches_the_kube_api(kube, capsys, args, message):
    assert launch("--image", "img", "--namespace", kube.name, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert kube.names("rayclusters.ray.io") == [] and kube.names("secrets") == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--cpu_per_worker", "-1"),
        ("--ram_gb_per_worker", "lots"),
        ("--gpu_per_worker", "0.5"),
        ("--idle_timeout_s", "0"),
    ],
)
def test_negative_or_non_numeric_resources_are_refused_before_the_kube_api(kube, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        launch("--image", "img", "--namespace", kube.name, flag, value)
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert kube.names("rayclusters.ray.io") == []


def test_image_is_required_even_for_a_dry_run_which_touches_no_kube_object(kube, capsys):
    assert launch("--namespace", kube.name) == 2
    assert "--image is required" in capsys.readouterr().err
    assert launch("--namespace", kube.name, "--dry_run") == 2, "a placeholder image would print a manifest to copy"
    assert "--image is required" in capsys.readouterr().err
    assert launch("--namespace", kube.name, "--image", "img", "--dry_run", "--num_clusters", "2") == 0
    captured = capsys.readouterr()
    assert len(list(yaml.safe_load_all(captured.out))) == 2
    assert "nothing started" in captured.err
    assert kube.names("rayclusters.ray.io") == [] and kube.names("secrets") == []


def test_a_manifest_failing_the_live_crd_is_never_applied(kube, capsys, monkeypatch):
    original = km.template_context

    def with_bad_count(cluster_spec):
        context = original(cluster_spec)
        context["worker_groups"][0]["max_workers"] = "many"
        return context

    monkeypatch.setattr(km, "template_context", with_bad_count)
    assert launch_main(["--image", "img", "--namespace", kube.name, "--num_clusters", "2"]) == 2
    assert "manifest fails the RayCluster schema at spec.workerGroupSpecs[0].maxReplicas" in capsys.readouterr().err
    assert kube.names("rayclusters.ray.io") == [] and kube.names("secrets") == []


def test_down_deletes_only_our_kube_clusters_of_exactly_that_name_and_the_garbage_collector_leaves_nothing(
    kube, capsys, tmp_path
):
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner", "--num_clusters", "2", *SMALL) == 0
    for name in ("tuner", "other-1", "tuner-ab", "tuner-1x", "tuners"):
        assert launch("--namespace", kube.name, "--image", "img", "--name", name, *SMALL) == 0
    kube.foreign_cluster("tuner-3", {"team": "someone-else"})
    kube.foreign_cluster("tuner-b", {})
    running_pods(kube, 9)
    addresses = tmp_path / "ray_address"
    listed = [
        address_file.ClusterAddress(name, f"http://10.8.0.{i}:8265") for i, name in enumerate(("tuner-1", "other-1"))
    ]
    address_file.write(listed, addresses)
    assert launch_main(["--down", "--name", "tuner", "--namespace", kube.name, "--address_file", str(addresses)]) == 0
    assert address_file.read(addresses) == listed[1:]
    assert "deleted RayCluster tuner, tuner-1, tuner-2" in capsys.readouterr().out
    left = ["other-1", "tuner-1x", "tuner-3", "tuner-ab", "tuner-b", "tuners"]
    assert sorted(kube.clusters()) == left
    # Kubernetes' garbage collector removes what the operator made for the deleted clusters, and only that.
    wait_for(
        lambda: sorted({p["metadata"]["labels"]["ray.io/cluster"] for p in kube.items("pods")}) == left,
        120,
        "the garbage collector to remove the deleted clusters' pods",
    )
    wait_for(
        lambda: kube.names("services") == [f"{name}-head-svc" for name in left], 120, "the deleted clusters' services"
    )
    assert default_auth_secret(auth.owner()) in kube.names("secrets"), "other clusters still read their token from it"
    assert launch_main(["--down", "--name", "tuner", "--namespace", kube.name]) == 0
    assert "no RayCluster of ours named 'tuner'" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["", "tuner*", "Tuner", "a/b", "x\ny"])
def test_down_refuses_a_name_that_is_not_a_cluster_name_and_deletes_no_kube_object(kube, capsys, name):
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner", "--num_clusters", "2") == 0
    assert launch_main(["--down", "--name", name, "--namespace", kube.name]) == 2
    assert "is not a valid Kubernetes name" in capsys.readouterr().err
    assert sorted(kube.clusters()) == ["tuner-1", "tuner-2"]


def test_status_lists_our_kube_clusters_and_why_a_head_waits(kube, capsys):
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-1", *SMALL) == 0
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-2", "--num_head_cpu", "500") == 0
    kube.foreign_cluster("theirs", {})
    running_pods(kube, 2)  # tuner-1's head and theirs
    capsys.readouterr()
    assert launch_main(["--status", "--namespace", kube.name]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert sorted(rows) == ["tuner-1", "tuner-2"]
    (head,) = kube.items("pods", "ray.io/cluster=tuner-1")
    assert rows["tuner-1"].split()[1:] == ["ready", "head", f"{head['status']['podIP']},", "workers", "0/0", "ready"]
    assert rows["tuner-2"].split()[1] == "starting" and "Insufficient cpu" in rows["tuner-2"]


def test_launch_waits_only_for_the_kube_clusters_it_started(kube, tmp_path):
    """tuner-3, left from an earlier launch, has a head no node can hold; a launch of tuner-1 and tuner-2 is ready
    without it."""
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-3", "--num_head_cpu", "500") == 0
    addresses = tmp_path / "ray_address"
    assert (
        launch_main(
            [
                *("--crd", str(CRD), "--namespace", kube.name, "--image", "img", "--name", "tuner"),
                *("--num_clusters", "2", *SMALL, "--timeout_s", "60", "--address_file", str(addresses)),
            ]
        )
        == 0
    )
    assert [cluster.name for cluster in address_file.read(addresses)] == ["tuner-1", "tuner-2"]


def test_ctrl_c_while_waiting_for_kube_heads_deletes_only_the_clusters_this_launch_created(kube, tmp_path):
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner", "--num_clusters", "2", *SMALL) == 0
    # Three clusters whose heads no node can hold: tuner-1 and tuner-2 are reconfigured, tuner-3 is new.
    process = subprocess.Popen(
        [
            *(sys.executable, str(PROJECT_ROOT / "launch.py"), "--crd", str(CRD), "--namespace", kube.name),
            *("--image", "img", "--name", "tuner", "--num_clusters", "3", "--num_head_cpu", "500", "--restart"),
            *("--address_file", str(tmp_path / "ray_address")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in process.stderr:
            if "waiting for 3 of 3 cluster(s)" in line:
                break
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == (
        "interrupted: deleted RayCluster tuner-3; use --no_wait to leave clusters starting"
    )
    assert sorted(kube.clusters()) == ["tuner-1", "tuner-2"]
    assert not (tmp_path / "ray_address").exists()


def test_kube_clusters_read_the_users_token_from_one_secret_that_down_removes_with_the_last_cluster(kube, capsys):
    secret = default_auth_secret(auth.owner())
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner", "--num_clusters", "2", *SMALL) == 0
    assert launch("--namespace", kube.name, "--image", "img", "--name", "other", *SMALL) == 0
    assert secret_token(kube, secret) == auth.user_token().value
    assert {c["spec"]["authOptions"]["secretName"] for c in kube.clusters().values()} == {secret}
    assert auth.user_token().value not in capsys.readouterr().out

    assert launch_main(["--down", "--name", "tuner", "--namespace", kube.name]) == 0
    assert secret in kube.names("secrets"), "cluster 'other' still reads its token from the Secret"
    assert launch_main(["--down", "--name", "other", "--namespace", kube.name]) == 0
    assert secret not in kube.names("secrets")
    assert "deleted Secret" in capsys.readouterr().err


def test_a_kube_secret_that_is_not_ours_is_used_as_it_is_and_never_deleted(kube):
    kube.kubectl("create", "secret", "generic", "team-token", "--from-literal=auth_token=team-token")
    before = json.loads(kube.kubectl("get", "secret", "team-token", "-o", "json"))
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner", "--auth_secret", "team-token") == 0
    assert [c["spec"]["authOptions"] for c in kube.clusters().values()] == [
        {"mode": "token", "secretName": "team-token"}
    ]
    assert launch_main(["--down", "--name", "tuner", "--namespace", kube.name]) == 0
    after = json.loads(kube.kubectl("get", "secret", "team-token", "-o", "json"))
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert kube.names("secrets") == ["team-token"]


def test_no_auth_applies_kube_clusters_without_token_auth_and_no_secret(kube):
    assert launch("--namespace", kube.name, "--image", "img", "--num_clusters", "2", "--no_auth", *SMALL) == 0
    assert [c["spec"]["authOptions"] for c in kube.clusters().values()] == [{"mode": "disabled"}] * 2
    pods = running_pods(kube, 2)
    assert all("RAY_AUTH_TOKEN" not in json.dumps(pod["spec"]) for pod in pods)
    assert kube.names("secrets") == []


def test_cluster_token_leaves_the_token_to_the_kuberay_operator_and_dry_run_never_shows_a_token(kube, capsys):
    assert launch("--namespace", kube.name, "--image", "img", "--cluster_token", *SMALL) == 0
    assert [c["spec"]["authOptions"] for c in kube.clusters().values()] == [{"mode": "token"}]
    # The operator makes the cluster's own Secret; none of ours is there.
    made = wait_for(lambda: kube.items("secrets"), 60, "the operator's token Secret")
    assert [secret["metadata"].get("labels", {}).get(KUBERAY_OWNER_LABEL) for secret in made] == [None]
    capsys.readouterr()
    assert launch("--namespace", kube.name, "--image", "img", "--dry_run") == 0
    captured = capsys.readouterr()
    assert f"secretName: {default_auth_secret(auth.owner())}" in captured.out
    assert "holding your Ray token (not shown)" in captured.err
    assert auth.user_token().value not in captured.out + captured.err
