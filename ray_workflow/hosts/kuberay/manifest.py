"""KubeRay RayCluster manifests: the cluster spec, its checks, and rendering from Jinja templates.

Templates live in ``cluster_configs/<cluster_host>/kuberay.yaml.jinja`` and are rendered
with ``StrictUndefined``, so a variable a template needs but is not given is an error,
never an empty string in a manifest.
"""

from __future__ import annotations

import json
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from ray_workflow import PROJECT_ROOT
from ray_workflow.auth import Owner
from ray_workflow.errors import UserError, setting
from ray_workflow.names import (
    KUBERAY_OWNER_ID_LABEL,
    KUBERAY_OWNER_LABEL,
    KUBERAY_OWNER_LOGIN_ANNOTATION,
    KUBERNETES,
    OWNER,
    check_cluster_name,
)

CLUSTER_CONFIGS = PROJECT_ROOT / "cluster_configs"
# The Ray this project pins (pyproject.toml), which cluster_configs/Dockerfile installs in the image.
PINNED_RAY = re.search(r'"ray\[[^]]*\]==([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text())[1]
# KubeRay gives containers a token only with Ray 2.52 or newer (it refuses token mode with an older rayVersion).
TOKEN_AUTH_SINCE = (2, 52)
_RAY_IMAGE_TAG = re.compile(r"(?:^|/)ray(?:-ml|-llm)?:(?P<version>\d+\.\d+\.\d+)")
TEMPLATE_NAME = "kuberay.yaml.jinja"
ACCELERATORS_FILE = "accelerators.txt"
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ManifestError(UserError, ValueError):
    """Cluster settings or a template that cannot produce a valid manifest; the message says which."""


@dataclass(frozen=True, kw_only=True)
class WorkerGroup:
    min_workers: int
    max_workers: int
    gpus: int
    cpus: float
    ram_gb: float
    accelerator: str | None = None


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """One RayCluster: ``template`` is the folder of ``cluster_configs/`` whose template renders it."""

    template: str
    name: str
    namespace: str
    image: str
    ray_version: str
    head_cpus: float
    head_ram_gb: float
    worker_groups: tuple[WorkerGroup, ...]
    service_account_name: str | None = None  # the head's: KubeRay gives it the autoscaler's rights
    worker_service_account_name: str | None = None  # the workers' (bucket access, say), without those rights
    image_pull_secret: str | None = None
    storage_uri: str | None = None
    token_auth: bool = True
    # The Secret holding the user's Ray token that every Ray container reads; None: KubeRay makes one per cluster.
    auth_secret: str | None = None
    owner: Owner | None = None  # who starts it: their id labels the cluster, their login annotates it
    idle_timeout_s: int = 120  # the autoscaler removes a worker idle this long


def ray_version_of(image: str) -> str:
    """The Ray in ``image``: the tag of Ray's own images (``rayproject/ray:2.60.0-py311``), else the project's pin,
    which an image built from cluster_configs/Dockerfile holds; never the Ray of the machine that launches."""
    match = _RAY_IMAGE_TAG.search(image)
    return match["version"] if match else PINNED_RAY


def worker_groups(**values: list) -> tuple[WorkerGroup, ...]:
    """Worker groups from per-group flag values (``min_workers=[0, 2]``...): one value applies to every group."""
    count = max(len(flag_values) for flag_values in values.values())
    for flag, flag_values in values.items():
        if len(flag_values) not in (1, count):
            raise ManifestError(
                f"{setting(flag)} has {len(flag_values)} values; give 1 or one per worker group ({count})"
            )
    expanded = {
        flag: flag_values * count if len(flag_values) == 1 else flag_values for flag, flag_values in values.items()
    }
    return tuple(
        WorkerGroup(
            min_workers=expanded["min_workers"][i],
            max_workers=expanded["max_workers"][i],
            gpus=expanded["gpu_per_worker"][i],
            cpus=expanded["cpu_per_worker"][i],
            ram_gb=expanded["ram_gb_per_worker"][i],
            # A group without GPUs is placed on no accelerator, whatever the default accelerator is.
            accelerator=None
            if expanded["worker_accelerator"][i] in ("", "none") or not expanded["gpu_per_worker"][i]
            else expanded["worker_accelerator"][i],
        )
        for i in range(count)
    )


def accelerators(template: str, configs_dir: Path = CLUSTER_CONFIGS) -> list[str] | None:
    """The accelerators a template's cloud offers (``cluster_configs/<template>/accelerators.txt``, one a line);
    None where any will do (a cluster with the NVIDIA device plugin and no accelerator labels)."""
    listing = configs_dir / template / ACCELERATORS_FILE
    if not listing.is_file():
        return None
    return [line.strip() for line in listing.read_text().splitlines() if line.strip() and not line.startswith("#")]


def available_hosts() -> list[str]:
    """Every folder under cluster_configs/ that has a template."""
    return sorted(path.parent.name for path in CLUSTER_CONFIGS.glob(f"*/{TEMPLATE_NAME}"))


def check_spec(spec: ClusterSpec, configs_dir: Path = CLUSTER_CONFIGS) -> None:
    check_cluster_name(spec.name, rule=KUBERNETES)
    if not _DNS_1123.match(spec.namespace) or len(spec.namespace) > 63:
        raise ManifestError(
            f"{setting('namespace')} {spec.namespace!r} is not a valid Kubernetes namespace (DNS-1123 label)"
        )
    if spec.auth_secret is not None and (not _DNS_1123.match(spec.auth_secret) or len(spec.auth_secret) > 63):
        raise ManifestError(f"{setting('auth_secret')} {spec.auth_secret!r} is not a valid Kubernetes Secret name")
    if not spec.image or any(char.isspace() for char in spec.image):
        raise ManifestError(f"{setting('image')} {spec.image!r} is not an image reference")
    if not re.match(r"^\d+\.\d+\.\d+", spec.ray_version):
        raise ManifestError(f"{setting('ray_version')} {spec.ray_version!r}: expected a version such as 2.60.0")
    if spec.token_auth and tuple(int(part) for part in spec.ray_version.split(".")[:2]) < TOKEN_AUTH_SINCE:
        raise ManifestError(
            f"{setting('ray_version')} {spec.ray_version}: token authentication needs Ray "
            f"{'.'.join(map(str, TOKEN_AUTH_SINCE))} or newer (KubeRay refuses it otherwise): use an image with a "
            f"newer Ray, or {setting('no_auth')}"
        )
    if spec.head_cpus <= 0 or spec.head_ram_gb <= 0:
        raise ManifestError(f"{setting('head_cpus')} and {setting('head_ram_gb')} must be positive")
    if not spec.worker_groups:
        raise ManifestError("at least one worker group is needed")
    offered = accelerators(spec.template, configs_dir)
    for index, group in enumerate(spec.worker_groups):
        where = f"worker group {index}"
        if offered is not None and group.accelerator is not None and group.accelerator not in offered:
            raise ManifestError(
                f"{where}: {setting('accelerator')} {group.accelerator!r} is not an accelerator "
                f"{setting('template')} {spec.template} offers: one of {', '.join(offered)}"
            )
        if group.min_workers < 0 or group.max_workers < 0:
            raise ManifestError(f"{where}: {setting('min_workers')} and {setting('max_workers')} must not be negative")
        if group.min_workers > group.max_workers:
            raise ManifestError(
                f"{where}: {setting('min_workers')} {group.min_workers} is greater than {setting('max_workers')} "
                f"{group.max_workers}"
            )
        if group.gpus < 0 or group.cpus <= 0 or group.ram_gb <= 0:
            raise ManifestError(
                f"{where}: {setting('gpus')} must not be negative, {setting('cpus')} and {setting('ram_gb')} "
                f"must be positive (got {group.gpus}, {group.cpus:g}, {group.ram_gb:g})"
            )


def template_context(spec: ClusterSpec) -> dict[str, Any]:
    """What the templates see: names, resources in Kubernetes units, sizes derived from RAM."""
    labels = {KUBERAY_OWNER_LABEL: OWNER, **({KUBERAY_OWNER_ID_LABEL: spec.owner.id} if spec.owner else {})}
    annotations = {KUBERAY_OWNER_LOGIN_ANNOTATION: spec.owner.login} if spec.owner else {}

    def memory(ram_gb: float) -> dict[str, Any]:
        # Ray's object store takes 30 % of a pod's memory; /dev/shm must hold it, and Isaac Sim needs room too.
        return {
            "memory": f"{int(ram_gb * 1024)}Mi",
            "shm": f"{int(ram_gb * 1024 // 2)}Mi",
            "object_store_bytes": int(ram_gb * 0.3 * 1024**3),
        }

    groups = []
    for index, group in enumerate(spec.worker_groups):
        # Named after what its workers hold.
        label = (group.accelerator or "gpu").replace("_", "-").lower() if group.gpus else "cpu"
        groups.append(
            {
                "group_name": f"{label}-group-{index}"[:63],
                "min_workers": group.min_workers,
                "max_workers": group.max_workers,
                "gpus": group.gpus,
                "cpus": f"{group.cpus:g}",
                "accelerator": group.accelerator,
                **memory(group.ram_gb),
            }
        )
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "image": spec.image,
        "ray_version": spec.ray_version,
        "labels": labels,
        "annotations": annotations,
        "head": {"cpus": f"{spec.head_cpus:g}", **memory(spec.head_ram_gb)},
        "worker_groups": groups,
        "service_account_name": spec.service_account_name,
        "worker_service_account_name": spec.worker_service_account_name,
        "image_pull_secret": spec.image_pull_secret,
        "storage_uri": spec.storage_uri,
        "auth_mode": "token" if spec.token_auth else "disabled",
        "auth_secret": spec.auth_secret if spec.token_auth else None,
        "idle_timeout_s": spec.idle_timeout_s,
    }


