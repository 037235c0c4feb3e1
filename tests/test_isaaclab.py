"""Sweeps whose trials are the real Isaac Lab 3 (``isaaclab train``, rsl_rl, Newton physics on the CPU).

Isaac Lab is installed by ``make isaaclab`` (``make test`` does it first) into .venv-isaaclab;
its scene assets come from its own packages, so nothing is downloaded. Every trial of a test
starts in one shared folder, as Isaac Lab trials do on a cluster, so they share a log root.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from conftest import PROJECT_ROOT, live_processes, saved_sweep_state, sweep_command, wait_for, wait_until_none
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ray_workflow.sweeps.report import ERROR, FINISHED, STOPPED
from ray_workflow.sweeps.sweep import load_sweep
from ray_workflow.sweeps.tuning import TunerSettings, run_sweep

ISAACLAB_VENV = PROJECT_ROOT / ".venv-isaaclab"
CONFIG = PROJECT_ROOT / "hyper_parameter_tuning" / "config" / "isaaclab3_cartpole.py"
PATIENT = ("--trial_timeout_s", "600")  # Newton compiles its kernels (about 50 s cold) before the first metric
METRIC = "Train/mean_reward"

if not (ISAACLAB_VENV / ".installed").exists():
    if os.environ.get("CI"):
        raise RuntimeError("Isaac Lab is not installed: `make test` installs it with `make isaaclab`")
    pytest.skip("Isaac Lab 3 is not installed here: run `make isaaclab` (make test does)", allow_module_level=True)


@pytest.fixture
def isaaclab_env(monkeypatch, tmp_path):
    """The environment the sweep config reads: our Isaac Lab, its assets, a small fast Cartpole."""
    cwd = tmp_path / "isaaclab_cwd"
    cwd.mkdir()
    values = {
        "ISAACLAB": str(ISAACLAB_VENV / "bin" / "isaaclab"),
        "ISAACSIM_ASSET_ROOT": str(ISAACLAB_VENV / "assets"),
        "ISAACLAB_NUM_ENVS": "64",
        "ISAACLAB_MAX_ITERATIONS": "20",
        "ISAACLAB_CWD": str(cwd),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def sweep_settings(tmp_path, **changes):
    values = dict(
        num_samples=4,
        searcher="random",
        scheduler="fifo",
        storage_path=str(tmp_path / "storage"),
        name="exp",
        ray_address="auto",
        trial_timeout_s=600,
        max_failures=0,
        seed=1,
    )
    values.update(changes)
    return TunerSettings(**values)


def trainers_in(cwd: str) -> list[psutil.Process]:
    """Live Isaac Lab trainers started in ``cwd`` (their command line does not name it)."""
    return live_processes(lambda info: info["cwd"] == cwd and "--rl_library" in (info["cmdline"] or []))


def wait_until_no_trainer_in(cwd: str, timeout_s: float = 30) -> list[psutil.Process]:
    return wait_until_none(lambda: trainers_in(cwd), timeout_s)


def run_folder_of(trial_id: str, cwd: Path) -> Path:
    (folder,) = [path for path in (cwd / "logs" / "rsl_rl").glob("*/*") if trial_id in path.name]
    return folder


def tensorboard_values(folder: Path) -> dict[int, float]:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(METRIC)}


def tune_results(experiment: Path, trial_id: str) -> list[dict]:
    lines = (experiment / f"trial_{trial_id}" / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_four_trials_two_at_once_from_one_cwd_each_report_only_their_own_run(ray_driver, tmp_path, isaaclab_env):
    sweep = load_sweep(CONFIG)
    report = run_sweep(sweep, sweep_settings(tmp_path, max_concurrent_trials=2))
    assert [trial.status for trial in report.trials] == [FINISHED] * 4, report.table
    cwd = Path(isaaclab_env["ISAACLAB_CWD"])
    assert len(list((cwd / "logs" / "rsl_rl" / "cartpole_direct").iterdir())) == 4, "one run folder per trial"
    for trial in report.trials:
        written = tensorboard_values(run_folder_of(trial.trial_id, cwd))
        results = tune_results(tmp_path / "storage" / "exp", trial.trial_id)
        assert len(results) == 20 and [r["iteration"] for r in results] == sorted(written)
        assert [r[METRIC] for r in results] == pytest.approx([written[r["iteration"]] for r in results], abs=1e-6)
    assert wait_until_no_trainer_in(isaaclab_env["ISAACLAB_CWD"]) == []


def test_asha_stopping_a_trial_ends_its_isaac_lab_trainer(ray_driver, tmp_path, isaaclab_env, monkeypatch):
    monkeypatch.setenv("ISAACLAB_MAX_ITERATIONS", "30")
    sweep = load_sweep(CONFIG)
    sweep = dataclasses.replace(sweep, grace_period=4)
    report = run_sweep(sweep, sweep_settings(tmp_path, scheduler="asha", max_concurrent_trials=2))
    stopped = [trial for trial in report.trials if trial.status == STOPPED]
    assert stopped, report.table
    cwd = Path(isaaclab_env["ISAACLAB_CWD"])
    for trial in stopped:
        last_written = max(tensorboard_values(run_folder_of(trial.trial_id, cwd)))
        assert last_written < 29, f"{trial.trial_id}'s trainer went on to {last_written} after ASHA stopped it"
    assert wait_until_no_trainer_in(isaaclab_env["ISAACLAB_CWD"]) == []


def test_bad_override_makes_an_error_trial_with_the_exit_code(ray_driver, tmp_path, isaaclab_env):
    sweep = load_sweep(CONFIG)
    bad = {**sweep.search_space, "agent.algorithm.num_learning_epochs": "five"}
    sweep = dataclasses.replace(sweep, search_space=bad)
    report = run_sweep(sweep, sweep_settings(tmp_path, num_samples=1))
    (trial,) = report.trials
    assert trial.status == ERROR and "exited with code 1" in trial.error, trial.error


def test_killed_trainer_is_retried_from_its_model_checkpoint_and_continues_the_iteration_count(
    ray_driver, tmp_path, isaaclab_env, monkeypatch
):
    monkeypatch.setenv("ISAACLAB_MAX_ITERATIONS", "40")
    storage, cwd = tmp_path / "storage", isaaclab_env["ISAACLAB_CWD"]
    driver = subprocess.Popen(
        sweep_command(
            CONFIG, ray_driver.gcs_address, storage, "retry", *PATIENT, "--num_samples", "1", "--max_failures", "1"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def trainer_with_a_tune_checkpoint():
        trials = list((storage / "retry").glob("trial_*/checkpoint_*"))
        trainers = trainers_in(cwd)
        return trainers[0] if trials and trainers else None

    trainer = wait_for(trainer_with_a_tune_checkpoint, 400, "a running trainer whose trial has a checkpoint")
    os.killpg(os.getpgid(trainer.pid), signal.SIGKILL)
    output, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, output[-3000:]
    (trial_dir,) = (storage / "retry").glob("trial_*")
    log = (trial_dir / "training_output.log").read_text()
    assert "Loading model checkpoint from:" in log and "model_" in log, log[-2000:]
    checkpoint = re.search(r"Loading model checkpoint from: \S*model_(\d+)\.pt", log)
    assert checkpoint, log[-2000:]
    # rsl_rl continues from the checkpoint's iteration, not from 0.
    first_after = re.search(r"Learning iteration (\d+)/", log[checkpoint.end() :])
    assert first_after and first_after[1] == checkpoint[1], log[checkpoint.start() : checkpoint.start() + 3000]
    results = tune_results(storage / "retry", trial_dir.name[len("trial_") :])
    iterations = [result["iteration"] for result in results]
    # If Tune rolled the trial back to its checkpoint, results after it were reported again, once;
    # on each side of that, every iteration at most once and in order, up to the last.
    restarts = [i for i in range(1, len(iterations)) if iterations[i] <= iterations[i - 1]]
    assert len(restarts) <= 1 and iterations[-1] == 39, iterations
    # Tune's result.json may lack the results it had not yet synced when the trainer died (seen
    # under load: up to one checkpoint interval's worth); never more.
    assert len(set(range(40)) - set(iterations)) <= load_sweep(CONFIG).job.checkpoints.interval, iterations


def test_interrupted_isaac_lab_sweep_resumes_keeping_finished_trials(ray_driver, tmp_path, isaaclab_env, monkeypatch):
    # Long enough that Tune's saved state records the second trial's checkpoint while it still runs.
    monkeypatch.setenv("ISAACLAB_MAX_ITERATIONS", "60")
    storage = tmp_path / "storage"
    experiment = storage / "resumable"
    command = sweep_command(
        CONFIG, ray_driver.gcs_address, storage, "resumable", *PATIENT, "--num_samples", "2",
        "--max_concurrent_trials", "1", "--scheduler", "fifo", "--searcher", "random", "--seed", "3",
    )  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    finished, checkpointed = wait_for(lambda: saved_sweep_state(experiment), 400, "a finished and a checkpointed trial")
    finished_results = {trial: (trial / "result.json").read_bytes() for trial in finished}
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert wait_until_no_trainer_in(isaaclab_env["ISAACLAB_CWD"]) == [], "the dead driver's trainers must end"
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = {row.split(",")[0]: row for row in (experiment / "results.csv").read_text().splitlines()[1:]}
    assert len(rows) == 2 and all(",FINISHED," in row for row in rows.values()), rows
    for trial, result_bytes in finished_results.items():
        assert (trial / "result.json").read_bytes() == result_bytes, f"{trial.name} was run again"
    for trial in checkpointed:
        assert "Loading model checkpoint from:" in (trial / "training_output.log").read_text()
