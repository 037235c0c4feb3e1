"""Launching and tearing down KubeRay clusters: render, validate against the CRD, apply with kubectl."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ray_workflow import PROJECT_ROOT, crd_schema
from ray_workflow.kubectl import Kubectl, KubectlError
from ray_workflow.kuberay_manifest import ClusterSpec, ManifestError
from ray_workflow.names import KUBERAY_OWNER_LABEL, OWNER, check_cluster_name, is_member

logger = logging.getLogger(__name__)
BUNDLED_CRD = PROJECT_ROOT / "cluster_configs" / "kuberay_crd" / "ray.io_rayclusters.yaml"
OUR_SELECTOR = f"{KUBERAY_OWNER_LABEL}={OWNER}"


def load_validator(crd_file: Path | None, kubectl: Kubectl | None) -> tuple[Any, str]:
    """The schema to check against, and where it came from: --crd, the live cluster, or the bundled CRD."""
    if crd_file is not None:
        return crd_schema.validator_from_file(crd_file), str(crd_file)
    if kubectl is not None:
        try:
            text = kubectl.run(["get", "crd", "rayclusters.ray.io", "-o", "yaml"])
            return crd_schema.validator_from_text(text), "the cluster's rayclusters.ray.io CRD"
        except (KubectlError, crd_schema.CrdError) as error:
            reason = str(error).strip().splitlines()[-1]
            logger.warning("cannot read the live CRD (%s); using the bundled KubeRay v1.7.0 CRD", reason)
    return crd_schema.validator_from_file(BUNDLED_CRD), f"bundled {BUNDLED_CRD.name} (KubeRay v1.7.0)"


def validate(manifests: list[dict[str, Any]], validator: Any) -> None:
    """Refuse the whole set if any manifest breaks the schema: nothing is applied half-way."""
    for manifest in manifests:
        problems = crd_schema.errors(validator, manifest)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ManifestError(
                f"cluster {manifest.get('metadata', {}).get('name')}: manifest fails the RayCluster schema at "
                f"{problems[0]}{more}"
            )


def read_manifests(path: Path) -> list[dict[str, Any]]:
    """The RayCluster documents of a YAML file; anything else in it is an error naming the document."""
    try:
        documents = [document for document in yaml.safe_load_all(Path(path).read_text()) if document is not None]
    except OSError as error:
        raise ManifestError(f"{path}: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not documents:
        raise ManifestError(f"{path}: holds no YAML document")
    for index, document in enumerate(documents, start=1):
        if not isinstance(document, dict) or document.get("kind") != "RayCluster":
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            raise ManifestError(f"{path}: document {index} is not a RayCluster (kind: {kind!r})")
    return documents


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False)


def specs_for(base: ClusterSpec, names: list[str]) -> list[ClusterSpec]:
    return [replace(base, name=name) for name in names]


def apply(manifests: list[dict[str, Any]], namespace: str, kubectl: Kubectl) -> str:
    """``kubectl apply -f -`` with every manifest at once; kubectl reports created or configured."""
    return kubectl.run(["apply", "--namespace", namespace, "-f", "-"], stdin=to_yaml(manifests))


def our_clusters(namespace: str, kubectl: Kubectl) -> list[dict[str, Any]]:
    listing = kubectl.get_json(["get", "rayclusters.ray.io", "--namespace", namespace, "-l", OUR_SELECTOR])
    return sorted(listing.get("items", []), key=lambda item: item["metadata"]["name"])


def down(name: str, namespace: str, kubectl: Kubectl) -> list[str]:
    """Delete the RayCluster ``name`` (or its numbered clusters ``name-N``), if we created it; returns them.

    Names match exactly, never by prefix: ``team-a`` does not take ``team-ab``.
    """
    check_cluster_name(name)
    names = [item["metadata"]["name"] for item in our_clusters(namespace, kubectl)]
    chosen = [cluster for cluster in names if is_member(cluster, name)]
    if chosen:
        kubectl.run(["delete", "rayclusters.ray.io", "--namespace", namespace, *chosen])
    return chosen
