"""Population-based training of CartPole PPO: trials copy better trials' checkpoints and perturb their settings.

python hyper_parameter_tuning/config/cartpole_pbt.py --ray_address local
"""

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for cartpole_sweep, also when loaded by tuner.py

# First: from here on, a mistake below or Ctrl-C while Ray imports is one line, not a traceback.
from ray_workflow.sweeps.cli import main

# isort: split
from cartpole_sweep import SWEEP as CARTPOLE
from ray import tune

from ray_workflow.sweeps.training_command import TrainerCheckpoints

# PBT compares trials and exploits every checkpoint interval: 10 iterations here.
SWEEP = dataclasses.replace(
    CARTPOLE,
    name="cartpole_pbt",
    job=dataclasses.replace(
        CARTPOLE.job,
        checkpoints=TrainerCheckpoints(
            pattern="checkpoint_*.zip", interval=10, interval_args=("--checkpoint_interval", "{interval}")
        ),
    ),
    search_space={
        "agent.learning_rate": tune.loguniform(3e-4, 5e-3),
        "agent.ent_coef": tune.uniform(0.0, 0.01),
        "agent.clip_range": tune.uniform(0.1, 0.3),
    },
    defaults={**CARTPOLE.defaults, "scheduler": "pbt", "searcher": "random", "num_samples": 4},
)

if __name__ == "__main__":
    sys.exit(main(sweep=SWEEP))
