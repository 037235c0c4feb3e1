"""Isaac-Cartpole-v0 through Isaac Lab 2.x's own train.py: rl_games by default, rsl_rl or skrl.

    ray job submit --working-dir . -- python hyper_parameter_tuning/config/isaac_cartpole_rl_games.py
    ISAACLAB_RL_LIBRARY=rsl_rl ray job submit --working-dir . -- python hyper_parameter_tuning/config/...

ISAACLAB_PATH (default /workspace/isaaclab, as in Isaac Lab's container) is where
``isaaclab.sh`` lives on the cluster's nodes; every trial starts there, so all of them log
under its ``logs/<library>/`` root. The tuner gives each trial's run folder a name of its own
through the library's run-name override and reads metrics from that folder only. For Isaac
Lab 3 (``isaaclab train``), use ``isaaclab3_cartpole.py``. To tune your own task, change TASK.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# First: from here on, a mistake below or Ctrl-C while Ray imports is one line, not a traceback.
from ray_workflow.sweeps.cli import main

# isort: split
from ray import tune

from ray_workflow.sweeps.sweep import Sweep, SweepConfigError
from ray_workflow.sweeps.training_command import TrainerCheckpoints, TrainingJob

TASK = "Isaac-Cartpole-v0"
RL_LIBRARY = os.environ.get("ISAACLAB_RL_LIBRARY", "rl_games")
ISAACLAB_PATH = os.environ.get("ISAACLAB_PATH", "/workspace/isaaclab")
MAX_ITERATIONS = 150
CHECKPOINT_INTERVAL = 25

# Per library: the override naming the run folder, the metric, and the trainer's checkpoints
# (rsl_rl 2.x resumes only through --resume/--load_run, so its trials restart from scratch).
LIBRARIES = {
    "rl_games": dict(
        run_name="agent.params.config.full_experiment_name={run_name}",
        length=f"agent.params.config.max_epochs={MAX_ITERATIONS}",
        metric="rewards/iter",
        checkpoints=TrainerCheckpoints(
            "nn/*.pth", CHECKPOINT_INTERVAL, ("agent.params.config.save_frequency={interval}",), "--checkpoint"
        ),
        search_space={
            "agent.params.config.learning_rate": tune.loguniform(1e-4, 1e-2),
            "agent.params.config.mini_epochs": tune.choice([4, 8]),
            "agent.params.config.entropy_coef": tune.choice([0.0, 0.001, 0.01]),
            "agent.params.network.mlp.units": tune.choice([[32, 32], [64, 64], [128, 64]]),
            "env.scene.num_envs": tune.choice([256, 512]),
        },
    ),
    "rsl_rl": dict(
        run_name="agent.run_name={run_name}",
        length=f"agent.max_iterations={MAX_ITERATIONS}",
        metric="Train/mean_reward",
        checkpoints=None,
        search_space={
            "agent.algorithm.learning_rate": tune.loguniform(1e-4, 3e-3),
            "agent.algorithm.entropy_coef": tune.choice([0.0, 0.005, 0.01]),
            "agent.algorithm.num_learning_epochs": tune.choice([4, 5, 8]),
        },
    ),
    "skrl": dict(
        run_name="agent.agent.experiment.experiment_name={run_name}",
        length=f"--max_iterations={MAX_ITERATIONS}",
        metric="Reward / Total reward (mean)",
        checkpoints=TrainerCheckpoints(
            "checkpoints/agent_*.pt",
            CHECKPOINT_INTERVAL,
            ("agent.agent.experiment.checkpoint_interval={interval}",),
            "--checkpoint",
        ),
        search_space={
            "agent.agent.learning_rate": tune.loguniform(1e-4, 3e-3),
            "agent.agent.learning_epochs": tune.choice([4, 8]),
        },
    ),
}
if RL_LIBRARY not in LIBRARIES:
    raise SweepConfigError(f"ISAACLAB_RL_LIBRARY={RL_LIBRARY!r}: choose one of {', '.join(LIBRARIES)}")
LIBRARY = LIBRARIES[RL_LIBRARY]

SWEEP = Sweep(
    name=f"isaac_cartpole_{RL_LIBRARY}",
    job=TrainingJob(
        command=(
            f"{ISAACLAB_PATH}/isaaclab.sh",
            "-p",
            f"scripts/reinforcement_learning/{RL_LIBRARY}/train.py",
            "--task",
            TASK,
            "--headless",
            "--ray-proc-id",
            "{trial_index}",
            LIBRARY["length"],
        ),
        override_style="hydra",
        log_dir_flag=None,
        run_name_args=(LIBRARY["run_name"],),
        cwd=ISAACLAB_PATH,
        checkpoints=LIBRARY["checkpoints"],
    ),
    search_space=LIBRARY["search_space"],
    metric=LIBRARY["metric"],
    mode="max",
    max_iterations=MAX_ITERATIONS,
    grace_period=20,
    defaults={"num_samples": 16, "cpus_per_trial": 4, "gpus_per_trial": 1, "trial_timeout_s": 1800},
)

if __name__ == "__main__":
    sys.exit(main(sweep=SWEEP))
