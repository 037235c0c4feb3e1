"""The ``kubectl`` binary, run with argument lists: its own error messages reach the user unchanged."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

from ray_workflow.errors import UserError, WorldError, setting


class KubectlError(WorldError, RuntimeError):
    """kubectl is missing or failed; the message carries kubectl's own words."""


class KubectlInputError(UserError, ValueError):
    """kubectl refused what the user named: a context or a namespace that does not exist."""


# klog's prefix on the lines kubectl logs before its own message ("E1206 05:00:00.123456   123 file.go:265] ...").
_KLOG_LINE = re.compile(r"^[EWIF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+\S+:\d+\]")
_NO_CONTEXT = re.compile(r'context "[^"]*" (does not exist|not found)|no context exists with the name')
_NO_NAMESPACE = re.compile(r'namespaces "(?P<name>[^"]+)" not found')


def last_sentence(output: str) -> str:
    """What kubectl says of a failure, without the log lines it repeats before it: its last line of its own."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    own = [line for line in lines if not _KLOG_LINE.match(line)]
    return (own or lines or [""])[-1]


class Kubectl:
    """``kubectl`` with an optional ``--context``; each call is one process, no shell."""

    def __init__(self, context: str | None = None, timeout_s: float = 120.0) -> None:
        self.context = context
        self.timeout_s = timeout_s

    def argv(self, args: list[str]) -> list[str]:
        binary = shutil.which("kubectl")
        if binary is None:
            raise KubectlError(
                "kubectl not found on PATH: install it and point it at your cluster "
                "(https://kubernetes.io/docs/tasks/tools/)"
            )
        return [binary, *(["--context", self.context] if self.context else []), *args]

    def run(self, args: list[str], stdin: str | None = None) -> str:
        argv = self.argv(args)
        try:
            result = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise KubectlError(f"kubectl {' '.join(args)} did not finish within {self.timeout_s:g} s") from None
        if result.returncode != 0:
            said = last_sentence(result.stderr or result.stdout) or f"exit code {result.returncode}"
            command = " ".join(args)
            command = command if len(command) <= 100 else command[:97] + "..."
            if _NO_CONTEXT.search(said):
                raise KubectlInputError(f"kubectl {command} failed: {said} (see `kubectl config get-contexts`)")
            if missing := _NO_NAMESPACE.search(said):
                raise KubectlInputError(
                    f"kubectl {command} failed: {said} (create it with `kubectl create namespace {missing['name']}`, "
                    f"or give another {setting('namespace')})"
                )
            raise KubectlError(f"kubectl {command} failed: {said}")
        return result.stdout

    def get_json(self, args: list[str]) -> dict[str, Any]:
        output = self.run([*args, "-o", "json"])
        try:
            return json.loads(output)
        except json.JSONDecodeError:
            raise KubectlError(f"kubectl {' '.join(args)} did not print JSON: {output[:200]!r}") from None

    def popen(self, args: list[str]) -> subprocess.Popen[str]:
        """A long-running kubectl (port-forward) in its own process group, output piped."""
        return subprocess.Popen(
            self.argv(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
