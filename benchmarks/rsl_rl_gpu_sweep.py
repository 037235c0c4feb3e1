"""The GPU check's sweep: rsl_rl's real runner (benchmarks/rsl_rl_cartpole.py) as Isaac Lab trials on cuda.

Trials share the GPU (--gpus_per_trial 0.25), name their run folders as Isaac Lab 3's do
(--run_timestamp), save model_<it>.pt every 10 iterations and resume from them (--checkpoint).

    python benchmarks/rsl_rl_gpu_sweep.py --num_samples 4 --gpus_per_trial 0.25
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray import tune

from ray_workflow.sweeps.cli import main
from ray_workflow.sweeps.sweep import Sweep
from ray_workflow.sweeps.training_command import TrainerCheckpoints, TrainingJob

MAX_ITERATIONS = int(os.environ.get("RSL_RL_MAX_ITERATIONS", "60"))
DEVICE = os.environ.get("RSL_RL_DEVICE", "cuda:0")
# The trainer's interpreter: the Ray worker's own by default (it must import rsl_rl).
PYTHON = os.environ.get("RSL_RL_PYTHON", "{python}")

SWEEP = Sweep(
    name="rsl_rl_gpu",
    job=TrainingJob(
        command=(
            PYTHON,
            "{project_root}/benchmarks/rsl_rl_cartpole.py",
            "--device",
            DEVICE,
            "--num_envs",
            "1024",
            "--max_iterations",
            str(MAX_ITERATIONS),
            "--ray-proc-id",
            "{trial_index}",
        ),
        log_dir_flag=None,
        run_name_args=("--run_timestamp", "{run_name}"),
        cwd=os.environ.get("RSL_RL_CWD"),
        checkpoints=TrainerCheckpoints("model_*.pt", 10, ("agent.save_interval={interval}",), "--checkpoint"),
    ),
    search_space={
        "agent.algorithm.learning_rate": tune.loguniform(3e-4, 3e-3),
        "agent.algorithm.entropy_coef": tune.choice([0.0, 0.005, 0.01]),
    },
    metric="Train/mean_reward",
    max_iterations=MAX_ITERATIONS,
    grace_period=MAX_ITERATIONS,
    defaults={"num_samples": 4, "cpus_per_trial": 2, "gpus_per_trial": 0.25, "scheduler": "fifo", "searcher": "random"},
)

if __name__ == "__main__":
    sys.exit(main(sweep=SWEEP))
