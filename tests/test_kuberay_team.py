"""KubeRay as a team uses it, on the real control plane: people who share a namespace, and sometimes a login, never
take, restart or delete each other's clusters or tokens; and every wait says why in Kubernetes' own words (the
container states a kubelet reports are set on KWOK's Pods, whose status KWOK then leaves alone)."""

import base64
import json
import os
import secrets
import subprocess

import pytest
from conftest import wait_for
from kube import CRD, SMALL, Namespace, head_endpoint, launch, running_pods

from launch import main as launch_main
from ray_workflow import address_file, auth
from ray_workflow.grok import main as grok_main
from ray_workflow.hosts.kuberay import heads
from ray_workflow.names import KUBERAY_OWNER_ID_LABEL


def become(monkeypatch, tmp_path, person: str) -> auth.Owner:
    """Be ``person``: their own Ray token, under the login the whole lab shares."""
    token = tmp_path / f"{person}.token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
    for variable in auth.AUTH_VARIABLES:  # what an earlier test's driver left in this process is no one's shell
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setenv("USER", "lab")
    monkeypatch.setenv("LOGNAME", "lab")
    return auth.owner()


def secret_owners(kube: Namespace) -> dict[str, tuple[str, str]]:
    """Each token Secret of ours: its owner label and the token it holds."""
    return {
        secret["metadata"]["name"]: (
            secret["metadata"]["labels"].get(KUBERAY_OWNER_ID_LABEL),
            base64.b64decode(secret["data"]["auth_token"]).decode(),
        )
        for secret in kube.items("secrets", "app.kubernetes.io/managed-by=isaaclab-ray-workflow")
    }


def test_two_people_under_one_login_never_take_or_delete_each_others_clusters_or_tokens(
    kube, monkeypatch, tmp_path, capsys
):
    alice = become(monkeypatch, tmp_path, "alice")
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner", *SMALL) == 0
    bob = become(monkeypatch, tmp_path, "bob")
    assert alice.login == bob.login == "lab" and alice.id != bob.id
    capsys.readouterr()
    # The same launch line: refused, naming the owner, and nothing applied.
    assert launch("--namespace", kube.name, "--image", "img:2", "--name", "tuner", *SMALL) == 2
    err = capsys.readouterr().err
    assert f"RayCluster tuner in namespace {kube.name} belongs to lab (owner {alice.id}), not you" in err
    assert "--adopt to take it over" in err and err.count("\n") == 1
    tuner = kube.clusters()["tuner"]
    assert tuner["metadata"]["labels"][KUBERAY_OWNER_ID_LABEL] == alice.id and tuner["metadata"]["generation"] == 1
    assert launch("--namespace", kube.name, "--image", "img", "--name", "tuner-bob", *SMALL) == 0

    # Each reads their own token from a Secret of their own.
    owners = secret_owners(kube)
    clusters = kube.clusters()
    assert {owner for owner, _ in owners.values()} == {alice.id, bob.id}
    for cluster, person in (("tuner", alice), ("tuner-bob", bob)):
        secret = clusters[cluster]["spec"]["authOptions"]["secretName"]
        assert owners[secret] == (person.id, (tmp_path / ("alice" if person is alice else "bob")).with_suffix(
            ".token").read_text())  # fmt: skip

    # Bob sees, waits for and ends only his own.
    running_pods(kube, 2)
    capsys.readouterr()
    assert launch_main(["--status", "--namespace", kube.name]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]] == ["tuner-bob"]
    addresses = tmp_path / "ray_address"
    assert grok_main(["kubectl", "--namespace", kube.name, "--output", str(addresses)]) == 0
    assert [cluster.name for cluster in address_file.read(addresses)] == ["tuner-bob"]
    assert launch_main(["--down", "--name", "tuner", "--namespace", kube.name]) == 0
    assert "no RayCluster of ours named 'tuner'" in capsys.readouterr().out
    assert sorted(kube.clusters()) == ["tuner", "tuner-bob"]

    # Alice ends hers: her Secret goes with it, Bob's stays.
    become(monkeypatch, tmp_path, "alice")
    assert launch_main(["--down", "--name", "tuner", "--namespace", kube.name]) == 0
    assert sorted(kube.clusters()) == ["tuner-bob"]
    assert wait_for(lambda: [owner for owner, _ in secret_owners(kube).values()] == [bob.id], 30, "alice's Secret")
    # Deliberately, with --adopt, one may end another's cluster.
    assert launch_main(["--down", "--name", "tuner-bob", "--namespace", kube.name, "--adopt"]) == 0
    assert kube.clusters() == {}


def test_a_secret_of_ours_that_holds_another_persons_token_is_never_overwritten(kube, monkeypatch, tmp_path, capsys):
    alice = become(monkeypatch, tmp_path, "alice")
    assert launch("--namespace", kube.name, "--image", "img", "--name", "a", "--auth_secret", "lab-token", *SMALL) == 0
    become(monkeypatch, tmp_path, "bob")
    capsys.readouterr()
    assert launch("--namespace", kube.name, "--image", "img", "--name", "b", "--auth_secret", "lab-token", *SMALL) == 2
    assert "Secret lab-token in namespace" in capsys.readouterr().err
    assert secret_owners(kube)["lab-token"] == (alice.id, (tmp_path / "alice.token").read_text())
    assert sorted(kube.clusters()) == ["a"]


