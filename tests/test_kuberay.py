"""launch.py, the KubeRay templates and address discovery.

The RayCluster CRD is KubeRay's real v1.7.0 one. No Kubernetes API server can run on these
machines, so kubectl calls go to a stand-in kubectl (tests/standin/kubectl_standin.py) that
records its arguments and stdin and answers like real kubectl; one test uses the real
kubectl binary against an unreachable server to show its own error reaching the user.
"""

import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import PROJECT_ROOT, wait_until_none

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


class StandInKubectl:
    """The stand-in's state file and call log, and helpers to shape the pretend cluster."""

    def __init__(self, root: Path) -> None:
        self.state_path, self.log_path = root / "state.json", root / "calls.jsonl"
        self.bin = root / "bin"
        self.bin.mkdir()
        wrapper = self.bin / "kubectl"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {PROJECT_ROOT}/tests/standin/kubectl_standin.py "$@"\n')
        wrapper.chmod(0o755)
        self.state = {"rayclusters": {}, "pods": []}
        self.save()
        self.log_path.write_text("")

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state))

    def load(self) -> dict:
        self.state = json.loads(self.state_path.read_text())
        return self.state

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def add_cluster(self, name, namespace="ns", labels=OURS) -> None:
        manifest = {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {},
        }
        self.state["rayclusters"][f"{namespace}/{name}"] = {"manifest": manifest, "uid": f"u-{name}", "generation": 1}
        self.save()

    def add_head_pod(self, cluster, ip, namespace="ns", pending_polls=0, token=None) -> None:
        """A head pod as KubeRay runs it; with ``token``, KubeRay's Secret and the env that references it."""
        container = {"name": "ray-head"}
        if token is not None:
            secret = f"{cluster}-auth"  # the name is KubeRay's business: discovery follows the reference
            data = {"auth_token": base64.b64encode(token.encode()).decode()}
            self.state.setdefault("secrets", {})[f"{namespace}/{secret}"] = {"data": data}
            reference = {"secretKeyRef": {"name": secret, "key": "auth_token"}}
            container["env"] = [
                {"name": "RAY_AUTH_MODE", "value": "token"},
                {"name": "RAY_AUTH_TOKEN", "valueFrom": reference},
            ]
        self.state["pods"].append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{cluster}-head-x7k2p",
                    "namespace": namespace,
                    "labels": {"ray.io/cluster": cluster, "ray.io/node-type": "head", **OURS},
                },
                "spec": {"containers": [container]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
                "standin": {"pending_polls": pending_polls},
            }
        )
        self.save()


@pytest.fixture
def kubectl(tmp_path, monkeypatch):
    standin = StandInKubectl(tmp_path)
    monkeypatch.setenv("PATH", f"{standin.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_KUBECTL_STATE", str(standin.state_path))
    monkeypatch.setenv("STANDIN_KUBECTL_LOG", str(standin.log_path))
    return standin


def applied_clusters(kubectl: StandInKubectl) -> list[dict]:
    """The RayClusters of the last ``kubectl apply`` (the user's token Secret goes with them)."""
    (*_, call) = [call for call in kubectl.calls() if "apply" in call["argv"]]
    return [document for document in yaml.safe_load_all(call["stdin"]) if document["kind"] == "RayCluster"]


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
            "spec.workerGroupSpecs.0.maxReplicas: 'four' is not of type 'integer'",
        ),
        (
            lambda m: m["spec"]["headGroupSpec"].__setitem__("rayStartParam", {}),
            "Additional properties are not allowed ('rayStartParam' was unexpected)",
        ),
        (lambda m: m["spec"].pop("headGroupSpec"), "'headGroupSpec' is a required property"),
        (lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("replicas", 2**31), "is greater than the maximum"),
    ],
)
def test_schema_check_catches_broken_manifests(validator, manifest_change, message):
    manifest = km.render("local", spec())
    manifest_change(manifest)
    assert any(message in error for error in crd_schema.errors(validator, manifest))


def launch(*args):
    return launch_main(["--crd", str(CRD), *args])


