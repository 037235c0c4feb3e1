"""Our RayClusters in a namespace: validated against the CRD, applied with kubectl, listed, deleted.

With token auth, every cluster of a user reads the user's Ray token from one Secret per namespace
(``authOptions.secretName``), which ``apply`` creates or updates beside the RayClusters and ``down``
deletes once no RayCluster names it any more; a Secret without our label is used, never changed.
"""

from __future__ import annotations

import base64
import getpass
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from ray_workflow import PROJECT_ROOT, files, yaml_input
from ray_workflow.errors import WorldError
from ray_workflow.hosts.kuberay import crd_schema
from ray_workflow.hosts.kuberay.kubectl import Kubectl, KubectlError
from ray_workflow.hosts.kuberay.manifest import ManifestError
from ray_workflow.names import KUBERAY_OWNER_LABEL, OWNER

logger = logging.getLogger(__name__)
BUNDLED_CRD = PROJECT_ROOT / "cluster_configs" / "kuberay_crd" / "ray.io_rayclusters.yaml"
OUR_SELECTOR = f"{KUBERAY_OWNER_LABEL}={OWNER}"
TOKEN_SECRET_KEY = "auth_token"  # the key KubeRay reads the token of an authOptions.secretName Secret from


_REFUSED = re.compile(r"Forbidden|NotFound|not found|forbidden")


class KubeRayError(WorldError, RuntimeError):
    """Clusters that could not be found or never became ready; the message names them."""


def default_auth_secret() -> str:
    """The user's token Secret: one per user, so the users of a shared namespace keep their own tokens."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a name
        login = "user"
    user = re.sub(r"[^a-z0-9-]+", "-", login.lower()).strip("-") or "user"
    return f"isaaclab-ray-token-{user}"[:63].rstrip("-")


def token_secret(name: str, namespace: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {KUBERAY_OWNER_LABEL: OWNER}},
        "type": "Opaque",
        "data": {TOKEN_SECRET_KEY: base64.b64encode(token.encode()).decode()},
    }


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
    """The RayCluster documents of a YAML file; anything else in it is an error naming the document."""
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
        if not isinstance(document, dict) or document.get("kind") != "RayCluster":
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            raise ManifestError(f"{path}: document {index} is not a RayCluster (kind: {kind!r})")
    return documents


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True)


def apply(manifests: list[dict[str, Any]], namespace: str, kubectl: Kubectl, token: str | None = None) -> str:
    """``kubectl apply -f -`` with every manifest at once; kubectl reports created or configured.

    With ``token``, the Secret the manifests name (``authOptions.secretName``) goes first, holding it
    (through stdin, never a command line), unless a Secret of that name that is not ours is there.
    """
    documents = list(manifests)
    names = {secret_name(manifest) for manifest in manifests} - {None}
    for name in sorted(names) if token else []:
        existing = _secret(name, namespace, kubectl)
        if existing is not None and not _is_ours(existing):
            logger.info("Secret %s is not ours: its token is used as it is", name)
            continue
        documents.insert(0, token_secret(name, namespace, token))
    return kubectl.run(["apply", "--namespace", namespace, "-f", "-"], stdin=to_yaml(documents))


def our_clusters(namespace: str, kubectl: Kubectl) -> list[dict[str, Any]]:
    listing = kubectl.get_json(["get", "rayclusters.ray.io", "--namespace", namespace, "-l", OUR_SELECTOR])
    return sorted(listing.get("items", []), key=lambda item: item["metadata"]["name"])


def secret_name(cluster: dict[str, Any]) -> str | None:
    return cluster.get("spec", {}).get("authOptions", {}).get("secretName")


def delete(names: list[str], namespace: str, kubectl: Kubectl) -> list[str]:
    """Delete those of ``names`` that are our RayClusters (matched exactly, never by prefix); returns them. The token
    Secrets they named go too, if ours and no RayCluster left in the namespace (ours or not) names them."""
    chosen = [item for item in our_clusters(namespace, kubectl) if item["metadata"]["name"] in names]
    if not chosen:
        return []
    names = [item["metadata"]["name"] for item in chosen]
    kubectl.run(["delete", "rayclusters.ray.io", "--namespace", namespace, *names])
    left = kubectl.get_json(["get", "rayclusters.ray.io", "--namespace", namespace]).get("items", [])
    left = [item for item in left if item["metadata"]["name"] not in names]
    still_named = {secret_name(item) for item in left}
    for secret in sorted({secret_name(item) for item in chosen} - still_named - {None}):
        existing = _secret(secret, namespace, kubectl)
        if existing is not None and _is_ours(existing):
            kubectl.run(["delete", "secret", "--namespace", namespace, secret])
            logger.info("deleted Secret %s: no RayCluster uses it any more", secret)
    return names
