import os
import sys
import time

import numpy as np
import psutil
import pytest
from conftest import PROJECT_ROOT, processes_mentioning, wait_for, wait_until_gone

from ray_workflow.sweeps.training_command import TrainerMissing, TrainingJob, TrainingProcess, render_arguments


def test_hydra_overrides_render_as_key_equals_value():
    arguments = render_arguments(
        {"agent.learning_rate": 0.001, "agent.units": [64, 32], "env.flag": True, "agent.clip": None},
        "hydra",
    )
    assert arguments == ["agent.learning_rate=0.001", "agent.units=[64,32]", "env.flag=true", "agent.clip=null"]


def test_flag_style_renders_values_and_store_true_switches():
    arguments = render_arguments(
        {"lr": np.float64(0.5), "steps": np.int64(3), "headless": True, "video": False}, "flags"
    )
    assert arguments == ["--lr", "0.5", "--steps", "3", "--headless"]


def test_job_argv_substitutes_the_interpreter_and_project_root_and_adds_the_log_dir(tmp_path):
    job = TrainingJob(command=("{python}", "{project_root}/train_cartpole.py", "--num_envs", "4"))
    argv = job.argv({"agent.n_steps": 16}, tmp_path)
    assert argv == [
        sys.executable,
        f"{PROJECT_ROOT}/train_cartpole.py",
        "--num_envs",
        "4",
        "--log_dir",
        str(tmp_path),
        "agent.n_steps=16",
    ]


def test_job_without_log_dir_flag_leaves_the_directory_to_the_trainer(tmp_path):
    job = TrainingJob(command=("train.sh",), log_dir_flag=None)
    assert job.argv({"x": 1}, tmp_path) == ["train.sh", "x=1"]


def test_bad_override_style_is_refused():
    with pytest.raises(ValueError, match="override_style 'yaml'"):
        TrainingJob(command=("x",), override_style="yaml")


def test_process_reports_isaac_lab_log_dir_and_keeps_the_output_tail(tmp_path):
    script = (
        "print('[INFO] Logging experiment in directory: /logs/rl_games/cartpole');"
        "print('Exact experiment name requested from command line: trial_7');"
        "[print(f'line {i}') for i in range(100)]"
    )
    process = TrainingProcess([sys.executable, "-c", script], tmp_path / "out.log", tail_lines=5)
    while process.poll() is None:
        time.sleep(0.05)
    assert process.poll() == 0
    assert str(process.reported_log_dir) == "/logs/rl_games/cartpole/trial_7"
    assert process.tail().splitlines() == [f"line {i}" for i in range(95, 100)]
    assert "line 0" in (tmp_path / "out.log").read_text()


def test_stop_ends_the_whole_process_group_including_grandchildren(tmp_path):
    marker = str(tmp_path / "grandchild-marker")
    script = (
        "import subprocess, sys, time;"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}]);"
        "print('ready', flush=True); time.sleep(600)"
    )
    process = TrainingProcess([sys.executable, "-c", script, marker], tmp_path / "out.log")
    wait_for(lambda: "ready" in process.tail(), 30, "the trainer to start its child")
    assert len(processes_mentioning(marker)) == 2
    process.stop(grace_s=2)
    assert wait_until_gone(marker, timeout_s=5) == []
    assert process.poll() is not None


def test_trainer_dies_with_the_process_that_started_it(tmp_path):
    """A Ray worker killed with SIGKILL has no chance to clean up; the trainer must not outlive it."""
    marker = str(tmp_path / "orphan-marker")
    parent = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path; from ray_workflow.sweeps.training_command import TrainingProcess;"
        "TrainingProcess([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[2]], Path(sys.argv[3]));"
        "time.sleep(600)"
    )
    import subprocess

    worker = subprocess.Popen([sys.executable, "-c", parent, str(PROJECT_ROOT), marker, str(tmp_path / "o.log")])
    wait_for(lambda: len(processes_mentioning(marker)) == 2, 30, "the worker to start its trainer")
    os.kill(worker.pid, 9)
    worker.wait()
    assert wait_until_gone(marker, timeout_s=5) == []


def test_a_daemon_the_trainer_double_forks_out_of_its_session_ends_with_the_trial(tmp_path):
    """The daemon leaves the trainer's process group and session at once; the trial's mark in its environment,
    which it inherited, is how ``stop`` finds it."""
    pid_file = tmp_path / "daemon.pid"
    argv = [sys.executable, str(PROJECT_ROOT / "tests" / "scripted_trainer.py"), "--log_dir", str(tmp_path / "tb")]
    trainer = TrainingProcess([*argv, "--iterations", "100000", "--daemon", str(pid_file)], tmp_path / "out.log")
    daemon = psutil.Process(int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the daemon")))
    assert os.getsid(daemon.pid) != os.getsid(trainer.pgid) and os.getpgid(daemon.pid) != trainer.pgid
    trainer.stop()
    assert wait_for(lambda: not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE, 30, "the daemon to end")


def test_a_trainer_whose_interpreter_is_missing_is_named_by_its_interpreter(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("#!/opt/isaaclab/_isaac_sim/python.sh\nprint('never')\n")
    script.chmod(0o755)
    with pytest.raises(TrainerMissing, match=r"its interpreter /opt/isaaclab/_isaac_sim/python.sh \(its #! line\)"):
        TrainingProcess([str(script), "--task", "x"], tmp_path / "out.log")
    with pytest.raises(TrainerMissing, match="'no-such-trainer': no such file"):
        TrainingProcess(["no-such-trainer"], tmp_path / "out.log")
