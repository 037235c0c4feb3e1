import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

from ray_workflow.sweeps.tensorboard_metrics import ScalarReader
from train_cartpole import DEFAULT_AGENT, MEAN_RETURN_TAG, OverrideError, apply_overrides

TRAINER = str(PROJECT_ROOT / "train_cartpole.py")


def test_overrides_are_parsed_with_the_type_of_the_default():
    agent = apply_overrides(DEFAULT_AGENT, ["agent.learning_rate=3e-4", "agent.n_steps=64", "agent.ent_coef=0.01"])
    assert agent["learning_rate"] == pytest.approx(3e-4)
    assert agent["n_steps"] == 64 and isinstance(agent["n_steps"], int)
    assert DEFAULT_AGENT["n_steps"] == 32, "the defaults must not be changed in place"


def test_unknown_override_names_the_key_and_the_valid_keys():
    with pytest.raises(OverrideError, match=r"unknown override 'agent\.lr=0\.1'.*agent\.learning_rate"):
        apply_overrides(DEFAULT_AGENT, ["agent.lr=0.1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("agent.n_steps=12.5", "agent.n_steps=12.5: expected a finite int"),
        ("agent.gamma=high", "agent.gamma=high: expected a finite float"),
        ("agent.learning_rate=nan", "agent.learning_rate=nan: expected a finite float"),
        ("agent.gamma=inf", "agent.gamma=inf: expected a finite float"),
        ("agent.n_steps=0", "agent.n_steps=0: must be at least 1"),
        ("learning_rate=0.1", "unknown override"),
    ],
)
def test_ill_typed_or_out_of_range_override_is_refused(override, message):
    with pytest.raises(OverrideError, match=message):
        apply_overrides(DEFAULT_AGENT, [override])


def test_bad_override_exits_non_zero_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, TRAINER, "--log_dir", str(tmp_path), "agent.bogus=1"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "agent.bogus=1" in result.stderr and "agent.learning_rate" in result.stderr


def test_training_writes_one_row_of_scalars_per_iteration_and_announces_its_log_dir(tmp_path):
    log_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            TRAINER,
            "--log_dir",
            str(log_dir),
            "--max_iterations",
            "4",
            "--num_envs",
            "4",
            "agent.n_steps=64",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"[INFO] Logging experiment in directory: {log_dir}" in result.stdout
    rows = ScalarReader(log_dir).poll(final=True)
    assert [row.step for row in rows] == [0, 1, 2, 3]
    assert [row.values["Train/env_steps"] for row in rows] == [256, 512, 768, 1024]
    assert all(row.values[MEAN_RETURN_TAG] > 0 for row in rows[1:])
    assert (log_dir / "model.zip").is_file()


def test_checkpoints_every_k_iterations_and_resume_continues_the_count_and_the_curve(tmp_path):
    first = tmp_path / "first"
    common = [sys.executable, TRAINER, "--num_envs", "2", "agent.n_steps=32"]
    run = subprocess.run(
        [*common, "--log_dir", str(first), "--max_iterations", "6", "--checkpoint_interval", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in first.glob("checkpoint_*.zip")) == ["checkpoint_000003.zip", "checkpoint_000006.zip"]
    resumed = tmp_path / "resumed"
    run = subprocess.run(
        [
            *common,
            "--log_dir",
            str(resumed),
            "--max_iterations",
            "6",
            "--checkpoint",
            str(first / "checkpoint_000003.zip"),
            "agent.learning_rate=0.002",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Resuming from checkpoint" in run.stdout and "after 3 iterations (192 env steps)" in run.stdout
    rows = ScalarReader(resumed).poll(final=True)
    assert [row.step for row in rows] == [3, 4, 5]
    assert [row.values["Train/env_steps"] for row in rows] == [256, 320, 384]


def test_a_missing_checkpoint_is_refused_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, TRAINER, "--log_dir", str(tmp_path), "--checkpoint", "nope.zip"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--checkpoint nope.zip: no such file" in result.stderr
