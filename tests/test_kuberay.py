"""launch.py, the KubeRay templates and address discovery, against a real Kubernetes control plane.

The offline checks use KubeRay's real v1.7.0 RayCluster CRD (our bundled copy). Everything that talks to a
cluster runs against a real one (tests/k8s_harness.py, built by ``make k8s``): etcd, kube-apiserver,
kube-controller-manager (its garbage collector included), kube-scheduler, the KubeRay operator and KWOK nodes
shaped like GKE's L4 and CPU node pools, with the real kubectl. Each test works in a namespace of its own and
asks the API server, never our own output, what is there.
"""

import base64
import dataclasses
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import k8s_harness
import psutil
import pytest
import yaml
from conftest import PROJECT_ROOT, wait_for, wait_until_none
from ray.job_submission import JobSubmissionClient

from launch import KUBERAY_DEFAULTS
from launch import main as launch_main
from ray_workflow import address_file, auth, crd_schema
from ray_workflow import kuberay_manifest as km
from ray_workflow.discovery_cli import main as discovery_main
from ray_workflow.kuberay import default_auth_secret
from ray_workflow.names import KUBERAY_OWNER_LABEL, OWNER

CRD = PROJECT_ROOT / "cluster_configs" / "kuberay_crd" / "ray.io_rayclusters.yaml"  # the bundled copy
RAY_VERSION = KUBERAY_DEFAULTS["ray_version"]  # the Ray of this environment, pinned in pyproject.toml
OURS = {KUBERAY_OWNER_LABEL: OWNER}


@pytest.fixture(scope="module")
def validator():
    return crd_schema.validator_from_file(CRD)


@pytest.fixture(scope="module")
def control_plane():
    reason = k8s_harness.missing()
    if reason:
        pytest.skip(reason)
    plane = k8s_harness.KubernetesForTests(k8s_harness.binaries())
    plane.start()
    yield plane
    plane.stop()


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
        manifest = km.render("local", dataclasses.replace(cluster, token_auth=False))
        manifest["metadata"]["labels"] = labels
        self.apply(manifest)


@pytest.fixture
def kube(control_plane, monkeypatch, request):
    name = "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    control_plane.kubectl("create", "namespace", name)
    for variable, value in control_plane.environment.items():
        monkeypatch.setenv(variable, value)
    yield Namespace(control_plane, name)
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def spec(**changes):
    fields = dict(
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


@pytest.mark.parametrize(
    ("host", "groups", "extras"),
    list(
        itertools.product(
            ["google_cloud", "local"],
            GROUP_SETS,
            [{}, {"service_account_name": "ray-sa", "storage_uri": "gs://bucket/ray"}],
        )
    ),
)
def test_every_template_renders_manifests_that_pass_the_crd_schema(validator, host, groups, extras):
    manifest = km.render(host, spec(worker_groups=groups, **extras))
    assert crd_schema.errors(validator, manifest) == []
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["spec"]["rayVersion"] == RAY_VERSION


def worker_pods(manifest):
    return [group["template"]["spec"] for group in manifest["spec"]["workerGroupSpecs"]]


def test_gpu_workers_get_gpu_limits_tolerations_and_gke_selectors_only_where_they_belong():
    groups = GROUP_SETS[1]
    gke = km.render("google_cloud", spec(worker_groups=groups))
    local = km.render("local", spec(worker_groups=groups))
    gpu_pod, cpu_pod = worker_pods(gke)
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]
    assert gpu_pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu_pod and "nodeSelector" not in cpu_pod
    assert all("nodeSelector" not in pod for pod in worker_pods(local))
    assert "tolerations" in worker_pods(local)[0]


def test_autoscaling_honours_min_and_max_workers():
    manifest = km.render("google_cloud", spec(worker_groups=GROUP_SETS[1]))
    assert manifest["spec"]["enableInTreeAutoscaling"] is True
    assert [(g["minReplicas"], g["replicas"], g["maxReplicas"]) for g in manifest["spec"]["workerGroupSpecs"]] == [
        (2, 2, 2),
        (0, 0, 8),
    ]


