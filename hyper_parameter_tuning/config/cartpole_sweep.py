"""CartPole PPO sweep with the embedded trainer; runs anywhere, no GPU or Isaac Sim needed.

python hyper_parameter_tuning/config/cartpole_sweep.py --ray_address local
ray job submit --working-dir . -- python hyper_parameter_tuning/config/cartpole_sweep.py
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# First: from here on, a mistake below or Ctrl-C while Ray imports is one line, not a traceback.
from ray_workflow.sweeps.cli import main

# isort: split
from ray import tune

from ray_workflow.sweeps.sweep import Sweep, environment_int
from ray_workflow.sweeps.training_command import TrainerCheckpoints, TrainingJob
from train_cartpole import MEAN_RETURN_TAG

# A full trial's length; CARTPOLE_MAX_ITERATIONS shortens it (the tests use it for quick sweeps).
MAX_ITERATIONS = environment_int("CARTPOLE_MAX_ITERATIONS", 300)
# Where the policy trains: cpu (fastest for CartPole's small network) or cuda, to share a GPU between trials.
DEVICE = os.environ.get("CARTPOLE_DEVICE", "cpu")

SWEEP = Sweep(
    name="cartpole_ppo",
    job=TrainingJob(
        command=(
            "{python}",
            "{project_root}/train_cartpole.py",
            "--num_envs",
            "8",
            "--max_iterations",
            str(MAX_ITERATIONS),
            "--device",
            DEVICE,
        ),
        override_style="hydra",
        log_dir_flag="--log_dir",
        # A checkpoint every 20 iterations: a retried or resumed trial continues from the last one.
        checkpoints=TrainerCheckpoints(
            pattern="checkpoint_*.zip", interval=20, interval_args=("--checkpoint_interval", "{interval}")
        ),
    ),
    search_space={
        "agent.learning_rate": tune.loguniform(5e-4, 4e-3),
        "agent.gae_lambda": tune.uniform(0.8, 0.98),
        "agent.n_epochs": tune.choice([10, 20]),
        "agent.ent_coef": tune.choice([0.0, 0.001, 0.01]),
    },
    metric=MEAN_RETURN_TAG,
    mode="max",
    max_iterations=MAX_ITERATIONS,
    grace_period=min(60, MAX_ITERATIONS),
    defaults={"num_samples": 8, "cpus_per_trial": 1, "storage_path": "~/ray_results"},
)

if __name__ == "__main__":
    sys.exit(main(sweep=SWEEP))
