"""Checking a Ray cluster before trusting it with a sweep: GPUs, drivers, CUDA, Ray, Python packages.

Runs as a Ray job: N tasks, each holding G GPUs, each reporting what its node offers.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import ray

from ray_workflow.errors import WorldError

BASE_PACKAGES = ("ray", "numpy", "torch")
ISAACLAB_PACKAGES = ("isaaclab", "isaaclab_tasks", "isaacsim")


class ClusterTooSmall(WorldError, RuntimeError):
    """The cluster can never run the requested tasks at once."""


@dataclass
class TaskReport:
    index: int
    node: str
    cuda_visible_devices: str
    ray_gpu_ids: list[Any]
    nvidia_smi: str
    torch_cuda: str
    ray_version: str
    python: str
    missing_packages: list[str] = field(default_factory=list)


def _nvidia_smi() -> str:
    if shutil.which("nvidia-smi") is None:
        return "missing (not on PATH)"
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    if listing.returncode != 0:
        return f"failed: {(listing.stderr or listing.stdout).strip().splitlines()[:1]}"
    gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    return f"{len(gpus)} GPU(s): {gpus[0].split(' (UUID')[0]}" if gpus else "no GPU listed"


def _torch_cuda() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if not torch.cuda.is_available():
        return "CUDA not available"
    return f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"


def _missing(packages: tuple[str, ...]) -> list[str]:
    missing = []
    for package in packages:
        try:
            importlib.import_module(package)
        except Exception:  # any import failure means the package is unusable
            missing.append(package)
    return missing


def probe(index: int, packages: tuple[str, ...]) -> TaskReport:
    """What one task sees on its node (runs inside the Ray task)."""
    return TaskReport(
        index=index,
        node=f"{socket.gethostname()} ({ray.util.get_node_ip_address()})",
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
        ray_gpu_ids=list(ray.get_gpu_ids()),
        nvidia_smi=_nvidia_smi(),
        torch_cuda=_torch_cuda(),
        ray_version=ray.__version__,
        python=f"{platform.python_version()} {sys.executable}",
        missing_packages=_missing(packages),
    )


def largest_node() -> dict[str, float]:
    """The most of each resource (CPU, GPU, ...) that one alive node of the connected cluster has."""
    largest: dict[str, float] = {}
    for node in ray.nodes():
        if node["Alive"]:
            for resource, amount in node["Resources"].items():
                largest[resource] = max(largest.get(resource, 0.0), amount)
    return largest


def check_capacity(num_jobs: int, gpus_per_job: float) -> None:
    """Refuse at once what the cluster can never hold, instead of waiting forever."""
    needed = num_jobs * gpus_per_job
    total = ray.cluster_resources().get("GPU", 0)
    largest = largest_node().get("GPU", 0)
    if needed > total or gpus_per_job > largest:
        raise ClusterTooSmall(
            f"cluster has {total:g} GPUs (at most {largest:g} on one node); "
            f"{num_jobs} x {gpus_per_job:g} = {needed:g} requested"
        )


def failures(reports: list[TaskReport], gpus_per_job: float, require_nvidia_smi: bool) -> list[str]:
    """Why the cluster is not fit, one line a reason; empty if it is."""
    reasons = []
    for report in reports:
        where = f"task {report.index} on {report.node}"
        if gpus_per_job > 0 and not report.ray_gpu_ids:
            reasons.append(f"{where}: Ray assigned no GPU")
        if gpus_per_job > 0 and require_nvidia_smi and report.nvidia_smi.startswith(("missing", "failed")):
            reasons.append(f"{where}: nvidia-smi {report.nvidia_smi}")
        if report.nvidia_smi[:1].isdigit() and report.torch_cuda == "CUDA not available":
            reasons.append(f"{where}: nvidia-smi sees GPUs but torch cannot use CUDA")
        if report.missing_packages:
            reasons.append(f"{where}: cannot import {', '.join(report.missing_packages)}")
    if gpus_per_job >= 1:
        by_node: dict[str, list[str]] = {}
        for report in reports:
            by_node.setdefault(report.node, []).append(report.cuda_visible_devices)
        for node, devices in by_node.items():
            if len(set(devices)) != len(devices):
                reasons.append(f"{node}: tasks holding whole GPUs share CUDA_VISIBLE_DEVICES {sorted(devices)}")
    return reasons


def run_check(
    num_jobs: int, gpus_per_job: float, require_isaaclab: bool, check_capacity_first: bool = True
) -> list[TaskReport]:
    """Run ``num_jobs`` probe tasks of ``gpus_per_job`` GPUs each, all at once."""
    if check_capacity_first:
        check_capacity(num_jobs, gpus_per_job)
    packages = BASE_PACKAGES + (ISAACLAB_PACKAGES if require_isaaclab else ())
    remote_probe = ray.remote(num_gpus=gpus_per_job, num_cpus=0)(probe)
    return ray.get([remote_probe.remote(index, packages) for index in range(num_jobs)])
