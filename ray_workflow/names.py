"""What makes a cluster ours: the one rule for its name, and the mark we leave on it.

Every cluster we start (KubeRay, SLURM, local) is named like a Kubernetes object: a DNS-1035
label short enough for KubeRay's ``<name>-head-svc`` service. Such a name cannot hold ``/``, a
newline, a space or a glob character; several clusters are ``<name>-1`` .. ``<name>-N``, and
commands that act on "a cluster and its numbered members" match exactly that, never a prefix.
Commands that stop or delete clusters act only on those with the exact name and our mark.
"""

from __future__ import annotations

import re

from ray_workflow.errors import UserError, setting

# Our mark on what we create: a label on RayClusters, the comment of SLURM jobs, a file in local temp dirs.
OWNER = "isaaclab-ray-workflow"
KUBERAY_OWNER_LABEL = "app.kubernetes.io/managed-by"
SLURM_OWNER_COMMENT = "isaaclab_ray_workflow"
LOCAL_OWNER_FILE = ".isaaclab_ray_cluster"  # holds the name of the cluster the temp dir was made for

# KubeRay names the head service <name>-head-svc, and a Service name is a DNS-1035 label of at most 63.
MAX_NAME_LENGTH = 63 - len("-head-svc")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class ClusterNameError(UserError, ValueError):
    """A cluster name that breaks the rule; the message names the flag, the value and the rule."""


def check_cluster_name(name: str, what: str = setting("name")) -> str:
    if not _DNS_1035.match(name):
        raise ClusterNameError(
            f"{what} {name!r} is not a valid Kubernetes name: lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ClusterNameError(
            f"{what} {name!r} is {len(name)} characters; at most {MAX_NAME_LENGTH} fit in KubeRay's "
            "'<name>-head-svc' service name"
        )
    return name


def numbered_names(name: str, count: int) -> list[str]:
    """``name`` for one cluster, ``name-1`` .. ``name-N`` for several, each checked once suffixed."""
    if count < 1:
        raise ClusterNameError(f"{setting('num_clusters')} {count}: must be at least 1")
    names = [name] if count == 1 else [f"{name}-{index}" for index in range(1, count + 1)]
    for candidate in names:
        check_cluster_name(
            candidate, setting("name") if candidate == name else f"{setting('name')} {name!r} once suffixed:"
        )
    return names


def is_member(cluster_name: str, name: str) -> bool:
    """``name`` itself or one of its numbered clusters ``name-1`` .. ``name-N``: never a longer name."""
    return cluster_name == name or (cluster_name.startswith(f"{name}-") and cluster_name[len(name) + 1 :].isdigit())
