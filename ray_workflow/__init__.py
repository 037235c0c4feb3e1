"""Library behind the Ray workflow scripts: clusters, addresses, jobs and sweeps for Isaac Lab.

The package sits next to the scripts and is imported from there, so it works without
installation, inside ``ray job submit --working-dir .`` and under ``./isaaclab.sh -p``.
"""

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Every job multicluster_submit.py sends carries its cluster's name (from the address file): a sweep sent to several
# clusters at once tells its experiment from the others' by it, and one sent again to the same cluster finds its own.
CLUSTER_VARIABLE = "ISAACLAB_RAY_CLUSTER"

# What every Ray node we start runs with, beyond its ports and token: no usage reports sent home.
RAY_NODE_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0"}


def cache_dir(*parts: str) -> Path:
    """Our folder under the user's cache (``$XDG_CACHE_HOME``, else ``~/.cache``): clusters' records, kept
    tokens, saved tracebacks, the Kubernetes binaries of ``make k8s`` (``k8s/build.sh`` follows the same rule)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "isaaclab_ray", *parts)


# What stays behind when this folder is uploaded to a cluster as a job's or a sweep's working
# dir: environments, results, logs and the GPU-check bundle (Ray honours .gitignore, not
# .git/info/exclude, so these are named here too), and secrets a user may keep beside the
# scripts: they must never reach a cluster that others can read.
UPLOAD_EXCLUDES = [
    ".venv/",
    "venv/",
    ".venv-isaaclab/",
    ".git/",
    "results/",
    "logs/",
    ".devbundle/",
    "**/__pycache__/",
    "*.png",
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
    ".ssh/",
    "kubeconfig*",
    ".kube/",
    "*.kubeconfig",
    ".ray_address",
    "auth_token",
    "*.token",
    ".netrc",
    ".aws/",
    ".config/gcloud/",
    "*credentials*.json",
    ".git-credentials",
]


def code_upload(working_dir: Path = PROJECT_ROOT) -> dict:
    """The runtime env that ships ``working_dir`` to a cluster without what ``UPLOAD_EXCLUDES`` keeps back.

    Ray's own default excludes (``.git``, ``.venv``, ``venv``, ``__pycache__``) are among ours: they are turned off
    (unless the user set them) so that Ray packages by our list alone, instead of warning on every upload.
    """
    os.environ.setdefault("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")
    return {"working_dir": str(working_dir), "excludes": UPLOAD_EXCLUDES}


def log_progress_to(stream: TextIO) -> None:
    """Show the library's progress (its ``logging`` at INFO) on ``stream``, and its warnings and errors on
    stderr, one plain line each. The library reports only through ``logging``; a script chooses where it goes.
    """
    package = logging.getLogger(__name__)
    for handler in list(package.handlers):
        package.removeHandler(handler)
    progress = logging.StreamHandler(stream)
    progress.setFormatter(logging.Formatter("%(message)s"))
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    problems.setFormatter(logging.Formatter("warning: %(message)s"))
    package.addHandler(progress)
    package.addHandler(problems)
    package.setLevel(logging.INFO)
    package.propagate = False
