"""YAML from users, read with bounds: no aliases (a few hundred bytes of nested aliases expand past any memory),
and the C parser where PyYAML has it (the pure-Python one takes seconds on a large CRD)."""

from __future__ import annotations

from typing import Any

import yaml

from ray_workflow.errors import UserError

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class AliasRefused(UserError, yaml.YAMLError):
    """A document that uses an alias (``*name``): refused before anything is built from it."""


def load_all(text: str) -> list[Any]:
    """Every document of ``text``; an alias anywhere is an error naming its line, and nothing is expanded."""
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise AliasRefused(f"line {line}: YAML aliases (*{event.anchor}) are not accepted here")
    return list(yaml.load_all(text, Loader=LOADER))