@pytest.mark.parametrize("host", ["google_cloud", "local"])
def test_pods_have_shared_memory_for_the_object_store_graphics_capabilities_and_our_labels(host):
    manifest = km.render(host, spec(storage_uri="s3://b/p"))
    head = manifest["spec"]["headGroupSpec"]
    pods = [head["template"]["spec"], *worker_pods(manifest)]
    starts = [head["rayStartParams"], *(g["rayStartParams"] for g in manifest["spec"]["workerGroupSpecs"])]
    for pod, start in zip(pods, starts, strict=True):
        (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert int(shm["emptyDir"]["sizeLimit"].removesuffix("Mi")) * 2**20 >= int(start["object-store-memory"])
        container = pod["containers"][0]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert "graphics" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
        assert env["ISAACLAB_RAY_STORAGE_URI"] == "s3://b/p"
    assert manifest["metadata"]["labels"] == OURS
    assert head["template"]["metadata"]["labels"] == OURS


def test_dashboard_stays_inside_the_cluster_and_nothing_outside_the_manifest_is_referenced():
    manifest = km.render("google_cloud", spec())
    assert manifest["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    text = yaml.safe_dump(manifest)
    for reference in (
        "configMap",
        "secret",
        "persistentVolumeClaim",
        "LoadBalancer",
        "serviceAccountName",
        "imagePullSecrets",
    ):
        assert reference not in text
    with_account = km.render("google_cloud", spec(service_account_name="ray-sa"))
    assert with_account["spec"]["headGroupSpec"]["template"]["spec"]["serviceAccountName"] == "ray-sa"


@pytest.mark.parametrize(
    ("manifest_change", "message"),
    [
        (
            lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", "four"),
            'spec.workerGroupSpecs[0].maxReplicas: Invalid value: "four": must be of type integer',
        ),
        (
            lambda m: m["spec"]["headGroupSpec"].__setitem__("rayStartParam", {}),
            "spec.headGroupSpec.rayStartParam: unknown field",
        ),
        (lambda m: m["spec"].pop("headGroupSpec"), "spec.headGroupSpec: Required value"),
        (lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("replicas", 2**31), "is greater than the maximum"),
    ],
)
def test_schema_check_catches_broken_manifests(validator, manifest_change, message):
    manifest = km.render("local", spec())
    manifest_change(manifest)
    assert any(message in error for error in crd_schema.errors(validator, manifest))


def launch(*args):
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
    assert all(c["metadata"]["labels"] == OURS for c in clusters.values())
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
    secret_name = default_auth_secret()
    secret = json.loads(kube.kubectl("get", "secret", secret_name, "-o", "json"))
    assert secret["metadata"]["labels"] == OURS
    assert base64.b64decode(secret["data"]["auth_token"]).decode() == auth.user_token().value
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {variable["name"]: variable for variable in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": "auth_token"}


def test_launching_the_same_name_again_reconfigures_it_on_the_kube_api_and_another_name_adds(kube, capsys):
    assert launch("--namespace", kube.name, "--image", "img:1", "--name", "tuner") == 0
    assert launch("--namespace", kube.name, "--image", "img:2", "--name", "tuner", "--max_workers", "8") == 0
    assert launch("--namespace", kube.name, "--image", "img:1", "--name", "tuner-cnn", "--gpu_per_worker", "2") == 0
    out = capsys.readouterr().out
    assert "raycluster.ray.io/tuner configured" in out and "raycluster.ray.io/tuner-cnn created" in out
    clusters = kube.clusters()
    assert sorted(clusters) == ["tuner", "tuner-cnn"]
    tuner = clusters["tuner"]
    assert tuner["metadata"]["generation"] == 2 and tuner["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 8
    assert tuner["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "img:2"
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
    ],
)
def test_bad_input_is_refused_in_one_line_and_nothing_reaches_the_kube_api(kube, capsys, args, message):
    assert launch("--image", "img", "--namespace", kube.name, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert kube.names("rayclusters.ray.io") == [] and kube.names("secrets") == []


@pytest.mark.parametrize(
    ("flag", "value"), [("--cpu_per_worker", "-1"), ("--ram_gb_per_worker", "lots"), ("--gpu_per_worker", "0.5")]
)
def test_negative_or_non_numeric_resources_are_refused_before_the_kube_api(kube, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        launch("--image", "img", "--namespace", kube.name, flag, value)
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert kube.names("rayclusters.ray.io") == []


def test_image_is_required_unless_dry_run_which_touches_no_kube_object(kube, capsys):
    assert launch("--namespace", kube.name) == 2
    assert "--image is required" in capsys.readouterr().err
    assert launch("--namespace", kube.name, "--dry_run", "--num_clusters", "2") == 0
    captured = capsys.readouterr()
    assert len(list(yaml.safe_load_all(captured.out))) == 2
    assert "nothing started" in captured.err
    assert kube.names("rayclusters.ray.io") == [] and kube.names("secrets") == []


def test_undefined_template_variable_and_schema_failures_are_refused(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / km.TEMPLATE_NAME).write_text("apiVersion: ray.io/v1\nmetadata: {name: {{ cluster_nam }}}\n")
    with pytest.raises(km.ManifestError, match="template variable undefined: 'cluster_nam' is undefined"):
        km.render("broken", spec(), configs_dir=tmp_path)
    (tmp_path / "quoted").mkdir()
    (tmp_path / "quoted" / km.TEMPLATE_NAME).write_text("metadata: {name: {{ cluster_nam | tojson }}}\n")
    with pytest.raises(km.ManifestError, match="template variable undefined: 'cluster_nam' is undefined"):
        km.render("quoted", spec(), configs_dir=tmp_path)


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


def namespace_user(kube: Namespace, tmp_path: Path, user: str = "viewer") -> Path:
    """A kubeconfig for ``user``, who may do what a Role in this namespace allows and nothing cluster-wide."""
    config = yaml.safe_load(kube.plane.kubeconfig.read_text())
    config["users"] = [{"name": user, "user": {"token": kube.plane.tokens[user]}}]
    config["contexts"][0]["context"]["user"] = user
    path = tmp_path / f"{user}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_user_who_may_not_read_crds_is_checked_against_the_bundled_crd(kube, capsys, monkeypatch, tmp_path):
    kube.kubectl(
        "create",
        "role",
        "rayclusters",
        "--verb=get,list,create,patch,update,delete",
        "--resource=rayclusters.ray.io,secrets,pods",
    )
    kube.kubectl("create", "rolebinding", "viewer-rayclusters", "--role=rayclusters", "--user=viewer")
    monkeypatch.setenv("KUBECONFIG", str(namespace_user(kube, tmp_path)))
    addresses = tmp_path / "ray_address"
    assert launch_main(["--image", "img", "--namespace", kube.name, *SMALL, "--address_file", str(addresses)]) == 0
    captured = capsys.readouterr()
    assert 'User "viewer" cannot get resource "customresourcedefinitions"' in captured.err
    assert "validated against bundled ray.io_rayclusters.yaml (KubeRay v1.7.0)" in captured.out
    assert kube.names("rayclusters.ray.io") == ["isaac-lab-hyperparameter-tuner"]
    assert [cluster.name for cluster in address_file.read(addresses)] == ["isaac-lab-hyperparameter-tuner"]


def test_kube_rbac_refusal_shows_kubectls_own_message_and_applies_nothing(kube, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(namespace_user(kube, tmp_path)))
    auth.user_token()  # made before (if this test runs first), so that stderr holds only the refusal
    capsys.readouterr()
    assert launch("--image", "img", "--namespace", kube.name) == 1  # the world refused, not the user's input
    err = capsys.readouterr().err
    assert err.startswith("error: kubectl ") and "Error from server (Forbidden)" in err
    assert 'User "viewer" cannot' in err and err.count("\n") == 1
    assert kube.names("rayclusters.ray.io") == []


def test_kube_rbac_refusal_of_discovery_and_down_is_kubectls_own_line_and_changes_nothing(
    kube, capsys, monkeypatch, tmp_path
):
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner", *SMALL) == 0
    capsys.readouterr()
    monkeypatch.setenv("KUBECONFIG", str(namespace_user(kube, tmp_path)))
    output = tmp_path / "ray_address"
    assert discovery_main(["kubectl", "--namespace", kube.name, "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert 'Error from server (Forbidden): rayclusters.ray.io is forbidden: User "viewer"' in err
    assert err.count("\n") == 1 and not output.exists()
    assert launch_main(["--down", "--name", "tuner", "--namespace", kube.name]) == 1
    err = capsys.readouterr().err
    assert 'User "viewer" cannot list resource "rayclusters"' in err and err.count("\n") == 1
    assert kube.names("rayclusters.ray.io") == ["tuner"]


def test_missing_kubectl_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launch("--image", "img") == 1
    assert "kubectl not found on PATH" in capsys.readouterr().err


def test_a_stopped_kube_api_server_is_named_by_kubectl(control_plane, tmp_path, monkeypatch, capsys):
    """The real kubectl against an API server address where nothing listens (as after the server stopped)."""
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    port = k8s_harness.free_port()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("PATH", control_plane.environment["PATH"])
    assert launch("--image", "img", "--namespace", "ns") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: kubectl ") and " failed: " in err and f"127.0.0.1:{port} was refused" in err


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
    assert default_auth_secret() in kube.names("secrets"), "other clusters still read their token from it"
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
    assert rows["tuner-1"].split()[1:] == ["ready", "head", head["status"]["podIP"]]
    assert "Insufficient cpu" in rows["tuner-2"]


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
            *("--image", "img", "--name", "tuner", "--num_clusters", "3", "--num_head_cpu", "500"),
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


def grok(*args):
    return discovery_main(["kubectl", *args])


def head_endpoint(kube: Namespace, cluster: str) -> str:
    """The dashboard address the head Service's EndpointSlice gives, as a job inside the cluster reaches it."""
    (endpoints,) = kube.items("endpointslices", f"kubernetes.io/service-name={cluster}-head-svc")
    (port,) = [port["port"] for port in endpoints["ports"] if port["name"] == "dashboard"]
    (endpoint,) = endpoints["endpoints"]
    assert endpoint["conditions"]["ready"] is True
    return f"http://{endpoint['addresses'][0]}:{port}"


def test_discovery_waits_until_every_kube_head_is_ready_and_writes_the_services_endpoints(kube, tmp_path, capsys):
    """tuner-2's head asks for more CPU than any node has; a bigger node joins while discovery waits."""
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-1", "--min_workers", "0") == 0
    assert (
        launch(
            "--namespace",
            kube.name,
            "--image",
            "img",
            "--name",
            "tuner-2",
            "--min_workers",
            "0",
            "--num_head_cpu",
            "40",
        )
        == 0
    )
    kube.foreign_cluster("theirs", {})
    output = tmp_path / "ray_address"
    result = {}
    waiting = threading.Thread(
        target=lambda: result.setdefault(
            "code", grok("--namespace", kube.name, "--output", str(output), "--timeout_s", "120")
        )
    )
    waiting.start()
    reported = []
    try:
        wait_for(
            lambda: reported.append(capsys.readouterr().err) or "Insufficient cpu" in "".join(reported),
            60,
            "discovery to report why tuner-2's head waits",
        )
    finally:
        kube.plane.add_node(
            f"big-{kube.name}", {**k8s_harness.CPU_NODE, "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}}
        )
        waiting.join()
    assert result["code"] == 0
    assert "waiting for 1 of 2 cluster(s): tuner-2: head pod tuner-2-head-" in "".join(reported)
    assert address_file.read(output) == [
        address_file.ClusterAddress(name, head_endpoint(kube, name)) for name in ("tuner-1", "tuner-2")
    ]
    kube.plane.kubectl("delete", "node", f"big-{kube.name}")


def test_clusters_run_with_token_auth_unless_asked_not_to(validator):
    manifest = km.render("google_cloud", spec())
    assert manifest["spec"]["authOptions"] == {"mode": "token"}
    assert crd_schema.errors(validator, manifest) == []
    open_manifest = km.render("local", spec(token_auth=False))
    assert open_manifest["spec"]["authOptions"] == {"mode": "disabled"}


def secret_token(kube: Namespace, name: str) -> str:
    secret = json.loads(kube.kubectl("get", "secret", name, "-o", "json"))
    return base64.b64decode(secret["data"]["auth_token"]).decode()


def test_kube_clusters_read_the_users_token_from_one_secret_that_down_removes_with_the_last_cluster(kube, capsys):
    secret = default_auth_secret()
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
    assert (
        f"secretName: {default_auth_secret()}" in captured.out and "holding your Ray token (not shown)" in captured.err
    )
    assert auth.user_token().value not in captured.out + captured.err


def test_discovery_keeps_each_kube_clusters_token_from_the_operators_secret_and_never_prints_it(kube, tmp_path, capsys):
    for name in ("tuner-1", "tuner-2"):
        assert launch("--namespace", kube.name, "--image", "img", "--name", name, "--cluster_token", *SMALL) == 0
    assert grok("--namespace", kube.name, "--output", str(tmp_path / "ray_address"), "--timeout_s", "120") == 0
    clusters = address_file.read(tmp_path / "ray_address")
    assert [cluster.name for cluster in clusters] == ["tuner-1", "tuner-2"]
    tokens = set()
    for cluster in clusters:
        (secret,) = [
            item
            for item in kube.items("secrets")
            if [owner["name"] for owner in item["metadata"].get("ownerReferences", [])] == [cluster.name]
        ]
        token = base64.b64decode(secret["data"]["auth_token"]).decode()
        assert auth.http_headers(cluster.dashboard_url) == {"Authorization": f"Bearer {token}"}
        assert oct(auth.token_path(cluster.dashboard_url).stat().st_mode & 0o777) == "0o600"
        tokens.add(token)
    assert len(tokens) == 2
    captured = capsys.readouterr()
    for token in tokens:
        assert token not in captured.out + captured.err + (tmp_path / "ray_address").read_text()


def test_discovery_names_the_kube_head_that_cannot_be_scheduled_and_writes_nothing(kube, tmp_path, capsys):
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-1", *SMALL) == 0
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-2", "--num_head_cpu", "500") == 0
    output = tmp_path / "ray_address"
    output.write_text("# Cluster: keep\nhttp://1.2.3.4:8265\n")
    assert grok("--namespace", kube.name, "--output", str(output), "--timeout_s", "15") == 1
    err = capsys.readouterr().err
    assert "not ready after 15 s: tuner-2: head pod tuner-2-head-" in err
    assert "is Pending: 0/" in err and "Insufficient cpu" in err
    assert output.read_text() == "# Cluster: keep\nhttp://1.2.3.4:8265\n"


def test_discovery_with_no_kube_clusters_of_ours_says_so(kube, capsys):
    kube.foreign_cluster("tuner", {})
    assert grok("--namespace", kube.name, "--name", "tuner") == 1
    assert f"no RayCluster of ours named 'tuner' (or tuner-N) in namespace {kube.name}" in capsys.readouterr().err


def head_spec(manifest):
    return manifest["spec"]["headGroupSpec"]


def head_container(manifest):
    return head_spec(manifest)["template"]["spec"]["containers"][0]


def first_group(manifest):
    return manifest["spec"]["workerGroupSpecs"][0]


def head_limits(manifest):
    return head_container(manifest).setdefault("resources", {}).setdefault("limits", {})


# Changes a careless or hostile user makes to a RayCluster; the API server decides which are refused.
MUTATIONS = {
    "a count as a word": lambda m: first_group(m).__setitem__("maxReplicas", "four"),
    "a count past int32": lambda m: first_group(m).__setitem__("replicas", 2**31),
    "a misspelt spec field": lambda m: m["spec"].__setitem__("rayVerison", "2.0"),
    "a misspelt head field": lambda m: head_spec(m).__setitem__("rayStartParam", {}),
    "a misspelt container field": lambda m: head_container(m).__setitem__("imagePullPolcy", "Always"),
    "a misspelt volume field": lambda m: (
        head_spec(m)["template"]["spec"]
        .setdefault("volumes", [])
        .append({"name": "v", "emptyDir": {"medium": "Memory", "sizeLimt": "1Gi"}})
    ),
    "another label": lambda m: m["metadata"].setdefault("labels", {}).__setitem__("team", "a"),
    "no head": lambda m: m["spec"].pop("headGroupSpec"),
    "no containers": lambda m: head_spec(m)["template"]["spec"].pop("containers"),
    "a container without a name": lambda m: head_container(m).pop("name"),
    "a worker group without a name": lambda m: first_group(m).pop("groupName"),
    "cpu: lots": lambda m: head_limits(m).__setitem__("cpu", "lots"),
    "cpu as a float": lambda m: head_limits(m).__setitem__("cpu", 0.5),
    "memory: 1.5Gi": lambda m: head_limits(m).__setitem__("memory", "1.5Gi"),
    "a ray start parameter as a number": lambda m: (
        head_spec(m).setdefault("rayStartParams", {}).__setitem__("num-cpus", 1)
    ),
    "an auth mode KubeRay lacks": lambda m: m["spec"].setdefault("authOptions", {}).__setitem__("mode", "open"),
    "an upgrade strategy KubeRay lacks": lambda m: m["spec"].__setitem__("upgradeStrategy", {"type": "Rolling"}),
    "a boolean as a word": lambda m: m["spec"].__setitem__("enableInTreeAutoscaling", "yes"),
    "null worker groups": lambda m: m["spec"].__setitem__("workerGroupSpecs", None),
    "null suspend": lambda m: m["spec"].__setitem__("suspend", None),
    "a null image": lambda m: head_container(m).__setitem__("image", None),
    "containers as a map": lambda m: head_spec(m)["template"]["spec"].__setitem__("containers", {"name": "x"}),
    "tolerations as a map": lambda m: head_spec(m)["template"]["spec"].__setitem__("tolerations", {"key": "x"}),
    "a port as a string": lambda m: head_container(m).__setitem__("ports", [{"containerPort": "6379"}]),
    "a port twice": lambda m: head_container(m).__setitem__(
        "ports", [{"containerPort": 6379, "name": "a"}, {"containerPort": 6379, "name": "b"}]
    ),
    "a variable twice": lambda m: head_container(m).__setitem__(
        "env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
    ),
    "an upper-case name": lambda m: m["metadata"].__setitem__("name", "Bad_Name"),
    "a negative minimum": lambda m: first_group(m).__setitem__("minReplicas", -1),
}


def kuberay_samples(control_plane) -> dict[str, dict]:
    """KubeRay's own RayCluster samples (config/samples of the operator's module), namespace left to us."""
    samples = {}
    for path in sorted((control_plane.bin / "kuberay-samples").glob("ray-cluster*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "RayCluster":
                document["metadata"].pop("namespace", None)
                samples[f"{path.name}:{document['metadata']['name']}"] = document
    return samples


def server_says(kube: Namespace, manifest: dict) -> str | None:
    """None if the API server accepts ``manifest`` (``kubectl apply --dry-run=server``), else its refusal."""
    out = kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest), check=False).strip()
    return None if out.endswith("(server dry run)") else out


def disagreements(kube: Namespace, validator, manifests: dict[str, dict]) -> list[str]:
    """Where our offline check and the API server differ: one refuses and not the other, or ours names a field
    the server's refusal does not."""
    found = []
    for label, manifest in manifests.items():
        ours, server = crd_schema.errors(validator, manifest), server_says(kube, manifest)
        if bool(ours) != bool(server):
            found.append(f"{label}: ours {ours[:1] or 'valid'}, server {server or 'valid'}")
        elif ours and ours[0].split(": ")[0] not in server:
            found.append(f"{label}: ours names {ours[0].split(': ')[0]}, server says {server}")
    return found


def test_the_offline_check_and_the_kube_api_server_agree_on_kuberays_samples_our_templates_and_mutations(
    kube, validator
):
    samples = kuberay_samples(kube.plane)
    assert len(samples) >= 30
    ours = {host: km.render(host, spec(namespace=kube.name)) for host in ("google_cloud", "local")}
    bases = {**ours, "sample ray-cluster.complete": samples["ray-cluster.complete.yaml:raycluster-complete"]}
    mutated = {}
    for (base_name, base), (change, mutate) in itertools.product(bases.items(), MUTATIONS.items()):
        manifest = json.loads(json.dumps(base))
        mutate(manifest)
        mutated[f"{base_name} with {change}"] = manifest
    assert disagreements(kube, validator, {**samples, **ours, **mutated}) == []
    # Both sides refuse most of the mutations: the comparison is not one of two permissive checks.
    assert sum(bool(crd_schema.errors(validator, manifest)) for manifest in mutated.values()) >= 60


def test_port_forward_reaches_a_real_ray_head_through_kube_and_multicluster_submit_runs_the_check_and_a_sweep(
    kube, ray_cluster, tmp_path
):
    """Each head Pod's dashboard port is mapped (KWOK PortForward) to a real Ray head this test run started
    with the token of the cluster's Secret; the grok script forwards through the API server with real kubectl."""
    for name in ("tuner-1", "tuner-2"):
        assert launch("--namespace", kube.name, "--image", "img", "--name", name, *SMALL) == 0
    assert secret_token(kube, default_auth_secret()) == auth.user_token().value  # the token ray_cluster runs with
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
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
        for forwarder in forwarders:  # each in its own process group, as the grok script starts them
            if forwarder.is_running():
                forwarder.kill()


def test_grok_ray_address_writes_given_heads(tmp_path):
    output = tmp_path / "ray_address"
    result = subprocess.run(
        [
            str(PROJECT_ROOT / "grok_ray_address.sh"),
            "--address",
            "10.0.0.5:6379",
            "--cluster_name",
            "lab-box",
            "--address",
            "http://10.0.0.6:8265",
            "--cluster_name",
            "desk",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert address_file.read(output) == [
        address_file.ClusterAddress("lab-box", "http://10.0.0.5:8265"),
        address_file.ClusterAddress("desk", "http://10.0.0.6:8265"),
    ]


def test_dockerfile_installs_the_pinned_ray_with_isaac_sims_python():
    import re

    dockerfile = (PROJECT_ROOT / "cluster_configs" / "Dockerfile").read_text()
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert re.search(r"^ARG ISAACLAB_BASE_IMAGE=isaac-lab-base:\S+$", dockerfile, flags=re.M)
    assert "FROM ${ISAACLAB_BASE_IMAGE}" in dockerfile
    pins = re.findall(r'"([\w\-\[\],]+==[\w.]+)"', dockerfile)
    assert f"ray[default,tune]=={KUBERAY_DEFAULTS['ray_version']}" in pins
    for pin in pins:
        assert f'"{pin}"' in pyproject, f"the image's {pin} differs from the project's pin"
    assert "ENV ISAACLAB_PYTHON=/workspace/isaaclab/_isaac_sim/python.sh" in dockerfile
    assert "> /usr/local/bin/ray" in dockerfile and "-m ray.scripts.scripts" in dockerfile
    assert "wget" in dockerfile, "KubeRay's probes call wget"
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics" in dockerfile
    assert "/usr/local/nvidia/bin" in dockerfile, "GKE mounts nvidia-smi there"


# A RayCluster in the shape of KubeRay's own samples (ray-cluster.sample.yaml): its worker group
# leaves minReplicas and maxReplicas to the API server's defaults.
SAMPLE_STYLE = """\
apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: raycluster-kuberay
spec:
  rayVersion: '2.52.0'
  headGroupSpec:
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: ray-head
          image: rayproject/ray:2.52.0
          resources:
            limits: {cpu: 1, memory: 2G}
            requests: {cpu: 1, memory: 2G}
          ports:
          - containerPort: 6379
            name: gcs-server
  workerGroupSpecs:
  - replicas: 1
    groupName: workergroup
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: ray-worker
          image: rayproject/ray:2.52.0
          resources:
            limits: {cpu: 1, memory: 1G}
"""


def check(tmp_path, text, *extra):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return launch_main(["--check", str(path), *extra]), path


def test_a_manifest_leaving_defaulted_required_fields_out_passes_as_the_api_server_accepts_it(tmp_path, capsys):
    code, path = check(tmp_path, SAMPLE_STYLE)
    assert code == 0, capsys.readouterr()
    assert f"{path}: raycluster-kuberay: valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("replicas: 1", "replicas: one"), "spec.workerGroupSpecs[0].replicas: Invalid value"),
        (("groupName: workergroup", "groupNam: workergroup"), "spec.workerGroupSpecs[0].groupNam: unknown field"),
        (("containerPort: 6379", "containerPort: 6379\n            protocl: TCP"), "ports[0].protocl: unknown field"),
        (("  headGroupSpec:", "  headGroupSpecs:"), "spec.headGroupSpecs: unknown field"),
    ],
)
def test_check_still_names_the_field_of_a_wrong_type_a_misspelling_or_a_missing_section(
    tmp_path, capsys, change, field
):
    code, path = check(tmp_path, SAMPLE_STYLE.replace(*change))
    out = capsys.readouterr().out
    assert code == 1 and f"{path}: raycluster-kuberay: " in out and field in out, out


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: [unclosed", "not valid YAML"), ("kind: Pod\n", "document 1 is not a RayCluster"), ("", "no YAML document")],
)
def test_check_of_a_file_that_is_not_a_raycluster_manifest_exits_2(tmp_path, capsys, text, message):
    code, _ = check(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_check_of_a_missing_file_exits_2(tmp_path, capsys):
    assert launch_main(["--check", str(tmp_path / "nope.yaml")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_grok_ray_address_refuses_a_bad_address_in_one_line_without_echoing_credentials(tmp_path, capsys):
    output = tmp_path / "ray_address"
    code = discovery_main(["ray", "--address", "http://me:hunter2@10.0.0.5:notaport", "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2 and "is not a Ray address" in err and "hunter2" not in err and not output.exists()
    code = discovery_main(
        ["ray", "--address", "10.0.0.5:8265", "--cluster_name", "two\nlines", "--output", str(output)]
    )
    assert code == 2 and "cannot be written" in capsys.readouterr().err and not output.exists()


def test_check_refuses_yaml_aliases_at_once_instead_of_expanding_them(tmp_path, capsys):
    laughs = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("kind: RayCluster\n" + "\n".join(laughs) + "\n")
    started = time.monotonic()
    assert launch_main(["--check", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {bomb}: not valid YAML (line 3: YAML aliases (*a) are not accepted here)"
    assert time.monotonic() - started < 10


def test_a_cluster_host_outside_cluster_configs_is_refused(capsys):
    assert launch("--cluster_host", "../kuberay_crd/..", "--image", "img", "--dry_run") == 2
    assert "--cluster_host '../kuberay_crd/..': no kuberay.yaml.jinja there" in capsys.readouterr().err
