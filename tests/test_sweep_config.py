import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, wait_for
from ray import tune

from ray_workflow.sweeps.cli import build_parser, settings_from
from ray_workflow.sweeps.sweep import Sweep, SweepConfigError, load_sweep
from ray_workflow.sweeps.training_command import TrainingJob
from ray_workflow.sweeps.tuning import TunerSettings, build_search, grid_space

JOB = TrainingJob(command=("train",))


def sweep(**changes):
    fields = dict(name="s", job=JOB, search_space={"agent.lr": tune.loguniform(1e-4, 1e-2)}, metric="m")
    fields.update(changes)
    return Sweep(**fields)


def write_config(tmp_path, body):
    path = tmp_path / "my_sweep.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_shipped_configs_load_and_render_their_commands():
    cartpole = load_sweep(PROJECT_ROOT / "hyper_parameter_tuning/config/cartpole_sweep.py")
    assert cartpole.job.argv({"agent.learning_rate": 0.002}, None)[-1] == "agent.learning_rate=0.002"
    isaac = load_sweep(PROJECT_ROOT / "hyper_parameter_tuning/config/isaac_cartpole_rl_games.py")
    argv = isaac.job.argv(
        {"agent.params.config.learning_rate": 0.0003, "agent.params.network.mlp.units": [64, 64]},
        None,
        resume_from=Path("/ckpt/nn/last.pth"),
        run_name="2026-11-26_10-00-00_abc_00001_f00d",
        trial_index=1,
    )
    assert argv == [
        "/workspace/isaaclab/isaaclab.sh",
        "-p",
        "scripts/reinforcement_learning/rl_games/train.py",
        "--task",
        "Isaac-Cartpole-v0",
        "--headless",
        "--ray-proc-id",
        "1",
        "agent.params.config.max_epochs=150",
        "agent.params.config.full_experiment_name=2026-11-26_10-00-00_abc_00001_f00d",
        "agent.params.config.save_frequency=25",
        "--checkpoint",
        "/ckpt/nn/last.pth",
        "agent.params.config.learning_rate=0.0003",
        "agent.params.network.mlp.units=[64,64]",
    ]
    isaaclab3 = load_sweep(PROJECT_ROOT / "hyper_parameter_tuning/config/isaaclab3_cartpole.py")
    argv = isaaclab3.job.argv({"agent.algorithm.learning_rate": 0.001}, None, run_name="run-1", trial_index=3)
    assert argv[:3] == ["isaaclab", "train", "--rl_library"] and "Isaac-Cartpole-Direct" in argv
    assert argv[argv.index("--run_timestamp") + 1] == "run-1" and argv[argv.index("--ray-proc-id") + 1] == "3"
    assert argv[-1] == "agent.algorithm.learning_rate=0.001" and "agent.save_interval=10" in argv


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SweepConfigError, match=r"nope\.py: sweep config file not found"):
        load_sweep(tmp_path / "nope.py")


def test_syntax_error_names_file_and_line(tmp_path):
    path = write_config(tmp_path, "x = 1\ny = (\n")
    with pytest.raises(SweepConfigError, match=rf"{re.escape(str(path))}:2: syntax error"):
        load_sweep(path)


def test_error_raised_by_the_config_names_its_line(tmp_path):
    path = write_config(
        tmp_path,
        """\
        from ray import tune
        SPACE = {"lr": tune.loguniform(0, 1)}
    """,
    )
    with pytest.raises(SweepConfigError, match=r":2: ValueError"):
        load_sweep(path)


def test_config_without_sweep_says_what_it_expected(tmp_path):
    path = write_config(tmp_path, "X = 1\n")
    with pytest.raises(SweepConfigError, match=r"defines no SWEEP \(expected SWEEP = Sweep\(\.\.\.\)\)"):
        load_sweep(path)
    with pytest.raises(SweepConfigError, match="X is a int, not a Sweep"):
        load_sweep(path, "X")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "maximum"}, "mode 'maximum'"),
        ({"search_space": {}}, "search_space is empty"),
        ({"grace_period": 50, "max_iterations": 10}, "grace_period 50 must be between 1 and max_iterations 10"),
    ],
)
def test_invalid_sweep_is_refused(changes, message):
    with pytest.raises(SweepConfigError, match=message):
        sweep(**changes)


