"""Our offline RayCluster check against the real API server's own validation (``kubectl apply
--dry-run=server``): both agree on KubeRay's samples, our templates and broken variants of them.
"""

import itertools
import json
import os

import k8s_harness
import pytest
import yaml
from kube import (
    Namespace,
    first_group,
    head_container,
    head_limits,
    head_spec,
    spec,
)

from launch import main as launch_main
from ray_workflow.hosts.kuberay import crd_schema
from ray_workflow.hosts.kuberay import manifest as km

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
    ours = {host: km.render(spec(template=host, namespace=kube.name)) for host in ("google_cloud", "local")}
    bases = {**ours, "sample ray-cluster.complete": samples["ray-cluster.complete.yaml:raycluster-complete"]}
    mutated = {}
    for (base_name, base), (change, mutate) in itertools.product(bases.items(), MUTATIONS.items()):
        manifest = json.loads(json.dumps(base))
        mutate(manifest)
        mutated[f"{base_name} with {change}"] = manifest
    assert disagreements(kube, validator, {**samples, **ours, **mutated}) == []
    # Both sides refuse most of the mutations: the comparison is not one of two permissive checks.
    assert sum(bool(crd_schema.errors(validator, manifest)) for manifest in mutated.values()) >= 60


def test_check_takes_every_sample_file_of_kuberay_with_what_stands_beside_its_rayclusters(capsys):
    """KubeRay's samples hold ConfigMaps, Secrets, service accounts and Ingresses beside their RayClusters: --check
    checks each RayCluster and passes the rest through, as kubectl apply would, saying it did not check them."""
    bin_dir = k8s_harness.binaries()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the Kubernetes tests: the binaries of make k8s are not built")
        pytest.skip("KubeRay's samples come with `make k8s`, which has not run")
    paths = sorted((bin_dir / "kuberay-samples").glob("ray-cluster*.yaml"))
    mixed = []
    for path in paths:
        assert launch_main(["--check", str(path)]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        if "not checked" in out:
            mixed.append(path.name)
    assert len(paths) >= 30 and len(mixed) >= 5, mixed
