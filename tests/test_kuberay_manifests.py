"""The KubeRay templates, the offline RayCluster check (``launch.py --check``) and the Dockerfile, with no
cluster: against KubeRay's real v1.7.0 RayCluster CRD (our bundled copy).
"""

import itertools
import re
import time

import pytest
import yaml
from conftest import PROJECT_ROOT
from kube import (
    GROUP_SETS,
    OURS,
    RAY_VERSION,
    launch,
    spec,
)

from launch import main as launch_main
from ray_workflow.hosts.kuberay import crd_schema
from ray_workflow.hosts.kuberay import manifest as km


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
    manifest = km.render(spec(template=host, worker_groups=groups, **extras))
    assert crd_schema.errors(validator, manifest) == []
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["spec"]["rayVersion"] == RAY_VERSION


def worker_pods(manifest):
    return [group["template"]["spec"] for group in manifest["spec"]["workerGroupSpecs"]]


def test_gpu_workers_get_gpu_limits_tolerations_and_gke_selectors_only_where_they_belong():
    groups = GROUP_SETS[1]
    gke = km.render(spec(template="google_cloud", worker_groups=groups))
    local = km.render(spec(template="local", worker_groups=groups))
    gpu_pod, cpu_pod = worker_pods(gke)
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]
    assert gpu_pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu_pod and "nodeSelector" not in cpu_pod
    assert all("nodeSelector" not in pod for pod in worker_pods(local))
    assert "tolerations" in worker_pods(local)[0]


def test_autoscaling_honours_min_and_max_workers():
    manifest = km.render(spec(template="google_cloud", worker_groups=GROUP_SETS[1]))
    assert manifest["spec"]["enableInTreeAutoscaling"] is True
    assert [(g["minReplicas"], g["replicas"], g["maxReplicas"]) for g in manifest["spec"]["workerGroupSpecs"]] == [
        (2, 2, 2),
        (0, 0, 8),
    ]


@pytest.mark.parametrize("host", ["google_cloud", "local"])
def test_pods_have_shared_memory_for_the_object_store_graphics_capabilities_and_our_labels(host):
    manifest = km.render(spec(template=host, storage_uri="s3://b/p"))
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
    manifest = km.render(spec(template="google_cloud"))
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
    with_account = km.render(spec(template="google_cloud", service_account_name="ray-sa"))
    assert with_account["spec"]["headGroupSpec"]["template"]["spec"]["serviceAccountName"] == "ray-sa"


def test_the_heads_service_account_stays_the_heads_and_a_pull_secret_reaches_every_pod():
    """KubeRay binds the autoscaler's rights (make and delete Pods) to the head's service account: workers get one
    of their own, or the namespace's default."""
    manifest = km.render(
        spec(service_account_name="head-sa", worker_service_account_name="bucket-sa", image_pull_secret="registry")
    )
    head = manifest["spec"]["headGroupSpec"]["template"]["spec"]
    (worker,) = [group["template"]["spec"] for group in manifest["spec"]["workerGroupSpecs"]]
    assert head["serviceAccountName"] == "head-sa" and worker["serviceAccountName"] == "bucket-sa"
    assert head["imagePullSecrets"] == worker["imagePullSecrets"] == [{"name": "registry"}]
    assert "serviceAccountName" not in worker_pods(km.render(spec(service_account_name="head-sa")))[0]


def test_the_autoscaler_is_v2_which_ray_2_60_runs_under_kuberay():
    assert km.render(spec())["spec"]["autoscalerOptions"]["version"] == "v2"


