"""The error contract: every script's main is wrapped once, so any failure ends in one line and an exit code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ray_workflow import PROJECT_ROOT
from ray_workflow.errors import Interrupted, UserError, WorldError, script_main, setting

# Programs that are not a user's scripts: a trainer (like Isaac Lab's train.py, it shows its own tracebacks in
# trial logs) and the warm slot, which the trainer's interpreter runs for a trial actor.
TRAINERS = {"train_cartpole.py", "warm_slot.py"}


def _wrapped_main(module: Path) -> bool:
    """Whether ``module`` defines ``@script_main def main`` or imports ``main`` from a module that does."""
    tree = ast.parse(module.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            decorators = [ast.unparse(decorator) for decorator in node.decorator_list]
            return len(decorators) == 1 and (decorators[0] == "script_main" or decorators[0].startswith("script_main("))
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


def _python_files(*patterns: str) -> list[Path]:
    return sorted(path for pattern in patterns for path in PROJECT_ROOT.glob(pattern) if ".venv" not in path.parts)


def _strings(node: ast.AST) -> list[str]:
    """Every piece of literal text under ``node`` (plain strings and the literal parts of f-strings)."""
    return [child.value for child in ast.walk(node) if isinstance(child, ast.Constant) and isinstance(child.value, str)]


def test_no_error_line_is_written_by_hand_outside_the_one_wrapper():
    """Every ``error:`` line comes from errors.py; a script printing its own could drift from the contract."""
    found = []
    for path in _python_files("*.py", "hyper_parameter_tuning/**/*.py", "ray_workflow/**/*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("error:"):
                found.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert found == []


def test_every_error_class_is_either_the_users_or_the_worlds_never_both():
    """Its exit code then follows from its kind, not from the order of its base classes."""
    import importlib
    import pkgutil

    import ray_workflow
    from ray_workflow.errors import WorkflowError

    for module in pkgutil.walk_packages(ray_workflow.__path__, "ray_workflow."):
        if not module.name.endswith("warm_slot"):
            importlib.import_module(module.name)
    family, stack = set(), [WorkflowError]
    while stack:
        family.update(subclasses := stack.pop().__subclasses__())
        stack.extend(subclasses)
    both = sorted(kind.__name__ for kind in family if issubclass(kind, UserError) and issubclass(kind, WorldError))
    assert len(family) >= 15 and both == []


def test_the_library_names_settings_and_leaves_their_flags_to_the_scripts():
    """A message the library raises says ``setting("num_workers")``; launch.py says it as --max_workers."""
    spelled = []
    for path in _python_files("ray_workflow/**/*.py"):
        if path.name in ("grok.py", "cli.py"):  # command lines of the grok scripts and the sweep scripts
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and any(re.search(r"--[a-z]", text) for text in _strings(node)):
                spelled.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert spelled == []


def test_a_setting_is_said_as_each_scripts_own_flag(capsys):
    @script_main(flags={"num_workers": "--max_workers"})
    def main() -> int:
        raise UserError(f"{setting('num_workers')} 3: bad; see {setting('base_port')}")

    assert main() == 2
    assert capsys.readouterr().err == "error: --max_workers 3: bad; see --base_port\n"
    assert str(UserError(f"{setting('num_workers')} 3")) == "--num_workers 3", "outside a script: --field"


def test_ctrl_c_after_undoing_says_what_was_undone_and_exits_130(capsys):
    @script_main
    def main() -> int:
        raise Interrupted("deleted RayCluster tuner-3")

    assert main() == 130
    assert capsys.readouterr().err == "interrupted: deleted RayCluster tuner-3\n"


def run_config(config: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(config), "--ray_address", "local"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_shipped_config_refusing_its_environment_run_directly_is_one_line(tmp_path):
    config = PROJECT_ROOT / "hyper_parameter_tuning" / "config" / "isaaclab3_cartpole.py"
    result = run_config(config, tmp_path, ISAACLAB_RL_LIBRARY="tensorflow")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ISAACLAB_RL_LIBRARY='tensorflow': choose one of rsl_rl")
    assert result.stderr.count("\n") == 1


def test_a_bug_in_a_users_config_run_directly_is_one_line_naming_its_file_and_line(tmp_path):
    config = tmp_path / "my_sweep.py"
    config.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
        "from ray_workflow.sweeps.cli import main\n"
        "\n"
        "LEARNING_RATES = [1e-3, 3e-4]\n"
        "BEST = LEARNING_RATE[0]\n"
    )
    result = run_config(config, tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: {config}:6: NameError: name 'LEARNING_RATE' is not defined\n"