def test_launch_applies_every_cluster_with_one_kubectl_apply(kubectl, capsys):
    code = launch(
        "--cluster_host",
        "google_cloud",
        "--namespace",
        "ns",
        "--image",
        "img:1",
        "--min_workers",
        "4",
        "--max_workers",
        "16",
        "--num_clusters",
        "3",
        "--kubectl_context",
        "gke-prod",
    )
    out = capsys.readouterr().out
    assert code == 0, out
    (call,) = [call for call in kubectl.calls() if "apply" in call["argv"]]
    assert call["argv"] == ["--context", "gke-prod", "apply", "--namespace", "ns", "-f", "-"]
    secret, *applied = list(yaml.safe_load_all(call["stdin"]))
    assert [m["metadata"]["name"] for m in applied] == [f"isaac-lab-hyperparameter-tuner-{i}" for i in (1, 2, 3)]
    assert all(m["spec"]["workerGroupSpecs"][0]["minReplicas"] == 4 for m in applied)
    assert "raycluster.ray.io/isaac-lab-hyperparameter-tuner-3 created" in out
    # Every cluster reads the user's own Ray token from one Secret, which goes first.
    assert secret["kind"] == "Secret" and secret["metadata"]["labels"] == OURS
    assert {m["spec"]["authOptions"]["secretName"] for m in applied} == {secret["metadata"]["name"]}
    assert base64.b64decode(secret["data"]["auth_token"]).decode() == auth.user_token().value


