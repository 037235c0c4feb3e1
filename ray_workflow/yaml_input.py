"""YAML from users, read with bounds: no aliases (a few hundred bytes of nested aliases expand past any memory), no
nesting deeper than a manifest could need (deeper, the parser's stack runs out), and the C parser where PyYAML has
it (the pure-Python one takes seconds on a large CRD)."""

from __future__ import annotations

from typing import Any

import yaml

from ray_workflow.errors import UserError

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 64 << 20  # a YAML file of ours: KubeRay's whole CRD is under 1 MB
MAX_DEPTH = 100


class AliasRefused(UserError, yaml.YAMLError):
    """A document that uses an alias (``*name``): refused before anything is built from it."""


class NestedTooDeeply(UserError, yaml.YAMLError):
    """A document nested deeper than any manifest or config is (a Kubernetes object is under 30 levels): refused
    before anything is built from it, since building it would exhaust the parser's stack."""


def load_all(text: str) -> list[Any]:
    """Every document of ``text``; an alias anywhere, or nesting deeper than ``MAX_DEPTH``, is an error naming its
    line, and nothing is built or expanded."""
    depth = 0
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise AliasRefused(f"line {_line(event)}: YAML aliases (*{event.anchor}) are not accepted here")
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise NestedTooDeeply(f"line {_line(event)}: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
    return list(yaml.load_all(text, Loader=LOADER))


def _line(event: yaml.Event) -> int | str:
    return event.start_mark.line + 1 if event.start_mark else "?"