def set_status(kube: Namespace, pod: str, status: dict) -> None:
    """What a kubelet would report for ``pod``; KWOK leaves a Pod so annotated alone from then on."""
    kube.kubectl("annotate", "pod", pod, "kwok.x-k8s.io/status=custom", "--overwrite")
    kube.kubectl("patch", "pod", pod, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


@pytest.mark.parametrize(
    ("container", "said"),
    [
        (
            {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "img:typo"'}},
            'container ray-head is waiting: ImagePullBackOff: Back-off pulling image "img:typo"',
        ),
        (
            {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "container ray-head is waiting: CrashLoopBackOff: back-off 40s restarting failed container "
            "(it last ended OOMKilled, exit code 137)",
        ),
    ],
)
def test_a_head_whose_container_cannot_run_is_named_with_the_kubelets_reason(kube, tmp_path, capsys, container, said):
    assert launch("--namespace", kube.name, "--image", "img:typo", "--name", "stuck", *SMALL) == 0
    (head,) = running_pods(kube, 1)
    last = {"terminated": {"reason": "OOMKilled", "exitCode": 137}} if "Crash" in said else {}
    set_status(kube, head["metadata"]["name"], {
        "phase": "Running" if "Crash" in said else "Pending",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "ray-head", "image": "img:typo", "imageID": "", "ready": False,
                               "restartCount": 3, "state": container, "lastState": last}],
    })  # fmt: skip
    capsys.readouterr()
    assert grok_main(["kubectl", "--namespace", kube.name, "--output", str(tmp_path / "a"), "--timeout_s", "6"]) == 1
    err = capsys.readouterr().err
    assert f"not ready after 6 s: stuck: head pod {head['metadata']['name']} is " in err and said in err, err
    assert launch_main(["--status", "--namespace", kube.name]) == 0
    assert said in capsys.readouterr().out


def test_the_operators_warning_says_why_a_cluster_has_no_head(kube, tmp_path, capsys):
    """A service account that is not there: the operator makes no head and says so in a Warning event."""
    assert launch("--namespace", kube.name, "--image", "img", "--name", "nosa", "--service_account_name", "nosuch",
                  *SMALL) == 0  # fmt: skip
    capsys.readouterr()
    assert grok_main(["kubectl", "--namespace", kube.name, "--output", str(tmp_path / "a"), "--timeout_s", "20"]) == 1
    err = capsys.readouterr().err
    assert "nosa: Warning AutoscalerServiceAccountNotFound: " in err and "ServiceAccount nosuch is not found" in err


def test_a_cluster_no_operator_reconciles_is_said_to_be_so(kube, tmp_path, capsys, monkeypatch):
    """Another controller manages it (as MultiKueue does): KubeRay never records its status."""
    assert launch("--namespace", kube.name, "--image", "img", "--name", "elsewhere", *SMALL, "--dry_run",
                  "--output", str(tmp_path / "m.yaml")) == 0  # fmt: skip
    manifest = tmp_path / "m.yaml"
    text = manifest.read_text().replace("spec:\n", "spec:\n  managedBy: kueue.x-k8s.io/multikueue\n", 1)
    kube.kubectl("apply", "-f", "-", stdin=text)
    monkeypatch.setattr(heads, "UNRECONCILED_AFTER_S", 2.0)
    capsys.readouterr()
    assert grok_main(["kubectl", "--namespace", kube.name, "--output", str(tmp_path / "a"), "--timeout_s", "8"]) == 1
    assert f"elsewhere: no KubeRay operator is reconciling namespace {kube.name}" in capsys.readouterr().err


def test_a_launch_whose_workers_cannot_be_scheduled_says_so_and_writes_the_ready_head(kube, tmp_path, capsys):
    addresses = tmp_path / "ray_address"
    code = launch_main(["--crd", str(CRD), "--namespace", kube.name, "--image", "img", "--name", "big",
                        "--num_head_cpu", "1", "--head_ram_gb", "2", "--min_workers", "1", "--gpu_per_worker", "0",
                        "--cpu_per_worker", "500", "--address_file", str(addresses), "--timeout_s", "120"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "RayCluster big is ready, but not all its workers: 0/1: " in captured.err
    assert "Insufficient cpu" in captured.err
    assert address_file.read(addresses) == [address_file.ClusterAddress("big", head_endpoint(kube, "big"))]


def test_a_blip_of_the_api_server_while_waiting_is_tried_again(kube, tmp_path, capsys, monkeypatch):
    """kubectl failing once (a restarting API server, a dropped connection) does not end a wait."""
    assert launch("--namespace", kube.name, "--image", "img", "--name", "blip", *SMALL) == 0
    real = subprocess.run(["which", "kubectl"], capture_output=True, text=True, check=True).stdout.strip()
    wrapper, count = tmp_path / "bin" / "kubectl", tmp_path / "calls"
    wrapper.parent.mkdir()
    wrapper.write_text(  # the second look at the head Pods (the first of the wait itself) fails
        "#!/bin/bash\n"
        f'if [[ " $* " == *" ray.io/node-type=head "* ]]; then echo >> {count}; fi\n'
        f'if [[ " $* " == *" ray.io/node-type=head "* ]] && [ "$(wc -l < {count})" = 2 ]; then '
        'echo "Unable to connect to the server: net/http: TLS handshake timeout" >&2; exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    capsys.readouterr()
    assert grok_main(["kubectl", "--namespace", kube.name, "--output", str(tmp_path / "a"), "--timeout_s", "60"]) == 0
    assert count.exists() and "TLS handshake timeout; trying again" in capsys.readouterr().err
