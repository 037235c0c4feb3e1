"""Validating manifests offline against a CustomResourceDefinition's ``openAPIV3Schema``, as the API server does.

The schema is turned into JSON Schema the way a Kubernetes API server reads it: unknown
fields are errors (strict field validation), ``nullable`` admits null, int32/int64
formats bound integers, ``x-kubernetes-preserve-unknown-fields`` keeps an object open.
Before anything is checked, as the server does, a null where the schema does not allow one is
dropped and the schema's defaults are filled in (so a field that is required but defaulted, a
worker group's ``minReplicas``, may be left out). List maps and sets (``x-kubernetes-list-type``)
refuse duplicates, and ``metadata.name`` must be a DNS subdomain. CEL rules
(``x-kubernetes-validations``) are not evaluated; the only two in the RayCluster CRD guard fields
we never set. Each problem is said as the server says it, with its field path
(``spec.workerGroupSpecs[0].maxReplicas: Invalid value: ...``); tests/test_kuberay.py compares
both on every template's output, KubeRay's samples and mutations of them.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

from ray_workflow import files, yaml_input
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
        return validator_from_text(files.read_text(Path(path), yaml_input.MAX_BYTES), version)
    except files.NotAFile as error:
        raise CrdError(f"{path}: {error}") from None
    except OSError as error:
        raise CrdError(f"{path}: {error.strerror}") from None
    except CrdError as error:
        raise CrdError(f"{path}: {error}") from None


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _child(node: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema of an object's field ``name``: its property, else the object's ``additionalProperties``."""
    child = node.get("properties", {}).get(name, node.get("additionalProperties"))
    return child if isinstance(child, dict) else {}


def without_nulls(node: dict[str, Any], value: Any) -> Any:
    """``value`` without the nulls its schema does not admit: the API server drops those before validating."""
    if isinstance(value, dict) and node.get("type") == "object":
        kept = {}
        for name, child_value in value.items():
            child = _child(node, name)
            if child_value is None and not child.get("nullable"):
                continue
            kept[name] = without_nulls(child, child_value)
        return kept
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [without_nulls(node["items"], item) for item in value]
    return value


def field_path(parts: Any) -> str:
    """``spec.workerGroupSpecs[0].maxReplicas``: the API server's way of naming a field."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _duplicates(node: dict[str, Any], value: Any, path: list[Any]) -> list[str]:
    """Items that a list map (same keys) or a list set (same item) holds twice, as the server finds them."""
    found = []
    if isinstance(value, dict) and node.get("type") == "object":
        for name, child_value in value.items():
            found += _duplicates(_child(node, name), child_value, [*path, name])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        kind, keys, seen = node.get("x-kubernetes-list-type"), node.get("x-kubernetes-list-map-keys", []), []
        for index, item in enumerate(value):
            identity = {key: item.get(key) for key in keys} if kind == "map" and isinstance(item, dict) else item
            if kind in ("map", "set") and identity in seen:
                found.append(f"{field_path([*path, index])}: Duplicate value: {json.dumps(identity)}")
            seen.append(identity)
            found += _duplicates(node["items"], item, [*path, index])
    return found


def _said_as_the_server_says(error: Any) -> str:
    path = list(error.absolute_path)
    value = json.dumps(error.instance, default=str)
    if error.validator == "required":
        (missing,) = re.findall(r"^'(.+)' is a required property$", error.message) or [error.message]
        return f"{field_path([*path, missing])}: Required value"
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{field_path([*path, unknown[0]])}: unknown field"
    if error.validator == "enum":
        supported = ", ".join(json.dumps(option) for option in error.validator_value)
        return f"{field_path(path)}: Unsupported value: {value}: supported values: {supported}"
    if error.validator == "type":
        expected = error.validator_value
        expected = ",".join(expected) if isinstance(expected, list) else expected
        return f"{field_path(path)}: Invalid value: {value}: must be of type {expected}"
    if error.validator == "anyOf":
        types = ",".join(option.get("type", "?") for option in error.validator_value)
        return f"{field_path(path)}: Invalid value: {value}: must be of type {types}"
    if error.validator == "pattern":
        return f"{field_path(path)}: Invalid value: {value}: should match '{error.validator_value}'"
    return f"{field_path(path) or '(root)'}: Invalid value: {value}: {error.message}"


def errors(schema: CrdSchema, manifest: dict[str, Any]) -> list[str]:
    """Every problem the API server would refuse the manifest for, as ``path: message``, sorted."""
    prepared = with_defaults(schema.openapi, without_nulls(schema.openapi, manifest))
    found = [_said_as_the_server_says(error) for error in schema.validator.iter_errors(prepared)]
    found += _duplicates(schema.openapi, prepared, [])
    name = manifest.get("metadata", {}).get("name") if isinstance(manifest.get("metadata"), dict) else None
    if isinstance(name, str) and (len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name)):
        found.append(
            f"metadata.name: Invalid value: {json.dumps(name)}: a lowercase RFC 1123 subdomain must consist of lower "
            "case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    return sorted(found)
