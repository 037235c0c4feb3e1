"""Cluster hosts: the places our Ray clusters run, each behind the same verbs.

A host owns everything about starting, finding and ending Ray clusters in one kind of place:
``kuberay`` (RayClusters in a Kubernetes namespace, through kubectl), ``slurm`` (one batch job per
cluster) and ``local`` (Ray processes on this machine). Each offers one class with these verbs, with
the same meanings on every host. A host object holds only where it looks (a namespace, a state
folder), never what happened earlier, so the verbs can be called in any order, from any command:

| verb | what it does | returns |
|---|---|---|
| ``render(spec, names)`` | what each cluster of ``names`` starts from (a manifest, a script) | ``Rendered`` each |
| ``check(rendered, offline)`` | refuse what the host would refuse, before anything starts | how they were checked |
| ``start(rendered)`` | start them all, or none | ``Started``: which are new, what the host said |
| ``wait_ready(names, timeout_s)`` | wait until each answers with every node it asked for | their addresses |
| ``status(name)`` | our clusters (``name`` and its ``name-N``, or all) as the host sees them | ``ClusterStatus`` each |
| ``why_ended(name)`` | the host's own word on a cluster that is gone (None while it runs) | a phrase, or None |
| ``down(names)`` | end exactly these of our clusters and remove what we kept for them | ``ClusterStatus`` each |

Names are cluster names (``ray_workflow.names``); a host acts only on clusters that carry our mark and, where
the host keeps records (SLURM, local), that it recorded itself. Messages for people stay in the scripts;
hosts return data, raise ``WorkflowError`` s and log progress. Every address a host returns carries its
``record`` (``address_file.HostRecord``), written into the address file, from which ``from_record`` gets the
host back for any later command. A new host (plain SSH machines, say) is one module with such a class and one
line in ``HOSTS``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ray_workflow import address_file
from ray_workflow.address_file import ClusterAddress, HostRecord
from ray_workflow.errors import WorkflowError, WorldError
from ray_workflow.names import NameRule

logger = logging.getLogger(__name__)

# Each kind of host: the class that serves it, loaded when first asked for.
HOSTS = {
    "kuberay": "ray_workflow.hosts.kuberay:KubeRayHost",
    "slurm": "ray_workflow.hosts.slurm:SlurmHost",
    "local": "ray_workflow.hosts.local:LocalHost",
}


class NotReady(WorldError, RuntimeError):
    """Some clusters ended or were not ready in time; ``ready`` holds the addresses of those that are, so that a
    partly ready launch still writes them."""

    def __init__(self, message: str, ready: list[ClusterAddress]) -> None:
        super().__init__(message)
        self.ready = ready


@dataclass(frozen=True)
class Rendered:
    """One cluster as its host receives it: ``text`` to show or save, ``document`` what ``start`` uses."""

    name: str
    text: str
    document: Any


@dataclass(frozen=True, kw_only=True)
class Started:
    """What ``start`` did: the clusters it started, those of them that did not exist before (what Ctrl-C while
    waiting ends again), and the host's own lines about it."""

    names: list[str]
    new: list[str]
    said: list[str]


@dataclass(frozen=True)
class ClusterStatus:
    """One of our clusters as its host sees it: ``state`` in the host's words, ``detail`` where and why, and
    whether it still runs (or waits to)."""

    name: str
    state: str
    detail: str
    alive: bool = True


class ClusterHost(Protocol):
    kind: str  # what one cluster is to the host, for messages ("RayCluster", "SLURM job")
    scope: str  # where the host looks, for messages (" in namespace NS"), or ""
    name_rule: NameRule  # what the host accepts as a cluster name

    @property
    def record(self) -> HostRecord: ...
    def render(self, spec: Any, names: list[str]) -> list[Rendered]: ...
    def check(self, rendered: list[Rendered], offline: bool) -> str: ...
    def start(self, rendered: list[Rendered]) -> Started: ...
    def wait_ready(self, names: list[str], timeout_s: float) -> list[ClusterAddress]: ...
    def status(self, name: str | None = None) -> list[ClusterStatus]: ...
    def why_ended(self, name: str) -> str | None: ...
    def down(self, names: list[str]) -> list[ClusterStatus]: ...


def from_record(record: HostRecord) -> ClusterHost | None:
    """The host an address block's ``# Host:`` line names; None for a kind this version does not know."""
    if record.kind not in HOSTS:
        return None
    module, _, name = HOSTS[record.kind].partition(":")
    return getattr(importlib.import_module(module), name).from_record(record)


def drop_gone(path: Path) -> list[tuple[ClusterAddress, str]]:
    """Ask the host of each block of the address file at ``path`` whether its cluster is still there, and drop the
    blocks of those that are gone (so that Ray's one-liner never takes a dead cluster first), each said in one line
    with the host's own word; the blocks dropped and why. A block whose host cannot be asked from here stays."""
    path = Path(path).expanduser()
    gone = []
    for block in address_file.read(path) if path.exists() else []:
        host = from_record(block.host) if block.host is not None and block.name else None
        try:
            why = host.why_ended(block.name) if host is not None else None
        except WorkflowError:
            continue
        if why:
            gone.append((block, why))
            logger.warning("%s: dropped cluster %s: %s", path, block.name, why)
    if gone:
        keys = {(block.name, block.host) for block, _ in gone}
        address_file.update([], path, lambda block: (block.name, block.host) in keys)
    return gone