def test_groups_are_named_after_what_they_hold_and_only_gpu_groups_are_placed_on_an_accelerator():
    groups = km.worker_groups(min_workers=[0], max_workers=[4, 2], gpu_per_worker=[1, 0], cpu_per_worker=[8],
                              ram_gb_per_worker=[32], worker_accelerator=["nvidia-l4"])  # fmt: skip
    gpu, cpu = km.render(spec(worker_groups=groups))["spec"]["workerGroupSpecs"]
    assert (gpu["groupName"], cpu["groupName"]) == ("nvidia-l4-group-0", "cpu-group-1")
    assert gpu["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert "nodeSelector" not in cpu["template"]["spec"]


def test_an_accelerator_is_checked_against_what_gke_offers_and_anything_goes_on_local(capsys):
    assert launch_main(["--dry_run", "--image", "img", "--worker_accelerator", "nvidia-tesla-a100"]) == 0
    capsys.readouterr()
    assert launch_main(["--dry_run", "--image", "img", "--worker_accelerator", "nvidia-l5"]) == 2
    assert "'nvidia-l5' is not an accelerator --cluster_host google_cloud offers: one of" in capsys.readouterr().err
    assert launch_main(["--dry_run", "--image", "img", "--cluster_host", "local", "--worker_accelerator", "x"]) == 0


@pytest.mark.parametrize(
    ("image", "version"), [("rayproject/ray:2.54.1-py311-gpu", "2.54.1"), ("nvcr.io/nvidia/isaac-lab:2.3.0", None)]
)
def test_the_ray_version_follows_the_image_not_the_machine_that_launches(capsys, image, version):
    """Ray's own images say their Ray in their tag; others are taken to be built by our Dockerfile, with our pin."""
    assert launch_main(["--dry_run", "--image", image]) == 0
    (manifest,) = yaml.safe_load_all(capsys.readouterr().out)
    assert manifest["spec"]["rayVersion"] == (version or km.PINNED_RAY)


def test_token_auth_with_a_ray_older_than_kuberay_takes_is_refused_and_without_tokens_is_not(capsys):
    assert launch_main(["--dry_run", "--image", "rayproject/ray:2.41.0"]) == 2
    assert "token authentication needs Ray 2.52 or newer" in capsys.readouterr().err
    assert launch_main(["--dry_run", "--image", "rayproject/ray:2.41.0", "--no_auth"]) == 0


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
    manifest = km.render(spec(template="local"))
    manifest_change(manifest)
    assert any(message in error for error in crd_schema.errors(validator, manifest))


def test_undefined_template_variable_and_schema_failures_are_refused(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / km.TEMPLATE_NAME).write_text("apiVersion: ray.io/v1\nmetadata: {name: {{ cluster_nam }}}\n")
    with pytest.raises(km.ManifestError, match="template variable undefined: 'cluster_nam' is undefined"):
        km.render(spec(template="broken"), configs_dir=tmp_path)
    (tmp_path / "quoted").mkdir()
    (tmp_path / "quoted" / km.TEMPLATE_NAME).write_text("metadata: {name: {{ cluster_nam | tojson }}}\n")
    with pytest.raises(km.ManifestError, match="template variable undefined: 'cluster_nam' is undefined"):
        km.render(spec(template="quoted"), configs_dir=tmp_path)


def test_a_template_of_the_users_own_that_fails_is_named_with_its_file_and_line(tmp_path):
    """A --cluster_host folder of one's own: a base template that is not there, a filter given the wrong type."""
    (tmp_path / "extends").mkdir()
    (tmp_path / "extends" / km.TEMPLATE_NAME).write_text('{% extends "our_base.yaml.jinja" %}\n')
    with pytest.raises(km.ManifestError, match=r"kuberay.yaml.jinja: our_base.yaml.jinja, which it extends or "):
        km.render(spec(template="extends"), configs_dir=tmp_path)
    (tmp_path / "typed").mkdir()
    (tmp_path / "typed" / km.TEMPLATE_NAME).write_text("kind: RayCluster\nmetadata: {name: {{ name | round }}}\n")
    with pytest.raises(km.ManifestError, match=r"typed/kuberay.yaml.jinja:2: template failed: TypeError: "):
        km.render(spec(template="typed"), configs_dir=tmp_path)


def test_output_naming_a_folder_is_refused_in_one_line(tmp_path, capsys):
    assert launch_main(["--dry_run", "--image", "img", "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --output {tmp_path}: is a folder, not a file\n"


def test_check_refuses_a_document_nested_deeper_than_any_manifest_before_building_it(tmp_path, capsys):
    """Thousands of levels would exhaust the parser (a segmentation fault at 50,000, a RecursionError at 3,000)."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("kind: RayCluster\nspec: " + "[" * 50000 + "]" * 50000 + "\n")
    assert launch_main(["--check", str(deep)]) == 2
    assert capsys.readouterr().err == f"error: {deep}: not valid YAML (line 2: nested more than 100 levels deep)\n"


def test_clusters_run_with_token_auth_unless_asked_not_to(validator):
    manifest = km.render(spec(template="google_cloud"))
    assert manifest["spec"]["authOptions"] == {"mode": "token"}
    assert crd_schema.errors(validator, manifest) == []
    open_manifest = km.render(spec(template="local", token_auth=False))
    assert open_manifest["spec"]["authOptions"] == {"mode": "disabled"}


def test_dockerfile_installs_the_pinned_ray_with_isaac_sims_python():

    dockerfile = (PROJECT_ROOT / "cluster_configs" / "Dockerfile").read_text()
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert re.search(r"^ARG ISAACLAB_BASE_IMAGE=isaac-lab-base:\S+$", dockerfile, flags=re.M)
    assert "FROM ${ISAACLAB_BASE_IMAGE}" in dockerfile
    pins = re.findall(r'"([\w\-\[\],]+==[\w.]+)"', dockerfile)
    assert f"ray[default,tune]=={km.PINNED_RAY}" in pins
    for pin in pins:
        assert f'"{pin}"' in pyproject, f"the image's {pin} differs from the project's pin"
    assert "ENV ISAACLAB_PYTHON=/workspace/isaaclab/_isaac_sim/python.sh" in dockerfile
    assert "> /usr/local/bin/ray" in dockerfile and "-m ray.scripts.scripts" in dockerfile
    assert "wget" in dockerfile, "KubeRay's probes call wget"
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics" in dockerfile
    assert "/usr/local/nvidia/bin" in dockerfile, "GKE mounts nvidia-smi there"
    assert "NVIDIA_VISIBLE_DEVICES" not in re.sub(r"#.*", "", dockerfile), "the device plugin says which GPUs to show"


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
    [
        ("a: [unclosed", "not valid YAML"),
        ("- a list\n", "document 1 is not a Kubernetes object"),
        ("", "no YAML document"),
    ],
)
def test_check_of_a_file_that_is_not_a_raycluster_manifest_exits_2(tmp_path, capsys, text, message):
    code, _ = check(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_check_passes_what_is_not_a_raycluster_through_saying_it_did_not_check_it(tmp_path, capsys):
    code, path = check(tmp_path, "kind: ConfigMap\nmetadata: {name: ray-code}\n---\n" + SAMPLE_STYLE)
    captured = capsys.readouterr()
    assert code == 0 and f"{path}: ConfigMap ray-code: not checked" in captured.out
    assert "1 of 1 RayCluster(s) valid" in captured.err and "1 other document(s) not checked" in captured.err


def test_check_of_a_missing_file_exits_2(tmp_path, capsys):
    assert launch_main(["--check", str(tmp_path / "nope.yaml")]) == 2
    assert "No such file" in capsys.readouterr().err


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
