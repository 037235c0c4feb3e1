"""The CartPole sweep config the resilience, bucket and SLURM tests (and the bucket benchmark) run: the shipped
CartPole sweep with its iterations, checkpoint interval and grid set, written as a config file a driver runs."""

from __future__ import annotations

import csv
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
import dataclasses, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {root!r} + "/hyper_parameter_tuning/config")
from ray import tune
from cartpole_sweep import SWEEP as CARTPOLE
from ray_workflow.sweeps.cli import main
from ray_workflow.sweeps.training_command import TrainerCheckpoints

SWEEP = dataclasses.replace(
    CARTPOLE,
    job=dataclasses.replace(
        CARTPOLE.job,
        command=(*CARTPOLE.job.command, "--max_iterations", "{iterations}"),
        checkpoints=TrainerCheckpoints("checkpoint_*.zip", {interval}, ("--checkpoint_interval", "{{interval}}")),
    ),
    search_space={{"agent.ent_coef": tune.grid_search({grid})}},
    max_iterations={iterations},
    grace_period=1,
)
if __name__ == "__main__":
    sys.exit(main(sweep=SWEEP))
"""


def write_config(folder: Path, iterations: int, interval: int, grid: list[float]) -> Path:
    path = folder / "sweep_config.py"
    path.write_text(CONFIG.format(root=str(PROJECT_ROOT), iterations=iterations, interval=interval, grid=grid))
    return path


# Each grid point once, in grid order, with no early stopping.
ONE_BY_ONE = ("--searcher", "grid", "--scheduler", "fifo", "--num_samples", "1", "--trial_timeout_s", "120")


def results_by_trial(experiment: Path) -> dict[str, dict]:
    """The rows of a sweep's results.csv, by trial id."""
    with open(experiment / "results.csv") as handle:
        return {row["trial_id"]: row for row in csv.DictReader(handle)}
