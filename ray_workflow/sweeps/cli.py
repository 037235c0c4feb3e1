"""The tuner's command line, shared by ``hyper_parameter_tuning/tuner.py`` and every sweep config."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ray_workflow.errors import report_config_errors, script_main

# Every sweep config imports this module first: from here on, what stops the config before its main (a mistake in
# its settings, Ctrl-C while Ray and torch import) is one line too.
report_config_errors()

from ray_workflow import log_progress_to  # noqa: E402
from ray_workflow.cli_types import non_negative_float, non_negative_int, positive_float, positive_int, seed  # noqa: E402
from ray_workflow.sweeps.sweep import Sweep, load_sweep  # noqa: E402
from ray_workflow.sweeps.tuning import SCHEDULERS, SEARCHERS, TunerSettings, run_sweep  # noqa: E402


def build_parser(with_config_flags: bool) -> argparse.ArgumentParser:
    defaults = TunerSettings()
    parser = argparse.ArgumentParser(description="Tune hyperparameters of a training command with Ray Tune.")
    if with_config_flags:
        parser.add_argument("--cfg_file", type=Path, required=True, help="sweep config file (defines SWEEP)")
        parser.add_argument("--cfg_name", default="SWEEP", help="name of the Sweep in the config file")
    parser.add_argument(
        "--num_samples",
        type=positive_int,
        help=f"trials to run, grid: repeats of the grid (default {defaults.num_samples})",
    )
    parser.add_argument(
        "--searcher",
        choices=SEARCHERS,
        help=f"how to pick hyperparameters (default {defaults.searcher}; random with pbt)",
    )
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        help="asha stops poor trials early, pbt evolves hyperparameters during training"
        f" (default {defaults.scheduler})",
    )
    parser.add_argument("--cpus_per_trial", type=non_negative_float, help=f"default {defaults.cpus_per_trial:g}")
    parser.add_argument(
        "--gpus_per_trial",
        type=non_negative_float,
        help=f"fractions share a GPU, e.g. 0.25 (default {defaults.gpus_per_trial:g})",
    )
    parser.add_argument("--max_concurrent_trials", type=positive_int, help="default: as many as resources allow")
    parser.add_argument("--storage_path", help=f"local folder or gs:// / s3:// URI (default {defaults.storage_path})")
    parser.add_argument("--name", help="experiment name (default <sweep>_<date>)")
    parser.add_argument(
        "--ray_address", help=f"'auto', 'local' to start Ray here, or an address (default {defaults.ray_address})"
    )
    parser.add_argument(
        "--trial_timeout_s",
        type=positive_float,
        help=f"kill a trial that writes no metric for this long (default {defaults.trial_timeout_s:g})",
    )
    parser.add_argument("--seed", type=seed, help="seed of the searcher, 0 to 4294967295")
    parser.add_argument(
        "--max_failures",
        type=non_negative_int,
        help=f"retries of a failed trial, from its last checkpoint (default {defaults.max_failures})",
    )
    parser.add_argument(
        "--resume", action="store_true", default=None, help="continue the interrupted sweep --name under --storage_path"
    )
    parser.add_argument(
        "--retry_errored", action="store_true", default=None, help="with --resume: rerun errored trials"
    )
    parser.add_argument(
        "--wait_for_autoscaling",
        action="store_true",
        default=None,
        help="let trials wait for nodes the cluster has yet to add (default: refuse a trial no node can hold)",
    )
    parser.add_argument(
        "--no_warm_start",
        dest="warm_start",
        action="store_false",
        default=None,
        help="start every trainer as a fresh process (default: configs with warm_imports, such as Isaac Lab 3's, "
        "fork each trial's trainer from a slot that has imported them, which saves ~15 s a trial)",
    )
    parser.add_argument(
        "--mlflow_uri", help="log every trial to MLflow, e.g. sqlite:///mlflow.db or http://mlflow:5000"
    )
    return parser


def settings_from(args: argparse.Namespace, sweep: Sweep) -> TunerSettings:
    """The settings with the flags that were given (a flag left out is None)."""
    given = {f.name: getattr(args, f.name) for f in fields(TunerSettings) if getattr(args, f.name, None) is not None}
    return TunerSettings.layered(sweep, given)


@script_main
def main(argv: list[str] | None = None, sweep: Sweep | None = None) -> int:
    parser = build_parser(with_config_flags=sweep is None)
    args = parser.parse_args(argv)
    log_progress_to(sys.stdout)
    if sweep is None:
        sweep = load_sweep(args.cfg_file, args.cfg_name)
    report = run_sweep(sweep, settings_from(args, sweep))
    print()
    print(report.table)
    print()
    if report.best is not None:
        print(f"Best trial {report.best.trial_id}: {sweep.metric} = {report.best.best_metric:.4g}")
        for key, value in report.best.hyperparameters.items():
            print(f"    {key} = {value}")
    errors = sum(1 for trial in report.trials if trial.error)
    if errors:
        print(f"{errors} of {len(report.trials)} trials failed; their errors are in the table and results.csv")
    print(f"Results: {report.csv_path}")
    print(f"Learning curves: {report.plot_path}")
    print(f"Every trial side by side: tensorboard --logdir {report.directory}")
    return 0 if report.best is not None else 1
