"""Isaac-Cartpole-v0 with rl_games, tuned through Isaac Lab's own train.py (needs Isaac Lab and a GPU).

    ray job submit --working-dir . -- python hyper_parameter_tuning/config/isaac_cartpole_rl_games.py

ISAACLAB_PATH (default /workspace/isaaclab, as in Isaac Lab's container) is where
``isaaclab.sh`` lives on the cluster's nodes. The log directory is not set up front:
it is read from train.py's ``[INFO] Logging experiment in directory`` line.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ray import tune  # noqa: E402

from ray_workflow.sweep import Sweep  # noqa: E402
from ray_workflow.sweep_cli import main  # noqa: E402
from ray_workflow.training_command import TrainingJob  # noqa: E402

ISAACLAB_PATH = os.environ.get("ISAACLAB_PATH", "/workspace/isaaclab")
MAX_EPOCHS = 150

SWEEP = Sweep(
    name="isaac_cartpole_rl_games",
    job=TrainingJob(
        command=(
            f"{ISAACLAB_PATH}/isaaclab.sh",
            "-p",
            "scripts/reinforcement_learning/rl_games/train.py",
            "--task",
            "Isaac-Cartpole-v0",
            "--headless",
            f"agent.params.config.max_epochs={MAX_EPOCHS}",
        ),
        override_style="hydra",
        log_dir_flag=None,
        cwd=ISAACLAB_PATH,
    ),
    search_space={
        "agent.params.config.learning_rate": tune.loguniform(1e-4, 1e-2),
        "agent.params.config.mini_epochs": tune.choice([4, 8]),
        "agent.params.config.entropy_coef": tune.choice([0.0, 0.001, 0.01]),
        "agent.params.network.mlp.units": tune.choice([[32, 32], [64, 64], [128, 64]]),
        "env.scene.num_envs": tune.choice([256, 512]),
    },
    metric="rewards/iter",
    mode="max",
    max_iterations=MAX_EPOCHS,
    grace_period=20,
    defaults={"num_samples": 16, "cpus_per_trial": 4, "gpus_per_trial": 1, "trial_timeout_s": 1800},
)

if __name__ == "__main__":
    sys.exit(main(sweep=SWEEP))