def _strict_tojson(value: Any) -> str:
    """Jinja's ``tojson``, but an undefined variable is named as such (json.dumps would only see an object)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return json.dumps(value)


def _template_line(error: BaseException, template_path: Path) -> str:
    """``file:line`` of the template frame an error came from (Jinja keeps templates' lines in tracebacks)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename.endswith(".jinja")]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(template_path)


def render(spec: ClusterSpec, configs_dir: Path = CLUSTER_CONFIGS) -> dict[str, Any]:
    """The RayCluster manifest for ``spec`` from its template."""
    template_path = configs_dir / spec.template / TEMPLATE_NAME
    if spec.template not in [path.parent.name for path in configs_dir.glob(f"*/{TEMPLATE_NAME}")]:
        hosts = ", ".join(available_hosts()) if configs_dir == CLUSTER_CONFIGS else "see " + str(configs_dir)
        raise ManifestError(f"{setting('template')} {spec.template!r}: no {TEMPLATE_NAME} there; choose one of {hosts}")
    check_spec(spec, configs_dir)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(template_path.parent), str(configs_dir)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["tojson"] = _strict_tojson
    try:
        text = environment.get_template(TEMPLATE_NAME).render(**template_context(spec))
    except jinja2.UndefinedError as error:
        raise ManifestError(f"{template_path}: template variable undefined: {error.message}") from None
    except jinja2.TemplateSyntaxError as error:
        where = f"{error.filename or template_path}:{error.lineno}"
        raise ManifestError(f"{where}: template syntax error: {error.message}") from None
    except jinja2.TemplateNotFound as error:
        raise ManifestError(f"{template_path}: {error.name}, which it extends or includes, is not there") from None
    except Exception as error:  # a template of the user's own that fails as it renders (a filter given a wrong type)
        line = _template_line(error, template_path)
        raise ManifestError(f"{line}: template failed: {type(error).__name__}: {error}") from None
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ManifestError(f"{template_path}: rendered manifest is not valid YAML: {error}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{template_path}: rendered manifest is not a YAML mapping")
    return manifest