def test_launching_the_same_name_again_reconfigures_and_another_name_adds(kubectl, capsys):
    assert launch("--namespace", "ns", "--image", "img:1", "--name", "tuner") == 0
    assert launch("--namespace", "ns", "--image", "img:2", "--name", "tuner", "--max_workers", "8") == 0
    assert launch("--namespace", "ns", "--image", "img:1", "--name", "tuner-cnn", "--gpu_per_worker", "2") == 0
    out = capsys.readouterr().out
    assert "raycluster.ray.io/tuner configured" in out and "raycluster.ray.io/tuner-cnn created" in out
    clusters = kubectl.load()["rayclusters"]
    assert sorted(clusters) == ["ns/tuner", "ns/tuner-cnn"]
    assert clusters["ns/tuner"]["manifest"]["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 8


def test_several_worker_groups_from_flag_lists(kubectl):
    assert (
        launch(
            "--namespace",
            "ns",
            "--image",
            "img",
            "--min_workers",
            "0",
            "--max_workers",
            "4",
            "2",
            "--gpu_per_worker",
            "1",
            "0",
            "--worker_accelerator",
            "nvidia-l4",
            "none",
        )
        == 0
    )
    (manifest,) = applied_clusters(kubectl)
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
        (["--namespace", "My NS"], "--namespace 'My NS' is not a valid Kubernetes namespace"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_kubectl_runs(kubectl, capsys, args, message):
    assert launch("--image", "img", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert kubectl.calls() == []


@pytest.mark.parametrize(
    ("flag", "value"), [("--cpu_per_worker", "-1"), ("--ram_gb_per_worker", "lots"), ("--gpu_per_worker", "0.5")]
)
def test_negative_or_non_numeric_resources_are_refused_by_the_flag_parser(kubectl, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        launch("--image", "img", flag, value)
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert kubectl.calls() == []


def test_image_is_required_unless_dry_run(kubectl, capsys):
    assert launch() == 2
    assert "--image is required" in capsys.readouterr().err
    assert launch("--dry_run", "--num_clusters", "2") == 0
    captured = capsys.readouterr()
    assert len(list(yaml.safe_load_all(captured.out))) == 2
    assert "nothing applied" in captured.err
    assert kubectl.calls() == []


def test_undefined_template_variable_and_schema_failures_are_refused(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / km.TEMPLATE_NAME).write_text("apiVersion: ray.io/v1\nmetadata: {name: {{ cluster_nam }}}\n")
    with pytest.raises(km.ManifestError, match="template variable undefined: 'cluster_nam' is undefined"):
        km.render("broken", spec(), configs_dir=tmp_path)
    (tmp_path / "quoted").mkdir()
    (tmp_path / "quoted" / km.TEMPLATE_NAME).write_text("metadata: {name: {{ cluster_nam | tojson }}}\n")
    with pytest.raises(km.ManifestError, match="template variable undefined: 'cluster_nam' is undefined"):
        km.render("quoted", spec(), configs_dir=tmp_path)


def test_a_manifest_failing_the_schema_is_never_applied(kubectl, capsys, monkeypatch):
    original = km.template_context

    def with_bad_version(cluster_spec):
        context = original(cluster_spec)
        context["worker_groups"][0]["max_workers"] = "many"
        return context

    monkeypatch.setattr(km, "template_context", with_bad_version)
    assert launch("--image", "img", "--num_clusters", "2") == 2
    assert "manifest fails the RayCluster schema at spec.workerGroupSpecs.0.maxReplicas" in capsys.readouterr().err
    assert kubectl.calls() == []


def test_without_crd_file_the_live_crd_is_used_else_the_bundled_one(kubectl, capsys):
    kubectl.state["crd_file"] = str(CRD)
    kubectl.save()
    assert launch_main(["--image", "img", "--namespace", "ns"]) == 0
    assert [c["argv"][:2] for c in kubectl.calls()] == [["get", "crd"], ["get", "secret"], ["apply", "--namespace"]]
    assert "validated against the cluster's rayclusters.ray.io CRD" in capsys.readouterr().out
    kubectl.state["crd_file"] = None
    kubectl.save()
    assert launch_main(["--image", "img", "--namespace", "ns"]) == 0
    captured = capsys.readouterr()
    assert 'rayclusters.ray.io" not found' in captured.err and "bundled" in captured.out


def test_kubectl_failure_shows_kubectls_own_message(kubectl, capsys):
    kubectl.state["apply_error"] = (
        'Error from server (Forbidden): rayclusters.ray.io is forbidden: User "me" cannot create'
    )
    kubectl.save()
    assert launch("--image", "img", "--namespace", "ns") == 1  # the world refused, not the user's input
    assert 'Error from server (Forbidden): rayclusters.ray.io is forbidden: User "me"' in capsys.readouterr().err


def test_missing_kubectl_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launch("--image", "img") == 1
    assert "kubectl not found on PATH" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("kubectl", path="/usr/bin:/usr/local/bin") is None, reason="no real kubectl here")
def test_real_kubectl_error_reaches_the_user(tmp_path, monkeypatch, capsys):
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dead",
                "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:1"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "me"}}],
                "users": [{"name": "me", "user": {"token": "x"}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.setenv("PATH", f"/usr/local/bin:/usr/bin:{os.environ['PATH']}")
    assert launch("--image", "img", "--namespace", "ns") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: kubectl ") and " failed: " in err and "127.0.0.1:1 was refused" in err


def test_down_deletes_only_our_clusters_of_exactly_that_name_and_their_address_blocks(kubectl, capsys, tmp_path):
    for name in ("tuner-1", "tuner-2", "other-1", "tuner", "tuner-ab", "tuner-1x", "tuners"):
        kubectl.add_cluster(name)
    kubectl.add_cluster("tuner-3", labels={"team": "someone-else"})
    addresses = tmp_path / "ray_address"
    listed = [
        address_file.ClusterAddress(name, f"http://10.8.0.{i}:8265") for i, name in enumerate(("tuner-1", "other-1"))
    ]
    address_file.write(listed, addresses)
    assert launch_main(["--down", "--name", "tuner", "--namespace", "ns", "--address_file", str(addresses)]) == 0
    assert address_file.read(addresses) == listed[1:]
    assert "deleted RayCluster tuner, tuner-1, tuner-2" in capsys.readouterr().out
    (delete,) = [call["argv"] for call in kubectl.calls() if "delete" in call["argv"]]
    assert delete == ["delete", "rayclusters.ray.io", "--namespace", "ns", "tuner", "tuner-1", "tuner-2"]
    left = ["ns/other-1", "ns/tuner-1x", "ns/tuner-3", "ns/tuner-ab", "ns/tuners"]
    assert sorted(kubectl.load()["rayclusters"]) == left
    assert launch_main(["--down", "--name", "tuner", "--namespace", "ns"]) == 0
    assert "no RayCluster of ours named 'tuner'" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["", "tuner*", "Tuner", "a/b", "x\ny"])
def test_down_refuses_a_name_that_is_not_a_cluster_name(kubectl, capsys, name):
    kubectl.add_cluster("tuner-1")
    assert launch_main(["--down", "--name", name, "--namespace", "ns"]) == 2
    assert "is not a valid Kubernetes name" in capsys.readouterr().err
    assert sorted(kubectl.load()["rayclusters"]) == ["ns/tuner-1"]


def grok(*args):
    return discovery_main(["kubectl", *args])


def test_discovery_waits_for_head_pods_and_writes_clusters_in_name_order(kubectl, tmp_path, capsys):
    for name, ip, pending in (("tuner-2", "10.8.0.12", 2), ("tuner-1", "10.8.0.11", 0)):
        kubectl.add_cluster(name)
        kubectl.add_head_pod(name, ip, pending_polls=pending)
    kubectl.add_cluster("theirs", labels={})
    kubectl.add_head_pod("theirs", "10.9.9.9")
    output = tmp_path / "ray_address"
    assert grok("--namespace", "ns", "--output", str(output), "--timeout_s", "30") == 0
    assert output.read_text() == (
        "# Cluster: tuner-1\nhttp://10.8.0.11:8265\n# Cluster: tuner-2\nhttp://10.8.0.12:8265\n"
    )
    assert "waiting for 1 of 2 cluster(s): tuner-2: head pod tuner-2-head-x7k2p is Pending" in capsys.readouterr().err
    gets = [c["argv"] for c in kubectl.calls() if c["argv"][:2] == ["get", "pods"]]
    assert gets[0] == ["get", "pods", "--namespace", "ns", "-l", "ray.io/node-type=head", "-o", "json"]
    assert len(gets) == 3


def test_clusters_run_with_token_auth_unless_asked_not_to(validator):
    manifest = km.render("google_cloud", spec())
    assert manifest["spec"]["authOptions"] == {"mode": "token"}
    assert crd_schema.errors(validator, manifest) == []
    open_manifest = km.render("local", spec(token_auth=False))
    assert open_manifest["spec"]["authOptions"] == {"mode": "disabled"}


def test_clusters_read_the_users_token_from_one_secret_that_down_removes_with_the_last_cluster(kubectl, capsys):
    secret = default_auth_secret()
    assert launch("--namespace", "ns", "--image", "img", "--name", "tuner", "--num_clusters", "2") == 0
    assert launch("--namespace", "ns", "--image", "img", "--name", "other") == 0
    stored = kubectl.load()["secrets"][f"ns/{secret}"]
    assert base64.b64decode(stored["data"]["auth_token"]).decode() == auth.user_token().value
    clusters = kubectl.state["rayclusters"]
    assert {c["manifest"]["spec"]["authOptions"]["secretName"] for c in clusters.values()} == {secret}
    assert auth.user_token().value not in capsys.readouterr().out

    assert launch_main(["--down", "--name", "tuner", "--namespace", "ns"]) == 0
    assert f"ns/{secret}" in kubectl.load()["secrets"], "cluster 'other' still reads its token from the Secret"
    assert launch_main(["--down", "--name", "other", "--namespace", "ns"]) == 0
    assert f"ns/{secret}" not in kubectl.load()["secrets"]
    assert "deleted Secret" in capsys.readouterr().err


def test_a_secret_that_is_not_ours_is_used_as_it_is_and_never_deleted(kubectl):
    theirs = {"data": {"auth_token": base64.b64encode(b"team-token").decode()}, "labels": {}}
    kubectl.state["secrets"] = {"ns/team-token": theirs}
    kubectl.save()
    assert launch("--namespace", "ns", "--image", "img", "--name", "tuner", "--auth_secret", "team-token") == 0
    assert kubectl.load()["secrets"] == {"ns/team-token": theirs}
    assert [c["spec"]["authOptions"] for c in applied_clusters(kubectl)] == [
        {"mode": "token", "secretName": "team-token"}
    ]
    assert launch_main(["--down", "--name", "tuner", "--namespace", "ns"]) == 0
    assert kubectl.load()["secrets"] == {"ns/team-token": theirs}


def test_no_auth_from_the_command_line_applies_clusters_without_token_auth_and_no_secret(kubectl):
    assert launch("--namespace", "ns", "--image", "img", "--num_clusters", "2", "--no_auth") == 0
    assert [c["spec"]["authOptions"] for c in applied_clusters(kubectl)] == [{"mode": "disabled"}] * 2
    assert kubectl.load().get("secrets", {}) == {}


def test_cluster_token_leaves_the_token_to_kuberay_and_dry_run_never_shows_a_token(kubectl, capsys):
    assert launch("--namespace", "ns", "--image", "img", "--cluster_token") == 0
    assert [c["spec"]["authOptions"] for c in applied_clusters(kubectl)] == [{"mode": "token"}]
    assert kubectl.load().get("secrets", {}) == {}
    capsys.readouterr()
    assert launch("--namespace", "ns", "--image", "img", "--dry_run") == 0
    captured = capsys.readouterr()
    assert (
        f"secretName: {default_auth_secret()}" in captured.out and "holding your Ray token (not shown)" in captured.err
    )
    assert auth.user_token().value not in captured.out + captured.err


def test_discovery_keeps_each_clusters_token_from_kuberays_secret_and_never_prints_it(kubectl, tmp_path, capsys):
    for name, ip, token in (("tuner-1", "10.8.0.11", "secret-one"), ("tuner-2", "10.8.0.12", "secret-two")):
        kubectl.add_cluster(name)
        kubectl.add_head_pod(name, ip, token=token)
    assert grok("--namespace", "ns", "--output", str(tmp_path / "ray_address"), "--timeout_s", "30") == 0
    assert auth.http_headers("http://10.8.0.11:8265") == {"Authorization": "Bearer secret-one"}
    assert auth.token_for("http://10.8.0.12:8265").value == "secret-two"
    assert oct(auth.token_path("http://10.8.0.12:8265").stat().st_mode & 0o777) == "0o600"
    captured = capsys.readouterr()
    assert "secret-" not in captured.out + captured.err
    assert "secret-" not in (tmp_path / "ray_address").read_text()


def test_discovery_names_the_cluster_that_never_becomes_ready_and_writes_nothing(kubectl, tmp_path, capsys):
    kubectl.add_cluster("tuner-1")
    kubectl.add_head_pod("tuner-1", "10.8.0.11")
    kubectl.add_cluster("tuner-2")
    output = tmp_path / "ray_address"
    output.write_text("# Cluster: keep\nhttp://1.2.3.4:8265\n")
    assert grok("--namespace", "ns", "--output", str(output), "--timeout_s", "1") == 1
    assert "not ready after 1 s: tuner-2: no head pod yet" in capsys.readouterr().err
    assert output.read_text() == "# Cluster: keep\nhttp://1.2.3.4:8265\n"


def test_discovery_with_no_clusters_of_ours_says_so(kubectl, capsys):
    assert grok("--namespace", "ns", "--name", "tuner") == 1
    assert "no RayCluster of ours named 'tuner' (or tuner-N) in namespace ns" in capsys.readouterr().err


def test_port_forward_mode_writes_local_addresses_and_ends_its_forwards(kubectl, tmp_path):
    for name in ("tuner-1", "tuner-2"):
        kubectl.add_cluster(name)
        kubectl.add_head_pod(name, "10.8.0.1")
    output = tmp_path / "ray_address"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [
            str(PROJECT_ROOT / "grok_cluster_address_with_kubectl.sh"),
            "--namespace",
            "ns",
            "--port_forward",
            "--output",
            str(output),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        check_forwards_and_interrupt(process, output, kubectl)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()


def check_forwards_and_interrupt(process: subprocess.Popen, output: Path, kubectl: StandInKubectl) -> None:
    for line in process.stdout:
        if "Ctrl-C stops forwarding" in line:
            break
    # The grok script's kubectl port-forward children, by pid: after Ctrl-C not one may be left.
    forwarders = psutil.Process(process.pid).children(recursive=True)
    assert len(forwarders) >= 2, forwarders
    clusters = address_file.read(output)
    assert [c.name for c in clusters] == ["tuner-1", "tuner-2"]
    assert all(c.dashboard_url.startswith("http://127.0.0.1:") for c in clusters)
    forwards = [c["argv"] for c in kubectl.calls() if c["argv"][0] == "port-forward"]
    assert forwards == [
        ["port-forward", "--namespace", "ns", f"svc/{n}-head-svc", ":8265"] for n in ("tuner-1", "tuner-2")
    ]
    os.killpg(process.pid, 2)
    assert process.wait(timeout=20) == 0
    assert wait_until_none(lambda: [p for p in forwarders if p.is_running() and p.status() != "zombie"], 10) == []


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
        (("replicas: 1", "replicas: one"), "spec.workerGroupSpecs.0.replicas"),
        (("groupName: workergroup", "groupNam: workergroup"), "spec.workerGroupSpecs.0"),
        (("containerPort: 6379", "containerPort: 6379\n            protocl: TCP"), "ports.0"),
        (("  headGroupSpec:", "  headGroupSpecs:"), "spec"),
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


def test_a_cluster_host_outside_cluster_configs_is_refused(kubectl, capsys):
    assert launch("--cluster_host", "../kuberay_crd/..", "--image", "img", "--dry_run") == 2
    assert "--cluster_host '../kuberay_crd/..': no kuberay.yaml.jinja there" in capsys.readouterr().err
