"""A real Kubernetes node for the tests, beside the KWOK ones: containerd and runc running the Pods' containers,
the kubelet, kube-proxy, a CNI bridge and CoreDNS, all built from Go modules by ``make k8s`` (k8s/build.sh), and
the Ray image that k8s/ray-image.sh builds (the node pulls nothing).

The node lives in a network namespace of its own, joined to this machine by one veth pair: the API server listens
on this side's address, the kubelet and the Pods' bridge on the other. Pod and Service addresses exist only in
that namespace (and the Pods' own), and this machine routes nothing on. Its folders are one temp dir; its cgroups
one cgroup root; its daemons process groups of their own. The kubelet runs in a mount namespace of its own, in
which the kernel settings it would change for the whole machine read as it wants them, so it changes none.
``stop`` removes every container, mount, namespace and cgroup it made, and ``leftovers`` says if any remain.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from daemons import Daemons
from k8s_harness import KubernetesForTests

from ray_workflow import PROJECT_ROOT

IMAGE_SCRIPT = PROJECT_ROOT / "k8s" / "ray-image.sh"
PAUSE_IMAGE = "isaaclab-ray.local/pause:1"
POD_CIDR = "10.88.0.0/16"
DNS_ADDRESS = "10.88.0.1"  # the bridge's own address in the node's namespace, where CoreDNS answers
CGROUP_FOLDER = Path("/sys/fs/cgroup")
NODE_NAME = "cpu-node-1"
# What GKE puts on a small CPU node pool's nodes.
NODE_LABELS = {"cloud.google.com/gke-nodepool": "cpu-pool", "node.kubernetes.io/instance-type": "n2-standard-8"}
# The machine-wide settings the kubelet would change (pkg/kubelet/cm's setupKernelTunables), as it wants them.
KUBELET_KERNEL_SETTINGS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# What fits this 2-CPU node: a head of half a CPU beside KubeRay's autoscaler sidecar (half a CPU), one worker.
SMALL_CLUSTER_FLAGS = ("--cluster_host", "local", "--num_head_cpu", "0.5", "--head_ram_gb", "4",
                       "--gpu_per_worker", "0", "--cpu_per_worker", "1", "--ram_gb_per_worker", "2",
                       "--max_workers", "1")  # fmt: skip
# Run in a head Pod: how many Ray nodes are alive.
ALIVE_NODES = "import ray; ray.init(address='auto'); print(sum(node['Alive'] for node in ray.nodes()))"
# A job of two actors of one CPU each: one fits on the head (1 CPU), the other only on a worker the autoscaler adds.
TWO_NODES_JOB = """
import ray
ray.init()

@ray.remote(num_cpus=1)
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id()

