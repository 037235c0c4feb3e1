"""The error contract: every script's main is wrapped once, so any failure ends in one line and an exit code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ray_workflow import PROJECT_ROOT
from ray_workflow.errors import UserError, WorldError, script_main

# Programs that are not a user's scripts: a trainer (like Isaac Lab's train.py, it shows its own tracebacks in
# trial logs) and the warm slot, which the trainer's interpreter runs for a trial actor.
TRAINERS = {"train_cartpole.py", "warm_slot.py"}


def _wrapped_main(module: Path) -> bool:
    """Whether ``module`` defines ``@script_main def main`` or imports ``main`` from a module that does."""
    tree = ast.parse(module.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return [ast.unparse(decorator) for decorator in node.decorator_list] == ["script_main"]
        if isinstance(node, ast.ImportFrom) and any(alias.name == "main" for alias in node.names):
            return _wrapped_main(PROJECT_ROOT / (node.module.replace(".", "/") + ".py"))
    return False


def test_every_script_outside_the_trainers_runs_a_main_wrapped_by_script_main():
    """A new script that forgets the wrapper fails here, not in front of a user with a traceback."""
    scripts = [
        path
        for path in [
            *PROJECT_ROOT.glob("*.py"),
            *PROJECT_ROOT.glob("hyper_parameter_tuning/**/*.py"),
            *PROJECT_ROOT.glob("ray_workflow/**/*.py"),
        ]
        if 'if __name__ == "__main__":' in path.read_text() and path.name not in TRAINERS
    ]
    assert len(scripts) >= 10
    assert [str(path.relative_to(PROJECT_ROOT)) for path in scripts if not _wrapped_main(path)] == []


@pytest.mark.parametrize(("error", "code"), [(UserError("--flag 'x': bad"), 2), (WorldError("cluster c is gone"), 1)])
def test_errors_of_the_family_end_in_one_line_and_their_exit_code(capsys, error, code):
    @script_main
    def main() -> int:
        raise error

    assert main() == code
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_bug_ends_in_one_line_naming_the_saved_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))

    @script_main
    def main() -> int:
        return {}["missing"]

    assert main() == 1
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and line.startswith("error: internal error KeyError: 'missing'")
    saved = Path(line.split("its traceback is in ")[1].split(";")[0])
    assert saved.is_relative_to(tmp_path) and 'return {}["missing"]' in saved.read_text()


def test_ctrl_c_ends_in_one_line_and_exit_130(capsys):
    @script_main
    def main() -> int:
        raise KeyboardInterrupt

    assert main() == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("value", ["abc", "0", "3.5"])
def test_a_bad_number_in_a_sweep_configs_environment_is_one_line_naming_the_variable(value, tmp_path):
    result = subprocess.run(
        [sys.executable, "hyper_parameter_tuning/config/cartpole_sweep.py", "--ray_address", "local"],
        cwd=PROJECT_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CARTPOLE_MAX_ITERATIONS": value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
        and f"CARTPOLE_MAX_ITERATIONS={value!r}" in result.stderr
    )
