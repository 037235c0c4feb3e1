"""Our RayClusters in a namespace: validated against the CRD, applied with kubectl, listed, deleted.

Each carries its owner's id (``auth.Owner``: from their Ray token, so two people under one login are two
owners). With token auth, every cluster of an owner reads the owner's Ray token from one Secret per namespace
named after that id (``authOptions.secretName``), which ``apply`` creates beside the RayClusters and ``delete``
removes once no RayCluster names it any more. A Secret without our label is used, never changed; one of ours
that is another owner's is refused, never overwritten.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from ray_workflow import PROJECT_ROOT, files, yaml_input
from ray_workflow.auth import Owner
from ray_workflow.errors import UserError, WorldError, setting
from ray_workflow.hosts.kuberay import crd_schema
from ray_workflow.hosts.kuberay.kubectl import Kubectl, KubectlError
from ray_workflow.hosts.kuberay.manifest import ManifestError
from ray_workflow.names import KUBERAY_OWNER_ID_LABEL, KUBERAY_OWNER_LABEL, KUBERAY_OWNER_LOGIN_ANNOTATION, OWNER

logger = logging.getLogger(__name__)
BUNDLED_CRD = PROJECT_ROOT / "cluster_configs" / "kuberay_crd" / "ray.io_rayclusters.yaml"
OUR_SELECTOR = f"{KUBERAY_OWNER_LABEL}={OWNER}"
TOKEN_SECRET_KEY = "auth_token"  # the key KubeRay reads the token of an authOptions.secretName Secret from


_REFUSED = re.compile(r"Forbidden|NotFound|not found|forbidden")


class KubeRayError(WorldError, RuntimeError):
    """Clusters that could not be found or never became ready; the message names them."""


class KubeRayInputError(UserError, ValueError):
    """A launch that would take what another person owns (a cluster name, a token Secret): nothing was applied."""


def default_auth_secret(owner: Owner) -> str:
    """The owner's token Secret: one per person (their token's id, not their login), so the users of a shared
    namespace, even under one login, keep their own tokens."""
    return f"isaaclab-ray-token-{owner.id[:12]}"


def token_secret(name: str, namespace: str, token: str, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {KUBERAY_OWNER_LABEL: OWNER, KUBERAY_OWNER_ID_LABEL: owner.id},
            "annotations": {KUBERAY_OWNER_LOGIN_ANNOTATION: owner.login},
        },
        "type": "Opaque",
        "data": {TOKEN_SECRET_KEY: base64.b64encode(token.encode()).decode()},
    }


def owner_of(item: dict[str, Any]) -> str | None:
    """The owner id on one of our objects (None on one made before owners were recorded)."""
    return item.get("metadata", {}).get("labels", {}).get(KUBERAY_OWNER_ID_LABEL)


def owner_said(item: dict[str, Any]) -> str:
    """``alice (owner d1c3...)``: who owns one of our objects, for messages."""
    login = item.get("metadata", {}).get("annotations", {}).get(KUBERAY_OWNER_LOGIN_ANNOTATION) or "someone"
    owner = owner_of(item)
    return f"{login} (owner {owner})" if owner else f"{login} (no owner recorded)"


def _secret(name: str, namespace: str, kubectl: Kubectl) -> dict[str, Any] | None:
    try:
        return kubectl.get_json(["get", "secret", name, "--namespace", namespace])
    except KubectlError as error:
        if "NotFound" in str(error):
            return None
        raise


def _is_ours(item: dict[str, Any]) -> bool:
    return item.get("metadata", {}).get("labels", {}).get(KUBERAY_OWNER_LABEL) == OWNER


def load_validator(crd_file: Path | None, kubectl: Kubectl | None) -> tuple[Any, str]:
    """The schema to check against, and where it came from: --crd, the live cluster, or the bundled CRD."""
    if crd_file is not None:
        return crd_schema.validator_from_file(crd_file), str(crd_file)
    if kubectl is not None:
        try:
            text = kubectl.run(["get", "crd", "rayclusters.ray.io", "-o", "yaml"])
            return crd_schema.validator_from_text(text), "the cluster's rayclusters.ray.io CRD"
        except (KubectlError, crd_schema.CrdError) as error:
            # Only a refusal to show the CRD is a reason to check offline: a server that does not answer would refuse
            # the clusters too, and says so once, below.
            if isinstance(error, KubectlError) and not _REFUSED.search(str(error)):
                raise
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
    """The Kubernetes objects of a YAML file (RayClusters with the ConfigMaps, Secrets, service accounts and Ingresses
    KubeRay's samples hold beside them); a document that is not an object is an error naming it."""
    try:
        text = files.read_text(Path(path), yaml_input.MAX_BYTES)
        documents = [document for document in yaml_input.load_all(text) if document is not None]
    except files.NotAFile as error:
        raise ManifestError(f"{path}: {error}") from None
    except OSError as error:
        raise ManifestError(f"{path}: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not documents:
        raise ManifestError(f"{path}: holds no YAML document")
    for index, document in enumerate(documents, start=1):
        if not isinstance(document, dict) or not isinstance(document.get("kind"), str):
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            raise ManifestError(f"{path}: document {index} is not a Kubernetes object (kind: {kind!r})")
    return documents


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True)


def apply(
    manifests: list[dict[str, Any]], namespace: str, kubectl: Kubectl, owner: Owner, token: str | None = None
) -> str:
    """``kubectl apply -f -`` with every manifest at once; kubectl reports created or configured.

    With ``token``, the Secret the manifests name (``authOptions.secretName``) goes first, holding it
    (through stdin, never a command line), unless a Secret of that name that is not ours is there; one of
    ours that another owner holds is refused, before anything is applied: its token is theirs.
    """
    documents = list(manifests)
    names = {secret_name(manifest) for manifest in manifests} - {None}
    for name in sorted(names) if token else []:
        existing = _secret(name, namespace, kubectl)
        if existing is not None and not _is_ours(existing):
            logger.info("Secret %s is not ours: its token is used as it is", name)
            continue
        if existing is not None and owner_of(existing) != owner.id:
            raise KubeRayInputError(
                f"Secret {name} in namespace {namespace} holds the token of {owner_said(existing)}, not yours: "
                f"give {setting('auth_secret')} a Secret of your own"
            )
        documents.insert(0, token_secret(name, namespace, token, owner))
    return kubectl.run(["apply", "--namespace", namespace, "-f", "-"], stdin=to_yaml(documents))


def our_clusters(namespace: str, kubectl: Kubectl) -> list[dict[str, Any]]:
    listing = kubectl.get_json(["get", "rayclusters.ray.io", "--namespace", namespace, "-l", OUR_SELECTOR])
    return sorted(listing.get("items", []), key=lambda item: item["metadata"]["name"])


def secret_name(cluster: dict[str, Any]) -> str | None:
    return cluster.get("spec", {}).get("authOptions", {}).get("secretName")


def delete(names: list[str], namespace: str, kubectl: Kubectl, owner: Owner, everyone: bool = False) -> list[str]:
    """Delete those of ``names`` that are ``owner``'s RayClusters (every owner's with ``everyone``), matched exactly,
    never by prefix; returns them. The token Secrets they named go too, if ``owner``'s and no RayCluster left in the
    namespace (ours or not) names them."""
    chosen = [
        item
        for item in our_clusters(namespace, kubectl)
        if item["metadata"]["name"] in names and (everyone or owner_of(item) == owner.id)
    ]
    if not chosen:
        return []
    names = [item["metadata"]["name"] for item in chosen]
    kubectl.run(["delete", "rayclusters.ray.io", "--namespace", namespace, *names])
    left = kubectl.get_json(["get", "rayclusters.ray.io", "--namespace", namespace]).get("items", [])
    left = [item for item in left if item["metadata"]["name"] not in names]
    still_named = {secret_name(item) for item in left}
    for secret in sorted({secret_name(item) for item in chosen} - still_named - {None}):
        existing = _secret(secret, namespace, kubectl)
        if existing is not None and _is_ours(existing) and owner_of(existing) == owner.id:
            kubectl.run(["delete", "secret", "--namespace", namespace, secret])
            logger.info("deleted Secret %s: no RayCluster uses it any more", secret)
    return names


def _groups(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = cluster.get("spec", {})
    groups = {"head": spec.get("headGroupSpec", {})}
    groups.update({f"worker group {group.get('groupName')}": group for group in spec.get("workerGroupSpecs", [])})
    return groups


def _containers(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    containers = group.get("template", {}).get("spec", {}).get("containers", [])
    return {container.get("name"): container for container in containers}


def restart_reasons(live: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What re-applying ``wanted`` over the ``live`` RayCluster changes that makes KubeRay recreate its Pods
    (``upgradeStrategy: Recreate``): its Ray version, its token, a group's start parameters, a container's image,
    resources or environment, a group added or removed. Worker counts alone restart nothing."""
    reasons = []
    if live.get("spec", {}).get("rayVersion") != wanted["spec"].get("rayVersion"):
        reasons.append(f"Ray version {live['spec'].get('rayVersion')} -> {wanted['spec'].get('rayVersion')}")
    if live.get("spec", {}).get("authOptions") != wanted["spec"].get("authOptions"):
        reasons.append("its token (authOptions)")
    before, after = _groups(live), _groups(wanted)
    reasons += [f"{group} removed" for group in before if group not in after]
    reasons += [f"{group} added" for group in after if group not in before]
    for group in before.keys() & after.keys():
        if before[group].get("rayStartParams") != after[group].get("rayStartParams"):
            reasons.append(f"{group}: start parameters")
        old, new = _containers(before[group]), _containers(after[group])
        for name in old.keys() & new.keys():
            for field in ("image", "resources", "env"):
                if old[name].get(field) != new[name].get(field):
                    said = f"{old[name].get(field)} -> {new[name].get(field)}" if field == "image" else "changed"
                    reasons.append(f"{group}: {field} {said}")
    return sorted(reasons)


def keep_replicas(live: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Keep in ``wanted`` the worker counts the autoscaler has set on ``live`` (within ``wanted``'s bounds): a
    re-apply changes the bounds, never undoes the autoscaler's work."""
    replicas = {
        group.get("groupName"): group.get("replicas") for group in live.get("spec", {}).get("workerGroupSpecs", [])
    }
    for group in wanted["spec"].get("workerGroupSpecs", []):
        if isinstance(replicas.get(group["groupName"]), int):
            group["replicas"] = min(max(replicas[group["groupName"]], group["minReplicas"]), group["maxReplicas"])