def test_grid_searcher_turns_choices_into_axes_and_refuses_continuous_domains():
    space = {"a": tune.choice([1, 2]), "b": 5}
    assert grid_space(space) == {"a": {"grid_search": [1, 2]}, "b": 5}
    with pytest.raises(SweepConfigError, match="agent.lr is a continuous Float"):
        grid_space({"agent.lr": tune.uniform(0, 1)})


def test_optuna_refuses_grid_axes():
    with pytest.raises(SweepConfigError, match="use --searcher grid"):
        build_search(sweep(search_space={"a": tune.grid_search([1, 2])}), TunerSettings(searcher="optuna"))


def test_flags_override_the_sweep_defaults_which_override_the_tuner_defaults():
    configured = sweep(defaults={"num_samples": 3, "cpus_per_trial": 2})
    args = build_parser(with_config_flags=False).parse_args(["--cpus_per_trial", "0.5", "--gpus_per_trial", "0.25"])
    settings = settings_from(args, configured)
    assert (settings.num_samples, settings.cpus_per_trial, settings.gpus_per_trial) == (3, 0.5, 0.25)
    assert settings.searcher == "optuna" and settings.scheduler == "asha"


def test_unknown_sweep_default_is_refused():
    args = build_parser(with_config_flags=False).parse_args([])
    with pytest.raises(SweepConfigError, match=r"unknown defaults \['num_trials'\]"):
        settings_from(args, sweep(defaults={"num_trials": 3}))


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"num_samples": "8"}, "defaults['num_samples'] is '8'; expected int"),
        ({"cpus_per_trial": True}, "defaults['cpus_per_trial'] is True; expected float"),
        ({"seed": 1.5}, "defaults['seed'] is 1.5; expected int or None"),
    ],
)
def test_a_sweep_default_of_the_wrong_type_is_named(defaults, message):
    args = build_parser(with_config_flags=False).parse_args([])
    with pytest.raises(SweepConfigError, match=re.escape(message)):
        settings_from(args, sweep(defaults=defaults))
    assert settings_from(args, sweep(defaults={"cpus_per_trial": 2, "seed": None})).cpus_per_trial == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (TunerSettings(num_samples=0), "--num_samples 0"),
        (TunerSettings(gpus_per_trial=1.5), "--gpus_per_trial 1.5"),
        (TunerSettings(cpus_per_trial=-1), "must not be negative"),
        (TunerSettings(max_concurrent_trials=0), "--max_concurrent_trials 0"),
    ],
)
def test_invalid_tuner_settings_are_refused(settings, message):
    with pytest.raises(SweepConfigError, match=message):
        settings.validate()


def test_tuner_cli_reports_a_bad_config_in_one_line_without_starting_ray(tmp_path):
    path = write_config(tmp_path, "SWEEP = 42\n")
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "hyper_parameter_tuning/tuner.py"),
            "--cfg_file",
            str(path),
            "--ray_address",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: SWEEP is a int, not a Sweep"


def cartpole_sweep(*flags: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "hyper_parameter_tuning/config/cartpole_sweep.py"), *flags],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "argument --seed: '-1': a seed is a whole number from 0 to 4294967295"),
        (["--seed", "99999999999999999999999"], "a seed is a whole number from 0 to 4294967295"),
        (["--name", "x" * 300], "an experiment's name is one folder name of at most 128 bytes under --storage_path"),
    ],
)
def test_a_seed_numpy_cannot_take_or_an_overlong_name_is_refused_before_ray_starts(flags, message):
    sweep = cartpole_sweep("--ray_address", "127.0.0.1:1", *flags)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 2 and message in err and "Traceback" not in err, err


def test_ctrl_c_while_a_sweep_imports_ray_is_one_line_and_exit_130():
    """In its first second a sweep is still importing Ray and torch, before its main: Ctrl-C there too is the one
    ``interrupted`` line, never the traceback of an import."""
    sweep = cartpole_sweep("--ray_address", "local")
    wait_for(lambda: "ray/_raylet" in Path(f"/proc/{sweep.pid}/maps").read_text(), 60, "the sweep to import Ray")
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130 and err == "interrupted\n", err