print("nodes used:", len({ray.get(actor.node.remote()) for actor in [Where.remote(), Where.remote()]}))
"""
NODE_PARTS = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "crictl", "kubelet", "kube-proxy", "coredns")


def ray_image_archive() -> Path | None:
    """The Ray image ``make k8s`` built, or None."""
    path = Path(
        subprocess.run([str(IMAGE_SCRIPT), "--where"], capture_output=True, text=True, check=True).stdout.strip()
    )
    return path if path.exists() else None


def ray_image_name(archive: Path) -> str:
    return f"isaaclab-ray.local/ray:{archive.stem.removeprefix('ray-')}"


def missing(bin_dir: Path | None) -> str | None:
    """Why a real node cannot start here, or None."""
    if os.geteuid() != 0:
        return "a real node needs root (network namespaces, mounts, cgroups)"
    if bin_dir is None or not all((bin_dir / part).exists() for part in NODE_PARTS):
        return "the node's binaries are not built: run `make k8s`"
    if ray_image_archive() is None:
        return "the Ray image is not built: run `make k8s` (k8s/ray-image.sh, needs debootstrap)"
    if shutil.which("iptables") is None:
        return "kube-proxy and the CNI bridge need iptables (apt-get install iptables)"
    return None


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


def _free_link_subnet() -> ipaddress.IPv4Network:
    """A /30 for the veth pair that no address or route of this machine is in (100.64.0.0/10, shared space)."""
    taken = [
        ipaddress.ip_network(word, strict=False)
        for line in _run("ip", "-4", "-o", "addr").stdout.splitlines() + _run("ip", "-4", "route").stdout.splitlines()
        for word in line.split()
        if "/" in word and word[0].isdigit()
    ]
    while True:
        candidate = ipaddress.ip_network(f"100.{64 + secrets.randbelow(64)}.{secrets.randbelow(256)}.0/30")
        if not any(candidate.overlaps(network) for network in taken):
            return candidate


class NodeNetwork:
    """The node's network namespace and the veth pair to it; made before the control plane, which listens on
    ``host_address``."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.namespace = f"isaaclab-ray-{tag}"
        self.host_link, self.node_link = f"irh{tag}", f"irn{tag}"
        subnet = _free_link_subnet()
        self.host_address, self.node_address = (str(address) for address in list(subnet.hosts())[:2])
        self.up = False

    def create(self) -> None:
        _run("ip", "netns", "add", self.namespace)
        self.up = True
        _run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.node_link)
        _run("ip", "link", "set", self.node_link, "netns", self.namespace)
        _run("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_link)
        _run("ip", "link", "set", self.host_link, "up")
        inside = self.inside
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{self.node_address}/30", "dev", self.node_link)
        _run(*inside, "ip", "link", "set", self.node_link, "up")
        # Pods reach the API server (behind the kubernetes Service) through the veth as the node's address.
        _run(*inside, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        _run(
            *inside,
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            POD_CIDR,
            "-o",
            self.node_link,
            "-j",
            "MASQUERADE",
        )

    @property
    def inside(self) -> list[str]:
        """A command prefix that runs in the node's network namespace (and nothing else of it: not ``ip netns exec``,
        which would remount /sys and hide the cgroups)."""
        return ["nsenter", f"--net=/run/netns/{self.namespace}"]

    def delete(self) -> None:
        if self.up:
            _run("ip", "netns", "delete", self.namespace, check=False)
            _run("ip", "link", "delete", self.host_link, check=False)
            self.up = False


class RealNode:
    """One real node: ``start`` after the control plane answers, ``stop`` before it stops."""

    def __init__(self, bin_dir: Path, network: NodeNetwork, kubeconfig: Path) -> None:
        """``kubeconfig`` reaches the API server from the node's namespace (its server is the link's address)."""
        self.bin, self.network, self.kubeconfig = bin_dir, network, kubeconfig
        self.root = Path(tempfile.mkdtemp(prefix="pytest_node_"))
        self.daemons = Daemons(self.root / "logs")
        self.socket = self.root / "containerd" / "containerd.sock"
        self.cgroup_root = f"/{network.namespace}"
        self.image_archive = ray_image_archive()
        self.image = ray_image_name(self.image_archive) if self.image_archive else ""

    # -- start ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        # The kubelet mounts Pods' volumes in its own mount namespace; they reach containerd's through this
        # shared mount (this machine's mounts are private).
        _run("mount", "--bind", str(self.root), str(self.root))
        _run("mount", "--make-shared", str(self.root))
        self._make_cgroup_root()
        self._start_containerd()
        self._import_images()
        self._start_kubelet()
        self._start_kube_proxy()
        self._start_coredns()

    def _spawn(self, name: str, command: list[str]) -> None:
        self.daemons.spawn(name, [*self.network.inside, *command], cwd=self.root)

    def _make_cgroup_root(self) -> None:
        for hierarchy in self._cgroup_hierarchies():
            folder = hierarchy / self.cgroup_root.lstrip("/")
            folder.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for setting in ("cpuset.cpus", "cpuset.mems"):
                    (folder / setting).write_text((hierarchy / setting).read_text())

    @staticmethod
    def _cgroup_hierarchies() -> list[Path]:
        """The cgroup v1 hierarchies (cgroup2's ``unified`` holds no controller on these machines)."""
        return [path for path in CGROUP_FOLDER.iterdir() if path.is_dir() and path.name != "unified"]

    def _start_containerd(self) -> None:
        state = self.root / "containerd"
        cni_conf = self.root / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-bridge.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "pods0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "dataDir": str(self.root / "cni" / "ipam"),
                                "ranges": [[{"subnet": POD_CIDR, "gateway": DNS_ADDRESS}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                }
            )
        )
        config = {
            "version": 4,
            "root": str(state / "root"),
            "state": str(state / "state"),
            "disabled_plugins": [
                "io.containerd.nri.v1.nri",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.zfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.blockfile",
                "io.containerd.snapshotter.v1.erofs",
                "io.containerd.internal.v1.tracing",
            ],
            "plugins": {
                "io.containerd.server.v1.grpc": {"address": str(self.socket)},
                "io.containerd.server.v1.ttrpc": {"address": f"{self.socket}.ttrpc"},
                "io.containerd.internal.v1.opt": {"path": str(state / "opt")},
                "io.containerd.shim.v1.manager": {"socket_dir": str(state / "s")},
                "io.containerd.cri.v1.images": {
                    "snapshotter": "overlayfs",
                    "pinned_images": {"sandbox": PAUSE_IMAGE},
                    "image_pull_progress_timeout": "30s",
                },
                "io.containerd.cri.v1.runtime": {
                    "netns_mounts_under_state_dir": True,
                    # These machines withhold CAP_SYS_RESOURCE: no Pod may go below containerd's own OOM score.
                    "restrict_oom_score_adj": True,
                    "cdi_spec_dirs": [],
                    "enable_criu": False,
                    "containerd": {
                        "default_runtime_name": "runc",
                        "runtimes": {
                            "runc": {
                                "runtime_type": "io.containerd.runc.v2",
                                "options": {
                                    "BinaryName": str(self.bin / "runc"),
                                    "Root": str(state / "runc"),
                                    "SystemdCgroup": False,
                                },
                            }
                        },
                    },
                    "cni": {"bin_dirs": [str(self.bin / "cni")], "conf_dir": str(cni_conf)},
                },
                "io.containerd.grpc.v1.cri": {"stream_server_address": "127.0.0.1", "stream_server_port": "0"},
            },
        }
        config_file = self.root / "containerd.toml"
        config_file.write_text(_toml(config))
        # The shim finds runc on PATH too; ours comes first.
        self.daemons.spawn(
            "containerd",
            [*self.network.inside, str(self.bin / "containerd"), "--config", str(config_file)],
            env={"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"},
            cwd=self.root,
        )
        self.daemons.wait(
            "containerd", lambda: self.socket.exists() and self.crictl("info", check=False).returncode == 0
        )

    def ctr(self, *args: str) -> str:
        return _run(str(self.bin / "ctr"), "--address", str(self.socket), "--namespace", "k8s.io", *args).stdout

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(
            str(self.bin / "crictl"),
            "--runtime-endpoint",
            f"unix://{self.socket}",
            "--image-endpoint",
            f"unix://{self.socket}",
            "--timeout",
            "60s",
            *args,
            check=check,
        )

    def _import_images(self) -> None:
        with tempfile.TemporaryDirectory(dir=self.root) as scratch:
            pause_root = Path(scratch) / "rootfs"
            pause_root.mkdir()
            shutil.copy2(self.bin / "pause", pause_root / "pause")
            archive = Path(scratch) / "pause.tar"
            _run(
                "python3",
                str(PROJECT_ROOT / "k8s" / "oci_image.py"),
                str(pause_root),
                PAUSE_IMAGE,
                str(archive),
                "--cmd",
                "/pause",
            )
            self.ctr("images", "import", str(archive))
        self.ctr("images", "import", str(self.image_archive))

    def _start_kubelet(self) -> None:
        kubelet_root = self.root / "kubelet"
        resolv_conf = self.root / "resolv.conf"
        resolv_conf.write_text("")  # Pods get the cluster's DNS only: nothing off this machine
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": self.network.node_address,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [DNS_ADDRESS],
            "clusterDomain": "cluster.local",
            "resolvConf": str(resolv_conf),
            "failSwapOn": False,
            "podLogsDir": str(self.root / "pod-logs"),
            "volumePluginDir": str(self.root / "volume-plugins"),
            "staticPodPath": "",
            "maxPods": 30,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "protectKernelDefaults": False,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
        }
        config_file = self.root / "kubelet.yaml"
        config_file.write_text(yaml.safe_dump(config))
        kernel_settings = self.root / "kernel-settings"
        kernel_settings.mkdir()
        binds = []
        for setting, value in KUBELET_KERNEL_SETTINGS.items():
            file = kernel_settings / setting.replace("/", ".")
            file.write_text(value + "\n")
            binds.append(f"mount --bind {file} /proc/sys/{setting}")
        labels = ",".join(f"{key}={value}" for key, value in NODE_LABELS.items())
        kubelet = [
            str(self.bin / "kubelet"),
            f"--config={config_file}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={kubelet_root}",
            f"--cert-dir={kubelet_root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.network.node_address}",
            f"--node-labels={labels}",
            "--v=1",
        ]
        # Fixed words only: the paths are this harness's own temp dir.
        script = " && ".join([*binds, 'exec "$@"'])
        self._spawn(
            "kubelet",
            ["unshare", "--mount", "--propagation", "unchanged", "--", "/bin/sh", "-c", script, "kubelet", *kubelet],
        )

    def _start_kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            "bindAddress": self.network.node_address,
            "healthzBindAddress": "",
            "metricsBindAddress": "",
            # Leave the machine-wide conntrack settings alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        config_file = self.root / "kube-proxy.yaml"
        config_file.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={config_file}"])

    def _start_coredns(self) -> None:
        corefile = self.root / "Corefile"
        corefile.write_text(
            ".:53 {\n    errors\n    cache 5\n"
            f"    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {self.kubeconfig}\n"
            "        pods insecure\n    }\n}\n"
        )
        self._spawn("coredns", [str(self.bin / "coredns"), "-conf", str(corefile)])

    # -- what the tests ask -----------------------------------------------------------------------------------
    def containers(self) -> list[dict[str, Any]]:
        """Every container containerd knows, running or not."""
        return json.loads(self.crictl("ps", "--all", "-o", "json").stdout).get("containers", [])

    def leftovers(self) -> list[str]:
        """What of this node is still on the machine after ``stop``: processes, mounts, namespaces, cgroups."""
        found = [f"process {pid}: {command[:200]}" for pid, command in self._processes().items()]
        found += [f"mount {line.split()[4]}" for line in _mounts() if str(self.root) in line.split()[4]]
        if self.network.namespace in _run("ip", "netns", "list").stdout:
            found.append(f"network namespace {self.network.namespace}")
        if _run("ip", "link", "show", self.network.host_link, check=False).returncode == 0:
            found.append(f"link {self.network.host_link}")
        found += [f"cgroup {path}" for path in self._cgroup_folders()]
        return found

    def _processes(self) -> dict[int, str]:
        """Processes whose command line names this node's folder or namespace (containerd's shims do), by pid."""
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(self.root) in command or self.network.namespace in command:
                found[int(pid)] = command
        return found

    def _cgroup_folders(self) -> list[Path]:
        folders = []
        for hierarchy in self._cgroup_hierarchies():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if top.exists():
                folders += sorted((path for path in top.rglob("*") if path.is_dir()), key=lambda p: -len(p.parts))
                folders.append(top)
        return folders

    # -- stop -------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Every Pod sandbox stopped and removed through containerd (their shims and processes go with them), then
        the daemons, the namespace, the mounts and the cgroups."""
        if self.daemons.processes.get("containerd") and self.daemons.processes["containerd"].poll() is None:
            for daemon in ("kubelet", "kube-proxy", "coredns"):
                self.daemons.end(daemon)
            self.crictl("rmp", "--all", "--force", check=False)
        self.daemons.stop()
        self._end_our_processes()
        for line in reversed(_mounts()):
            target = line.split()[4]
            if target.startswith(str(self.root)):
                _run("umount", "--lazy", target, check=False)
        self.network.delete()
        for folder in self._cgroup_folders():
            _remove_cgroup(folder)
        shutil.rmtree(self.root, ignore_errors=True)

    def _end_our_processes(self) -> None:
        """Shims and containers that outlived containerd: found by this node's own folder on their command line or
        by the cgroup root of ours they are in, by pid."""
        for _ in range(50):
            pids = {int(pid) for folder in self._cgroup_folders() for pid in _cgroup_pids(folder)}
            pids |= set(self._processes())
            pids.discard(os.getpid())
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)


def _mounts() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


def _cgroup_pids(folder: Path) -> list[str]:
    try:
        return (folder / "cgroup.procs").read_text().split()
    except OSError:
        return []


def _remove_cgroup(folder: Path) -> None:
    for _ in range(50):
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def _toml(table: dict[str, Any], prefix: str = "") -> str:
    """The little TOML containerd's configuration needs: strings, numbers, booleans, lists and nested tables."""
    lines, tables = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
        text += f"\n[{name}]\n" + _toml(value, name)
    return text


@contextlib.contextmanager
def control_plane_with_real_node(bin_dir: Path) -> Iterator[tuple[KubernetesForTests, RealNode]]:
    """A control plane listening on the node's link, KWOK GPU nodes (no KWOK CPU node, so CPU Pods go to the real
    node) and the real node, Ready; afterwards everything stopped, and ``leftovers`` of the node (checked by the
    caller) should be none."""
    network = NodeNetwork()
    plane = KubernetesForTests(bin_dir, host=network.host_address, cpu_nodes=False)
    node = None
    try:
        network.create()
        plane.start()
        node = RealNode(plane.bin, network, plane.kubeconfig)
        node.start()
        jsonpath = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        node.daemons.wait(
            "the real node Ready",
            lambda: plane.kubectl("get", "node", NODE_NAME, "-o", jsonpath, check=False).strip() == "True",
        )
        yield plane, node
    finally:
        if node is not None:
            node.stop()
        plane.stop()
        network.delete()
