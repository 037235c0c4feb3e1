"""Isaac-Cartpole-Direct with Isaac Lab 3's ``isaaclab train``: rsl_rl by default, rl_games or skrl.

    python hyper_parameter_tuning/config/isaaclab3_cartpole.py --ray_address local
    ISAACLAB_RL_LIBRARY=rl_games python hyper_parameter_tuning/config/isaaclab3_cartpole.py
    ray job submit --working-dir . -- python hyper_parameter_tuning/config/isaaclab3_cartpole.py

To tune your own task, change TASK (and the search space's keys, which are Isaac Lab's own
Hydra paths of the agent config). ``ISAACLAB`` is the command that runs Isaac Lab 3
(``isaaclab`` on the PATH; ``make isaaclab`` installs a CPU build into .venv-isaaclab), and
``ISAACLAB_DEVICE`` is ``cpu`` (Newton physics, no GPU or Isaac Sim) or ``cuda:0``. Every
trial writes under ``logs/<library>/...`` of its cwd, ``ISAACLAB_CWD`` (default: the worker's);
the tuner names each trial's run folder (``--run_timestamp``), so trials never share one.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# First: from here on, a mistake below or Ctrl-C while Ray imports is one line, not a traceback.
from ray_workflow.sweeps.cli import main

# isort: split
from ray import tune

from ray_workflow.sweeps.sweep import Sweep, SweepConfigError, environment_int
from ray_workflow.sweeps.training_command import TrainerCheckpoints, TrainingJob

TASK = "Isaac-Cartpole-Direct"
RL_LIBRARY = os.environ.get("ISAACLAB_RL_LIBRARY", "rsl_rl")
ISAACLAB = os.environ.get("ISAACLAB", "isaaclab")
DEVICE = os.environ.get("ISAACLAB_DEVICE", "cpu")
NUM_ENVS = environment_int("ISAACLAB_NUM_ENVS", 256)
MAX_ITERATIONS = environment_int("ISAACLAB_MAX_ITERATIONS", 100)
CHECKPOINT_INTERVAL = 10
# Warp compiles Newton's kernels on a node's first run (about 50 s) and keeps them in its cache
# (WARP_CACHE_PATH, default ~/.cache/warp); kit-less Isaac Lab finds its scene assets under
# ISAACSIM_ASSET_ROOT instead of downloading them (make isaaclab prepares them).
PASSED_ON = {key: os.environ[key] for key in ("WARP_CACHE_PATH", "ISAACSIM_ASSET_ROOT") if key in os.environ}

# A warm slot per trial actor imports these once and forks each trial's trainer from itself, so a trial trains
# about a second after it starts instead of ~15 s (tuner flag --no_warm_start: fresh processes).
WARM_IMPORTS = (
    "torch",
    "torch._dynamo",
    "warp",
    "newton",
    "newton._src.solvers.mujoco.solver_mujoco",
    "mujoco",
    "mujoco_warp",
    "gymnasium",
    "pxr.UsdUtils",
    "isaaclab.cli",
    "isaaclab.app.sim_launcher",
    "isaaclab.actuators.actuator_kernels",
    "isaaclab_rl.entrypoints",
    "isaaclab_rl.entrypoints.common",
    "isaaclab_tasks",
    "isaaclab_newton",
    "isaaclab_newton.physics.mjwarp_tendon_control",
)

# What differs between the RL libraries: device overrides, the metric, where checkpoints go
# and the override that sets how often, and the search space (keys are paths in each library's agent config).
LIBRARIES = {
    "rsl_rl": dict(
        overrides=(f"agent.device={DEVICE}",),
        checkpoint_interval="agent.save_interval={interval}",
        metric="Train/mean_reward",
        checkpoint_pattern="model_*.pt",
        warm_imports=("rsl_rl.runners", "rsl_rl.env"),
        search_space={
            "agent.algorithm.learning_rate": tune.loguniform(1e-4, 3e-3),
            "agent.algorithm.entropy_coef": tune.choice([0.0, 0.005, 0.01]),
            "agent.algorithm.num_learning_epochs": tune.choice([4, 5, 8]),
            "agent.algorithm.gamma": tune.uniform(0.97, 0.995),
        },
    ),
    "rl_games": dict(
        overrides=(
            f"agent.params.config.device={DEVICE}",
            f"agent.params.config.device_name={DEVICE}",
            f"agent.params.config.minibatch_size={NUM_ENVS * 8}",
        ),
        checkpoint_interval="agent.params.config.save_frequency={interval}",
        metric="rewards/iter",
        checkpoint_pattern="nn/*.pth",
        warm_imports=("rl_games.torch_runner",),
        search_space={
            "agent.params.config.learning_rate": tune.loguniform(1e-4, 3e-3),
            "agent.params.config.mini_epochs": tune.choice([4, 8]),
            "agent.params.config.entropy_coef": tune.choice([0.0, 0.001, 0.01]),
        },
    ),
    "skrl": dict(
        overrides=(),
        checkpoint_interval="agent.agent.experiment.checkpoint_interval={interval}",
        metric="Reward / Total reward (mean)",
        checkpoint_pattern="checkpoints/agent_*.pt",
        warm_imports=("skrl.agents.torch.ppo",),
        search_space={
            "agent.agent.learning_rate": tune.loguniform(1e-4, 3e-3),
            "agent.agent.learning_epochs": tune.choice([4, 8]),
            "agent.agent.entropy_loss_scale": tune.choice([0.0, 0.001, 0.01]),
        },
    ),
}
if RL_LIBRARY not in LIBRARIES:
    raise SweepConfigError(f"ISAACLAB_RL_LIBRARY={RL_LIBRARY!r}: choose one of {', '.join(LIBRARIES)}")
LIBRARY = LIBRARIES[RL_LIBRARY]

SWEEP = Sweep(
    name=f"isaaclab3_cartpole_{RL_LIBRARY}",
    job=TrainingJob(
        command=(
            ISAACLAB,
            "train",
            "--rl_library",
            RL_LIBRARY,
            "--task",
            TASK,
            "--device",
            DEVICE,
            "--num_envs",
            str(NUM_ENVS),
            "--max_iterations",
            str(MAX_ITERATIONS),
            "--ray-proc-id",
            "{trial_index}",
            *(["presets=newton_mjwarp"] if DEVICE == "cpu" else []),
            *LIBRARY["overrides"],
        ),
        override_style="hydra",
        log_dir_flag=None,
        run_name_args=("--run_timestamp", "{run_name}"),
        cwd=os.environ.get("ISAACLAB_CWD"),
        env=PASSED_ON,
        warm_cache_dir=PASSED_ON.get("WARP_CACHE_PATH", "~/.cache/warp"),
        warm_imports=(*WARM_IMPORTS, *LIBRARY["warm_imports"]),
        checkpoints=TrainerCheckpoints(
            pattern=LIBRARY["checkpoint_pattern"],
            interval=CHECKPOINT_INTERVAL,
            interval_args=(LIBRARY["checkpoint_interval"],),
            resume_flag="--checkpoint",
        ),
    ),
    search_space=LIBRARY["search_space"],
    metric=LIBRARY["metric"],
    mode="max",
    max_iterations=MAX_ITERATIONS,
    grace_period=min(20, MAX_ITERATIONS),
    defaults={"num_samples": 8, "cpus_per_trial": 1, "trial_timeout_s": 600},
)

if __name__ == "__main__":
    sys.exit(main(sweep=SWEEP))
