"""What makes a cluster ours: the rule each host has for its names, and the mark we leave on what we start.

A cluster's name follows its host's rule (``NameRule``): on Kubernetes (and for local clusters) a
DNS-1035 label short enough for KubeRay, on SLURM a job name of letters, digits, ``_``, ``.`` and
``-``. Neither can hold ``/``, a newline, a space or a glob character; several clusters are
``<name>-1`` .. ``<name>-N``, and commands that act on "a cluster and its numbered members" match
exactly that, never a prefix. Commands that stop or delete clusters act only on those with the
exact name and our mark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ray_workflow.errors import UserError, setting

# Our mark on what we create: a label on RayClusters, the comment of SLURM jobs, a file in local temp dirs.
OWNER = "isaaclab-ray-workflow"
KUBERAY_OWNER_LABEL = "app.kubernetes.io/managed-by"
SLURM_OWNER_COMMENT = "isaaclab_ray_workflow"
LOCAL_OWNER_FILE = ".isaaclab_ray_cluster"  # holds the name of the cluster the temp dir was made for
# Whose a RayCluster (and a token Secret) of ours is: a label with the owner's id (``auth.Owner``), and their login.
KUBERAY_OWNER_ID_LABEL = "isaaclab-ray/owner"
KUBERAY_OWNER_LOGIN_ANNOTATION = "isaaclab-ray/owner-login"


class ClusterNameError(UserError, ValueError):
    """A cluster name that breaks the rule; the message names the flag, the value and the rule."""


@dataclass(frozen=True)
class NameRule:
    """What a host accepts as a cluster name: ``pattern`` (said as ``described``) and at most ``max_length``."""

    pattern: re.Pattern[str]
    described: str
    max_length: int
    why_that_long: str


# KubeRay refuses a RayCluster name over 53 characters (MaxRayClusterNameLength: its head Service, <name>-head-svc,
# and the Pods' names derived from it must stay valid), and records only a Warning event for it.
KUBERNETES = NameRule(
    re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"),
    "not a valid Kubernetes name: lower-case letters, digits and '-', starting with a letter and ending with a "
    "letter or digit",
    53,
    "at most 53 fit KubeRay's RayCluster names",
)
SLURM = NameRule(
    re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"),
    "not a SLURM cluster name here: letters, digits, '_', '.' and '-', starting and ending with a letter or digit",
    100,
    "at most 100 are kept",
)


def check_cluster_name(name: str, what: str = setting("name"), rule: NameRule = KUBERNETES) -> str:
    if not rule.pattern.match(name):
        raise ClusterNameError(f"{what} {name!r} is {rule.described}")
    if len(name) > rule.max_length:
        raise ClusterNameError(f"{what} {name!r} is {len(name)} characters; {rule.why_that_long}")
    return name


def numbered_names(name: str, count: int, rule: NameRule = KUBERNETES) -> list[str]:
    """``name`` for one cluster, ``name-1`` .. ``name-N`` for several, each checked once suffixed."""
    if count < 1:
        raise ClusterNameError(f"{setting('num_clusters')} {count}: must be at least 1")
    names = [name] if count == 1 else [f"{name}-{index}" for index in range(1, count + 1)]
    for candidate in names:
        what = setting("name") if candidate == name else f"{setting('name')} {name!r} once suffixed:"
        check_cluster_name(candidate, what, rule)
    return names


def is_member(cluster_name: str, name: str) -> bool:
    """``name`` itself or one of its numbered clusters ``name-1`` .. ``name-N``: never a longer name."""
    return cluster_name == name or (cluster_name.startswith(f"{name}-") and cluster_name[len(name) + 1 :].isdigit())
