"""A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
the KubeRay operator and KWOK nodes, as plain processes built from Go modules by ``make k8s`` (k8s/build.sh).

Everything lives in one temp dir (etcd's data, the API server's certificates and token file, the kubeconfig)
on ports found free, so several runs on one machine never meet, and a user's ``~/.kube/config`` is never read.
The nodes are KWOK's: Node objects that KWOK keeps Ready and whose Pods it moves to Running with an IP, with
no container runtime. Only the process groups started here are ever ended.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from daemons import Daemons, free_port

from ray_workflow import PROJECT_ROOT

BUILD_SCRIPT = PROJECT_ROOT / "k8s" / "build.sh"
BUNDLED_CRD = PROJECT_ROOT / "cluster_configs" / "kuberay_crd" / "ray.io_rayclusters.yaml"
KWOK_MANAGED = {"kwok.x-k8s.io/node": "fake"}
# What GKE puts on an L4 node pool's nodes (g2-standard-12) and on a CPU pool's (n2-standard-32).
GPU_NODE = {
    "labels": {
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-nodepool": "l4-pool",
        "node.kubernetes.io/instance-type": "g2-standard-12",
    },
    "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    "capacity": {"cpu": "12", "memory": "48Gi", "nvidia.com/gpu": "1", "pods": "110"},
}
CPU_NODE = {
    "labels": {"cloud.google.com/gke-nodepool": "cpu-pool", "node.kubernetes.io/instance-type": "n2-standard-32"},
    "taints": [],
    "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
}


def binaries() -> Path | None:
    """The folder ``make k8s`` built, or None if it has not been built."""
    folder = Path(_where())
    return folder if (folder / ".complete").exists() else None


def _where() -> str:
    return subprocess.run([str(BUILD_SCRIPT), "--where"], capture_output=True, text=True, check=True).stdout.strip()


def missing() -> str | None:
    """Why the control plane cannot start here, or None."""
    if binaries() is None:
        return "the Kubernetes binaries are not built: run `make k8s` (needs Go 1.26 and the Go module proxy)"
    return None


def _write_key_and_certificate(key_path: Path, cert_path: Path | None, common_name: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    if cert_path is None:
        return
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class KubernetesForTests:
    """One control plane; ``environment`` points kubectl (and our tools) at it as the user ``admin``."""

    def __init__(self, bin_dir: Path, host: str = "127.0.0.1", cpu_nodes: bool = True) -> None:
        self.bin, self.host, self.cpu_nodes = bin_dir, host, cpu_nodes
        self.root = Path(tempfile.mkdtemp(prefix="pytest_k8s_"))
        self.kubeconfig = self.root / "kubeconfig"
        self.tokens = {"admin": secrets.token_hex(16), "viewer": secrets.token_hex(16)}
        self.daemons = Daemons(self.root)
        self.api_port = 0
        self.environment = {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _spawn(self, name: str, command: list[str]) -> None:
        self.daemons.spawn(name, command, env=self.environment, cwd=self.root)

    def log(self, name: str) -> str:
        return self.daemons.log(name)

    def _wait(self, what: str, ready: Any, timeout_s: float = 120.0) -> Any:
        return self.daemons.wait(what, ready, timeout_s)

    # -- kubectl ----------------------------------------------------------------------------------------
    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, user: str = "admin") -> str:
        as_user = [] if user == "admin" else ["--token", self.tokens[user]]
        command = [str(self.bin / "kubectl"), *as_user, *args]
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, env={**os.environ, **self.environment}, timeout=120
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout if check else result.stdout + result.stderr

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def _server_answers(self) -> bool:
        return (
            subprocess.run(
                [str(self.bin / "kubectl"), "get", "--raw", "/readyz"],
                capture_output=True,
                env={**os.environ, **self.environment},
                timeout=30,
            ).returncode
            == 0
        )

    # -- start and stop -----------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        etcd_port, peer_port, self.api_port = free_port(), free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=pytest",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=pytest=http://127.0.0.1:{peer_port}",
                "--quota-backend-bytes=1073741824",
            ],
        )
        service_account_key = self.root / "service-account.key"
        _write_key_and_certificate(service_account_key, None, "service-accounts")
        token_file = self.root / "tokens.csv"
        token_file.write_text(
            f'{self.tokens["admin"]},admin,admin,"system:masters"\n{self.tokens["viewer"]},viewer,viewer\n'
        )
        certificates = self.root / "apiserver-certificates"
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={certificates}",
                f"--token-auth-file={token_file}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={service_account_key}",
                f"--service-account-signing-key-file={service_account_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--kubelet-preferred-address-types=InternalIP",
            ],
        )
        self._write_kubeconfig(certificates / "apiserver.crt")
        self._wait("kube-apiserver", self._server_answers)
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={service_account_key}",
                f"--root-ca-file={certificates / 'apiserver.crt'}",
                "--use-service-account-credentials=false",
                "--concurrent-gc-syncs=5",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        self._start_kwok()
        self._install_kuberay()
        self._add_nodes()

    def _write_kubeconfig(self, certificate_authority: Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "pytest",
                    "cluster": {
                        "server": f"https://{self.host}:{self.api_port}",
                        "certificate-authority": str(certificate_authority),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.tokens["admin"]}}],
            "contexts": [{"name": "pytest", "context": {"cluster": "pytest", "user": "admin"}}],
            "current-context": "pytest",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _start_kwok(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(self.bin / "kwok.x-k8s.io_portforwards.yaml"))
        self.kwok_port = free_port()
        _write_key_and_certificate(self.root / "kwok.key", self.root / "kwok.crt", "kwok")
        self._spawn(
            "kwok",
            [
                str(self.bin / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.bin / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--manage-nodes-with-label-selector=",
                "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
                "--disregard-status-with-label-selector=",
                "--cidr=10.244.0.1/16",
                "--node-ip=127.0.0.1",
                f"--node-port={self.kwok_port}",
                f"--server-address=127.0.0.1:{self.kwok_port}",
                f"--tls-cert-file={self.root / 'kwok.crt'}",
                f"--tls-private-key-file={self.root / 'kwok.key'}",
                "--node-lease-duration-seconds=40",
                "--enable-crds=PortForward",
            ],
        )

    def _install_kuberay(self) -> None:
        """The CRDs as KubeRay's Helm chart installs them (RayCluster's is our bundled one), then the operator."""
        operators_own = sorted((self.bin / "kuberay-crds").glob("ray.io_*.yaml"))
        for crd in [BUNDLED_CRD, *[crd for crd in operators_own if crd.name != BUNDLED_CRD.name]]:
            self.kubectl("apply", "--server-side", "-f", str(crd))
        self.kubectl("wait", "--for=condition=Established", "--timeout=120s", "crd", "--all")
        self._spawn(
            "ray-operator",
            [
                str(self.bin / "ray-operator"),
                # The flag the operator's own Deployment passes (config/manager/manager.yaml).
                "--feature-gates=RayClusterStatusConditions=true",
                f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--health-probe-bind-address=127.0.0.1:{free_port()}",
                "--enable-leader-election=false",
                f"--kubeconfig={self.kubeconfig}",
            ],
        )

    def forward_pod(self, namespace: str, pod: str, port: int, target: str) -> None:
        """``kubectl port-forward`` to ``pod``'s ``port`` reaches ``target`` (HOST:PORT) on this machine."""
        host, _, target_port = target.rpartition(":")
        forward = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "PortForward",
            "metadata": {"name": pod, "namespace": namespace},
            "spec": {"forwards": [{"ports": [port], "target": {"address": host, "port": int(target_port)}}]},
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(forward))

    def add_node(self, name: str, shape: dict[str, Any]) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {**KWOK_MANAGED, "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {**shape["labels"], "kubernetes.io/hostname": name, "type": "kwok"},
            },
            "spec": {"taints": shape["taints"]},
            "status": {"capacity": shape["capacity"], "allocatable": shape["capacity"]},
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(node))

    def _add_nodes(self) -> None:
        for index in range(1, 5):
            self.add_node(f"gke-l4-{index}", GPU_NODE)
        for index in range(1, 3 if self.cpu_nodes else 1):
            self.add_node(f"gke-cpu-{index}", CPU_NODE)
        self.kubectl("wait", "--for=condition=Ready", "--timeout=120s", "node", "--all")
        self._wait(
            "the default service account",
            lambda: (
                "default"
                in self.kubectl("get", "serviceaccount", "default", "--namespace", "default", "-o", "name", check=False)
            ),
        )

    def stop(self) -> None:
        self.daemons.stop()
        shutil.rmtree(self.root, ignore_errors=True)
