"""A real SLURM (Debian's slurmctld, slurmd, munge; 22.05) started for the tests, as plain processes.

Everything lives in one temp dir: munge's key and socket, SLURM's config, state, spool and
logs, on ports found free. Two slurmd run on this machine as two nodes (``slurmd -N``, each
on its own port), so a cluster really spans an allocation of several nodes: the head on the
first, a worker on the second. Only the process groups started here are ever ended.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from daemons import Daemons, free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
NODES = ("node1", "node2")
CPUS_PER_NODE = 4  # more than this machine has (config_overrides), so that other jobs fit beside a cluster
MEMORY_MB_PER_NODE = 6000


def missing() -> str | None:
    """Why a real SLURM cannot be started here, or None."""
    if os.geteuid() != 0:
        return "SLURM's daemons must start as root (CI runs as root)"
    absent = [daemon for daemon in DAEMONS if shutil.which(daemon) is None and not Path(f"/usr/sbin/{daemon}").exists()]
    if absent:
        return f"{', '.join(absent)} not installed: run `make slurm` (Debian's slurmctld slurmd slurm-client munge)"
    return None


def _daemon(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmForTests:
    """munged, slurmctld and one slurmd per node; ``environment`` points SLURM's commands at it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pytest_slurm_"))
        self.root.chmod(0o755)
        self.conf = self.root / "slurm.conf"
        self.daemons = Daemons(self.root / "log")
        self.environment = {"SLURM_CONF": str(self.conf)}

    def start(self, timeout_s: float = 60.0) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o755)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        owner = pwd.getpwnam("munge")
        for path in (munge, key):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        socket_path = munge / "munge.sock"
        self.daemons.spawn(
            "munged",
            [
                _daemon("munged"),
                "--foreground",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--log-file={munge / 'munged.log'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
            user="munge",
        )
        self.daemons.wait("munged's socket", socket_path.exists, timeout_s, poll_s=0.2)
        node_lines = "\n".join(
            f"NodeName={node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 Port={free_port()} "
            f"CPUs={CPUS_PER_NODE} RealMemory={MEMORY_MB_PER_NODE} State=UNKNOWN"
            for node in NODES
        )
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        self.conf.write_text(
            f"""ClusterName=pytest
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path}
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}/%n
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root / "slurmd.%n.pid"}
SlurmctldLogFile={self.root / "log" / "slurmctld.log"}
SlurmdLogFile={self.root / "log" / "slurmd.%n.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
KillWait=10
SlurmdParameters=config_overrides
{node_lines}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )
        self.daemons.spawn("slurmctld.out", [_daemon("slurmctld"), "-D", "-f", str(self.conf)])
        for node in NODES:
            self.daemons.spawn(f"slurmd.{node}.out", [_daemon("slurmd"), "-D", "-f", str(self.conf), "-N", node])
        self.daemons.wait("both SLURM nodes to be idle", self._nodes_idle, timeout_s, poll_s=0.2)

    def run(self, *command: str) -> subprocess.CompletedProcess:
        """A SLURM command from the harness's own folder, where ``sbatch --wrap`` leaves its ``slurm-<id>.out``."""
        return subprocess.run(
            command, cwd=self.root, env={**os.environ, **self.environment}, capture_output=True, text=True, check=False
        )

    def _nodes_idle(self) -> bool:
        listing = self.run("sinfo", "--noheader", "--Node", "--format=%N %t")
        states = dict(line.split() for line in listing.stdout.splitlines() if len(line.split()) == 2)
        return all(states.get(node) == "idle" for node in NODES)

    def queue(self) -> list[str]:
        """Every job in the queue, ours or not: ``id name state``."""
        return self.run("squeue", "--noheader", "--format=%i %j %T").stdout.split("\n")[:-1]

    def job_ids(self) -> set[str]:
        return {line.split()[0] for line in self.queue()}

    def job_state(self, job_id: str) -> str:
        """SLURM's own word on a job, also once it has ended (``scontrol show job``)."""
        shown = self.run("scontrol", "show", "job", "--oneliner", job_id).stdout
        return dict(field.split("=", 1) for field in shown.split() if "=" in field).get("JobState", "")

    def stop(self) -> None:
        """Cancel every job (all were started by the tests), wait for SLURM to end them, then stop the daemons:
        a job's slurmstepd is not in slurmd's process group and would outlive it."""
        if jobs := [line.split()[0] for line in self.queue()]:
            self.run("scancel", *jobs)
            deadline = time.monotonic() + 60
            while self.queue() and time.monotonic() < deadline:
                time.sleep(0.5)
        self.daemons.stop()
        shutil.rmtree(self.root, ignore_errors=True)
