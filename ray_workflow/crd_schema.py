"""Validating manifests offline against a CustomResourceDefinition's ``openAPIV3Schema``.

The schema is turned into JSON Schema the way a Kubernetes API server reads it: unknown
fields are errors (strict field validation), ``nullable`` admits null, int32/int64
formats bound integers, ``x-kubernetes-preserve-unknown-fields`` keeps an object open and
the other ``x-kubernetes-*`` keys are dropped. CEL rules (``x-kubernetes-validations``)
are not evaluated; the only two in the RayCluster CRD guard fields we never set. As the API
server does, the schema's defaults are filled in before anything is checked, so a field that is
required but defaulted (a worker group's ``minReplicas``) may be left out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

from ray_workflow import yaml_input
from ray_workflow.errors import UserError

INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class CrdError(UserError, ValueError):
    """A CRD document that cannot be used for validation."""


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One openAPIV3Schema node as strict JSON Schema."""
    schema: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format", "description"):
            continue
        if key == "properties":
            schema[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            schema[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            schema[key] = [to_json_schema(sub) for sub in value]
        else:
            schema[key] = value
    open_object = node.get("x-kubernetes-preserve-unknown-fields") is True
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node and not open_object:
        schema["additionalProperties"] = False
    if node.get("type") == "integer" and node.get("format") in INT_RANGES:
        schema["minimum"], schema["maximum"] = INT_RANGES[node["format"]]
    if node.get("nullable") is True and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def openapi_schema(crd: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    """The ``openAPIV3Schema`` that the CRD serves for ``version``."""
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        kind = crd.get("kind") if isinstance(crd, dict) else type(crd).__name__
        raise CrdError(f"not a CustomResourceDefinition (kind: {kind!r})")
    try:
        return _served_schema(crd, version)
    except (KeyError, TypeError, AttributeError):
        raise CrdError("not a CustomResourceDefinition with spec.versions[].schema.openAPIV3Schema") from None


def _served_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for served in crd.get("spec", {}).get("versions", []):
        if served.get("name") == version:
            return served["schema"]["openAPIV3Schema"]
    raise CrdError(f"the CRD serves no version {version!r}")


@dataclass(frozen=True)
class CrdSchema:
    """A CRD's schema: as served (for its defaults) and as strict JSON Schema (for the checks)."""

    openapi: dict[str, Any]
    validator: Draft7Validator


def with_defaults(node: dict[str, Any], value: Any) -> Any:
    """``value`` with every absent field that has a ``default`` in the schema filled in, as the API server does."""
    if isinstance(value, dict) and node.get("type") == "object":
        filled = dict(value)
        for name, child in node.get("properties", {}).items():
            if name not in filled and "default" in child:
                filled[name] = copy.deepcopy(child["default"])
            if name in filled:
                filled[name] = with_defaults(child, filled[name])
        if isinstance(node.get("additionalProperties"), dict):
            extra = node["additionalProperties"]
            for name in set(filled) - set(node.get("properties", {})):
                filled[name] = with_defaults(extra, filled[name])
        return filled
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [with_defaults(node["items"], item) for item in value]
    return value


def validator_from_text(text: str, version: str = "v1") -> CrdSchema:
    try:
        documents = [doc for doc in yaml_input.load_all(text) if doc]
    except yaml.YAMLError as error:
        raise CrdError(f"CRD is not valid YAML: {error}") from None
    if not documents:
        raise CrdError("CRD document is empty")
    openapi = openapi_schema(documents[0], version)
    return CrdSchema(openapi, Draft7Validator(to_json_schema(openapi)))


@lru_cache(maxsize=4)
def validator_from_file(path: Path, version: str = "v1") -> CrdSchema:
    try:
        return validator_from_text(Path(path).read_text(), version)
    except OSError as error:
        raise CrdError(f"{path}: {error.strerror}") from None
    except CrdError as error:
        raise CrdError(f"{path}: {error}") from None


def errors(schema: CrdSchema, manifest: dict[str, Any]) -> list[str]:
    """Every schema violation as ``path: message``, sorted; empty when the manifest is valid."""
    found = []
    for error in schema.validator.iter_errors(with_defaults(schema.openapi, manifest)):
        path = ".".join(str(part) for part in error.absolute_path) or "(root)"
        found.append(f"{path}: {error.message}")
    return sorted(found)
