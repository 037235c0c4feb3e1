"""What the benchmarks share: the project on sys.path, a local cluster, and summary statistics."""

from __future__ import annotations

import contextlib
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from ray_workflow.hosts import local as local_cluster  # noqa: E402


@contextlib.contextmanager
def local_clusters(count: int, num_cpus: int, prefix: str = "bench") -> Iterator[list[local_cluster.LocalCluster]]:
    """Fresh clusters on their own ports, stopped afterwards whatever happens (SIGTERM included)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    state_dir = Path(tempfile.mkdtemp(prefix="bench_state_"))
    with local_cluster.running(count, name=prefix, num_cpus=num_cpus, state_dir=state_dir) as clusters:
        yield clusters


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def describe(values: list[float], unit: str = "s") -> str:
    return (
        f"median {statistics.median(values):.3f} {unit}, p95 {percentile(values, 0.95):.3f} {unit}, "
        f"min {min(values):.3f}, max {max(values):.3f} (n={len(values)})"
    )
