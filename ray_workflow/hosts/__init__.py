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
from dataclasses import dataclass
from typing import Any, Protocol

from ray_workflow.address_file import ClusterAddress, HostRecord

# Each kind of host: the class that serves it, loaded when first asked for.
HOSTS = {
    "kuberay": "ray_workflow.hosts.kuberay:KubeRayHost",
    "slurm": "ray_workflow.hosts.slurm:SlurmHost",
    "local": "ray_workflow.hosts.local:LocalHost",
}


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
