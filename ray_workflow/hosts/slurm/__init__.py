"""The SLURM host: one batch job per Ray cluster (``script`` renders it, ``jobs`` drives SLURM's commands).

``SlurmHost`` offers the verbs of every host (``ray_workflow.hosts``). Our clusters are those recorded in
``state_dir`` (a folder the compute nodes share with the machine that launches): ``status`` and ``down`` see
the same ones, so a second HOME of one account, or a colleague under the same login, never ends another's
cluster.
"""

from __future__ import annotations

from pathlib import Path

from ray_workflow import PROJECT_ROOT, files
from ray_workflow.address_file import ClusterAddress, HostRecord
from ray_workflow.errors import setting
from ray_workflow.hosts import ClusterStatus, Rendered, Started
from ray_workflow.hosts.slurm import jobs, script
from ray_workflow.hosts.slurm.jobs import DEFAULT_STATE_DIR, SlurmError, SlurmJob
from ray_workflow.hosts.slurm.script import AUTO_PORTS, SlurmClusterSpec, SlurmInputError
from ray_workflow.names import SLURM, check_cluster_name, is_member

DEFAULT_LOG_DIR = PROJECT_ROOT / "logs" / "slurm"  # ignored by git, left out of job uploads

__all__ = ["AUTO_PORTS", "DEFAULT_LOG_DIR", "DEFAULT_STATE_DIR", "SlurmClusterSpec", "SlurmError", "SlurmHost",
           "SlurmInputError"]  # fmt: skip


class SlurmHost:
    """Our SLURM clusters, recorded in ``state_dir``; job logs go to ``log_dir``."""

    kind = "SLURM job"
    scope = ""
    name_rule = SLURM

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, log_dir: Path = DEFAULT_LOG_DIR) -> None:
        self.state_dir, self.log_dir = Path(state_dir), Path(log_dir)

    @property
    def record(self) -> HostRecord:
        return jobs.host_record(self.state_dir)

    @classmethod
    def from_record(cls, record: HostRecord) -> SlurmHost:
        return cls(Path(record.get("state_dir") or DEFAULT_STATE_DIR))

    def render(self, spec: SlurmClusterSpec, names: list[str]) -> list[Rendered]:
        rendered = []
        for cluster in script.specs_for(spec, names):
            text = script.render(cluster, self.state_dir, self.log_dir)
            rendered.append(Rendered(cluster.name, text, cluster))
        return rendered

    def check(self, rendered: list[Rendered], offline: bool) -> str:
        for field, folder in (("state_dir", self.state_dir), ("log_dir", self.log_dir)):
            if why := files.why_not_writable(folder):
                raise SlurmInputError(f"{setting(field)} {folder}: cannot keep files there ({why})")
        if offline:
            return "not checked by SLURM (sbatch --test-only runs before they are submitted)"
        jobs.check([(cluster.document, cluster.text) for cluster in rendered])
        return "accepted by sbatch --test-only"

    def start(self, rendered: list[Rendered]) -> Started:
        scripts = [(cluster.document, cluster.text) for cluster in rendered]
        submitted = jobs.submit(scripts, self.state_dir, self.log_dir)
        names = [job.name for job in submitted]
        return Started(names=names, new=names, said=[f"submitted {job.name} (job {job.job_id})" for job in submitted])

    def wait_ready(self, names: list[str], timeout_s: float) -> list[ClusterAddress]:
        recorded = {job.name: job for job in jobs.recorded(self.state_dir, names)}
        if missing := [name for name in names if name not in recorded]:
            raise SlurmError(f"no SLURM cluster of ours named {missing[0]!r} is recorded in {self.state_dir}")
        return jobs.wait_ready([recorded[name] for name in names], self.state_dir, timeout_s)

    def status(self, name: str | None = None) -> list[ClusterStatus]:
        if name is not None:
            check_cluster_name(name, rule=SLURM)
        return [
            ClusterStatus(job.name, job.state, _detail(job, self.state_dir), alive=job.alive)
            for job in jobs.recorded(self.state_dir)
            if name is None or is_member(job.name, name)
        ]

    def why_ended(self, name: str) -> str | None:
        return jobs.why_cluster_ended(name, self.state_dir)

    def down(self, names: list[str]) -> list[ClusterStatus]:
        """Cancel exactly our recorded clusters ``names``, wait until SLURM has ended them, and remove what we kept
        for them; a cluster whose job had ended already is only forgotten."""
        chosen = jobs.recorded(self.state_dir, names)
        jobs.cancel(chosen, self.state_dir)
        return [
            ClusterStatus(job.name, "cancelled", f"job {job.job_id}", alive=False)
            if job.alive
            else ClusterStatus(job.name, "forgotten", f"job {job.job_id}, {job.state} already", alive=False)
            for job in chosen
        ]


def _detail(job: SlurmJob, state_dir: Path) -> str:
    """Where the job runs and why it waits, as SLURM says (which gives an empty reason as ``None``), and the GCS
    address ``ray status --address`` takes once the head is up."""
    reason = "" if job.reason == "None" else job.reason
    gcs = jobs.gcs_address(job, state_dir) if job.alive else None
    return " ".join(filter(None, [f"job {job.job_id}", job.nodes, reason, f"GCS {gcs}" if gcs else ""]))
