"""What kubectl refuses, said in kubectl's own words and changing nothing: RBAC limits of a namespace user, a
missing kubectl, an API server that does not answer.
"""

import yaml
from daemons import free_port
from kube import (
    SMALL,
    launch,
    namespace_user,
)

from launch import main as launch_main
from ray_workflow import address_file, auth
from ray_workflow.grok import main as discovery_main


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
    port = free_port()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("PATH", control_plane.environment["PATH"])
    assert launch("--image", "img", "--namespace", "ns") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: kubectl ") and " failed: " in err and f"127.0.0.1:{port} was refused" in err
    assert err.count("\n") == 1, "kubectl's own log lines and a fallback to the bundled CRD are not repeated"


def test_an_unknown_kubectl_context_is_the_users_mistake_in_one_line(control_plane, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    monkeypatch.setenv("PATH", control_plane.environment["PATH"])
    assert launch_main(["--down", "--namespace", "ns", "--kubectl_context", "no-such-context"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'context "no-such-context"' in err and "kubectl config get-contexts" in err
