"""``grok_cluster_address_with_kubectl.sh`` against a real control plane: it waits for every head to be Ready,
says why one waits, and writes the addresses and keeps the tokens of our clusters only.
"""

import base64
import threading

import k8s_harness
from conftest import wait_for
from kube import (
    SMALL,
    grok,
    head_endpoint,
    launch,
)

from ray_workflow import address_file, auth


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


def test_discovery_writes_the_ready_clusters_and_names_the_head_that_cannot_be_scheduled(kube, tmp_path, capsys):
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-1", *SMALL) == 0
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-2", "--num_head_cpu", "500") == 0
    output = tmp_path / "ray_address"
    output.write_text("# Cluster: keep\nhttp://1.2.3.4:8265\n")
    assert grok("--namespace", kube.name, "--output", str(output), "--timeout_s", "15") == 1
    captured = capsys.readouterr()
    assert "not ready after 15 s: tuner-2: head pod tuner-2-head-" in captured.err
    assert "is Pending: 0/" in captured.err and "Insufficient cpu" in captured.err
    assert f"they stay in namespace {kube.name}: end them with --down" in captured.err
    assert [cluster.name for cluster in address_file.read(output)] == ["keep", "tuner-1"]
    assert f"wrote 1 cluster address(es) to {output}" in captured.out


def test_discovery_with_no_kube_clusters_of_ours_says_so(kube, capsys):
    kube.foreign_cluster("tuner", {})
    assert grok("--namespace", kube.name, "--name", "tuner") == 1
    assert f"no RayCluster of ours named 'tuner' (or tuner-N) in namespace {kube.name}" in capsys.readouterr().err
