"""Running a sweep with Ray Tune: searcher, scheduler, resources, and the results it leaves.

Searchers and schedulers are Ray Tune's own (Optuna, random, grid; ASHA, FIFO, PBT); this
module only wires them to a ``Sweep`` and to the command-running trainable, with retries,
checkpoints, resume and tracking.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm, Searcher
from ray.tune.search.sample import Categorical, Domain

from ray_workflow import CLUSTER_VARIABLE, code_upload
from ray_workflow.cluster_check import largest_node
from ray_workflow.connection import connect_driver
from ray_workflow.errors import setting
from ray_workflow.sweeps.report import SweepReport, write_report
from ray_workflow.sweeps.storage import Storage, check_writable, claim, driving, open_storage
from ray_workflow.sweeps.sweep import Sweep, SweepConfigError
from ray_workflow.sweeps.trainable import CommandTrainable

SEARCHERS = ("optuna", "random", "grid")
MAX_NAME_BYTES = 128  # an experiment's folder, under which Tune names trials, checkpoints and their files
SCHEDULERS = ("asha", "fifo", "pbt")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TunerSettings:
    """The tuner's knobs; every one is a command-line flag of the sweep scripts, whose help shows these defaults."""

    num_samples: int = 8
    searcher: str = "optuna"
    scheduler: str = "asha"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None
    storage_path: str = str(Path("~/ray_results").expanduser())
    name: str | None = None
    ray_address: str = "auto"
    trial_timeout_s: float = 900.0
    seed: int | None = None
    max_failures: int = 2
    resume: bool = False
    retry_errored: bool = False
    wait_for_autoscaling: bool = False
    warm_start: bool = True
    mlflow_uri: str | None = None

    @classmethod
    def layered(cls, sweep: Sweep, given: dict[str, Any]) -> TunerSettings:
        """These defaults, then the sweep's own defaults, then the flags ``given``.

        PBT mutates hyperparameters itself and Optuna cannot follow it, so a PBT sweep searches
        at random unless a searcher is named.
        """
        names = {f.name for f in fields(cls)}
        if unknown := set(sweep.defaults) - names:
            raise SweepConfigError(f"Sweep {sweep.name!r}: unknown defaults {sorted(unknown)}; valid: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        for key, value in sweep.defaults.items():
            allowed = typing.get_args(hints[key]) or (hints[key],)
            if not any(_is_a(value, kind) for kind in allowed):
                expected = " or ".join("None" if kind is type(None) else kind.__name__ for kind in allowed)
                raise SweepConfigError(f"Sweep {sweep.name!r}: defaults[{key!r}] is {value!r}; expected {expected}")
        values = {**sweep.defaults, **given}
        if values.get("scheduler") == "pbt" and "searcher" not in given:
            values["searcher"] = "random"
        return cls(**values)

    def validate(self) -> None:
        for name in ("cpus_per_trial", "gpus_per_trial", "trial_timeout_s"):
            if not math.isfinite(getattr(self, name)):
                raise SweepConfigError(f"{setting(name)} {getattr(self, name)}: must be a finite number")
        if self.searcher not in SEARCHERS:
            raise SweepConfigError(f"{setting('searcher')} {self.searcher}: choose one of {', '.join(SEARCHERS)}")
        if self.scheduler not in SCHEDULERS:
            raise SweepConfigError(f"{setting('scheduler')} {self.scheduler}: choose one of {', '.join(SCHEDULERS)}")
        if self.num_samples < 1:
            raise SweepConfigError(f"{setting('num_samples')} {self.num_samples}: must be at least 1")
        if self.cpus_per_trial < 0 or self.gpus_per_trial < 0:
            raise SweepConfigError(f"{setting('cpus_per_trial')} and {setting('gpus_per_trial')} must not be negative")
        if self.gpus_per_trial > 1 and not float(self.gpus_per_trial).is_integer():
            raise SweepConfigError(f"{setting('gpus_per_trial')} {self.gpus_per_trial}: above 1 it must be whole")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise SweepConfigError(
                f"{setting('max_concurrent_trials')} {self.max_concurrent_trials}: must be at least 1"
            )
        if self.trial_timeout_s <= 0:
            raise SweepConfigError(f"{setting('trial_timeout_s')} {self.trial_timeout_s}: must be positive")
        if self.max_failures < 0:
            raise SweepConfigError(f"{setting('max_failures')} {self.max_failures}: must not be negative")
        if self.scheduler == "pbt" and self.searcher == "optuna":
            raise SweepConfigError(
                f"{setting('scheduler')} pbt picks hyperparameters itself; use {setting('searcher')} random or grid"
            )
        if self.retry_errored and not self.resume:
            raise SweepConfigError(f"{setting('retry_errored')} only applies with {setting('resume')}")
        if self.resume and not self.name:
            raise SweepConfigError(
                f"{setting('resume')} needs {setting('name')}, the experiment folder under "
                f"{setting('storage_path')} to continue"
            )
        if self.name is not None and (
            not self.name
            or self.name in (".", "..")
            or "/" in self.name
            or "\0" in self.name
            or len(self.name.encode()) > MAX_NAME_BYTES
        ):
            raise SweepConfigError(
                f"{setting('name')} {self.name!r}: an experiment's name is one folder name of at most "
                f"{MAX_NAME_BYTES} bytes under {setting('storage_path')}"
            )


def _is_a(value: Any, kind: type) -> bool:
    """``isinstance``, but a bool is no number and a whole number is a float, as in a config file people write."""
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def grid_space(search_space: dict[str, Any]) -> dict[str, Any]:
    """The search space with every ``tune.choice`` turned into a grid axis; continuous domains are refused."""
    grid = {}
    for key, value in search_space.items():
        if isinstance(value, Categorical):
            grid[key] = tune.grid_search(list(value.categories))
        elif isinstance(value, Domain):
            raise SweepConfigError(
                f"{setting('searcher')} grid: {key} is a continuous {type(value).__name__}; "
                "use tune.choice or tune.grid_search for a grid"
            )
        else:
            grid[key] = value
    return grid


def build_search(sweep: Sweep, settings: TunerSettings) -> tuple[dict[str, Any], SearchAlgorithm | Searcher]:
    """The search space as the searcher needs it, and the searcher."""
    has_grid = any(isinstance(value, dict) and "grid_search" in value for value in sweep.search_space.values())
    # Tune applies max_concurrent_trials to Searchers only; the variant generator takes its own limit.
    variants = BasicVariantGenerator(random_state=settings.seed, max_concurrent=settings.max_concurrent_trials or 0)
    if settings.searcher == "grid":
        return grid_space(sweep.search_space), variants
    if settings.searcher == "random":
        return sweep.search_space, variants
    if has_grid:
        raise SweepConfigError(
            f"{setting('searcher')} optuna cannot search tune.grid_search axes; use {setting('searcher')} grid"
        )
    from ray.tune.search.optuna import OptunaSearch

    return sweep.search_space, OptunaSearch(metric=sweep.metric, mode=sweep.mode, seed=settings.seed)


class FairPopulationBasedTraining(PopulationBasedTraining):
    """Tune's PBT, but a tie for the next free slot goes to the trial that has waited longest.

    Tune picks the paused trial with the least training time, and on a tie the first in its list. An exploited
    trial takes its donor's training time, so it ties with the donor, which PBT paused to make way: when the
    exploited trial comes first, it runs, reaches the next check still behind the donor's score, is sent back to
    the donor's checkpoint, and wins the tie again, for good (seen with two trials on two nodes).
    """

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        waiting = [trial for trial in tune_controller.get_trials() if trial.status in (Trial.PENDING, Trial.PAUSED)]
        if not waiting:
            return None
        return min(
            waiting,
            key=lambda trial: (self._trial_state[trial].last_train_time, (trial.last_result or {}).get("timestamp", 0)),
        )


def build_scheduler(sweep: Sweep, settings: TunerSettings) -> TrialScheduler:
    if settings.scheduler == "fifo":
        return FIFOScheduler()
    if settings.scheduler == "pbt":
        if sweep.job.checkpoints is None:
            raise SweepConfigError(
                f"{setting('scheduler')} pbt: sweep {sweep.name!r} has no trainer checkpoints "
                "(TrainingJob.checkpoints), and PBT continues trials from each other's checkpoints"
            )
        mutations = {key: value for key, value in sweep.search_space.items() if isinstance(value, Domain)}
        return FairPopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=sweep.job.checkpoints.interval,
            hyperparam_mutations=mutations,
            quantile_fraction=0.25,
        )
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=sweep.max_iterations,
        grace_period=sweep.grace_period,
        reduction_factor=2,
    )


def connect(address: str) -> None:
    """Connect to (or, with ``local``, start) a Ray cluster that can import this folder's code."""
    if ray.is_initialized():
        return
    # A job sent with `ray job submit --working-dir .` already ships this folder to every worker.
    in_job_with_code = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    runtime_env = None if in_job_with_code else code_upload()
    options = {"runtime_env": runtime_env, "log_to_driver": False, "configure_logging": True}
    if address == "local":
        ray.init(**options, logging_level="WARNING")
        return
    connect_driver(address, check=not in_job_with_code, **options, logging_level="WARNING")


def refuse_trials_no_node_holds(settings: TunerSettings) -> None:
    """A trial that asks for more than any node has would wait forever (Tune only warns): refuse it before the
    sweep writes anything, unless the cluster is expected to add bigger nodes."""
    largest = largest_node()
    for flag, resource, wanted in (
        (setting("cpus_per_trial"), "CPU", settings.cpus_per_trial),
        (setting("gpus_per_trial"), "GPU", settings.gpus_per_trial),
    ):
        if wanted > largest.get(resource, 0.0):
            raise SweepConfigError(
                f"{flag} {wanted:g}: no node of the cluster has that many {resource}s (the largest has "
                f"{largest.get(resource, 0.0):g}); give {setting('wait_for_autoscaling')} if the cluster adds "
                "bigger nodes"
            )


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Tune's default spells out every hyperparameter)."""
    return f"trial_{trial.trial_id}"


def tracking_callbacks(settings: TunerSettings, name: str) -> list[tune.Callback]:
    if not settings.mlflow_uri:
        return []
    try:
        from ray.air.integrations.mlflow import MLflowLoggerCallback
    except ImportError as error:
        raise SweepConfigError(f"{setting('mlflow_uri')} needs MLflow installed ({error})") from None
    return [MLflowLoggerCallback(tracking_uri=settings.mlflow_uri, experiment_name=name, save_artifact=False)]


class ProgressLog(tune.Callback):
    """One line when a trial starts or ends, with the sweep's count so far and the best value.

    A trial's iterations are counted as the report counts them: each trainer iteration once
    (the closing result repeats the last one, and a resumed trainer re-logs its checkpoint's).
    """

    def __init__(self, sweep: Sweep, num_samples: int) -> None:
        self.sweep = sweep
        self.num_samples = num_samples
        self.ended = 0
        self.best: float | None = None
        self.iterations: dict[str, set[int]] = {}
        self.started_at = time.monotonic()

    def _best_of(self, value: float | None) -> None:
        if value is None:
            return
        if self.best is None or (value > self.best if self.sweep.mode == "max" else value < self.best):
            self.best = value

    def _line(self, trials: list, trial: Any, what: str) -> None:
        best = f"{self.best:.4g}" if self.best is not None else "-"
        elapsed = time.monotonic() - self.started_at
        total = max(self.num_samples, len(trials))  # a grid holds more trials than num_samples
        logger.info(
            "[sweep %6.1fs] %d/%d trials ended, best %s %s | %s %s",
            elapsed,
            self.ended,
            total,
            self.sweep.metric,
            best,
            trial.trial_id,
            what,
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, "started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._best_of(result.get(self.sweep.metric))
        self.iterations.setdefault(trial.trial_id, set()).add(result.get("iteration", result.get("training_iteration")))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        self._line(trials, trial, f"ended after {len(self.iterations.get(trial.trial_id, ()))} iterations")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        self._line(trials, trial, "ERROR (see the table at the end)")


def run_sweep(sweep: Sweep, settings: TunerSettings, callbacks: list[tune.Callback] | None = None) -> SweepReport:
    """Run the sweep, or continue it where an earlier run of the same command (or ``settings.resume``) left it,
    and write its report.

    ``callbacks`` join the progress log (benchmarks use them to time results).
    """
    settings.validate()
    # A searcher or scheduler that cannot be built is refused before anything else.
    search, scheduler = build_search(sweep, settings), build_scheduler(sweep, settings)
    storage = open_storage(settings.storage_path)
    check_writable(storage)
    identity = sweep_identity(sweep, settings)
    # The same command names the same experiment: run again (after its head was lost, say), it continues there.
    name = settings.name or f"{sweep.name}_{identity[:12]}"
    experiment = storage.experiment(name)
    connect(settings.ray_address)
    if not settings.wait_for_autoscaling:
        refuse_trials_no_node_holds(settings)
    if settings.resume and not tune.Tuner.can_restore(experiment, storage_filesystem=storage.filesystem):
        raise SweepConfigError(f"{setting('resume')}: no sweep to continue at {storage.shown(name)}")
    continuing = settings.resume or claim(storage, name, identity, {"sweep": sweep.name})
    with driving(storage, name):
        # Asked once this driver holds the sweep: another may have saved it (or finished it) meanwhile.
        restorable = continuing and tune.Tuner.can_restore(experiment, storage_filesystem=storage.filesystem)
        tuner = _tuner(sweep, settings, storage, name, restorable, callbacks, search=search, scheduler=scheduler)
        results = tuner.fit()
    if not storage.in_bucket:
        return write_report(results, sweep, Path(experiment))
    # From the bucket's data: here, where the driver runs, and beside the sweep in the bucket, which outlives it.
    report = write_report(results, sweep, Path("results") / name)
    for written in (report.csv_path, report.plot_path):
        pyarrow.fs.copy_files(str(written), f"{experiment}/{written.name}", destination_filesystem=storage.filesystem)
    return report


# What a sweep is, beyond its config: a command differing in these is another sweep. (How it runs, such as the
# cluster's address, trial timeouts or retries, may change between runs of one sweep.)
IDENTITY_SETTINGS = ("num_samples", "searcher", "scheduler", "seed", "cpus_per_trial", "gpus_per_trial")


def sweep_identity(sweep: Sweep, settings: TunerSettings) -> str:
    """A digest of what the sweep asks for (its config and the flags in ``IDENTITY_SETTINGS``) and of the cluster
    it was sent to by name: never of when it started, so that the same command run again finds its experiment."""
    described = {
        "sweep": _described(sweep),
        "settings": {key: getattr(settings, key) for key in IDENTITY_SETTINGS},
        "cluster": os.environ.get(CLUSTER_VARIABLE, ""),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=repr).encode()).hexdigest()


def _described(value: Any) -> Any:
    """``value`` as plain data that is the same in every process: Tune's domains and samplers by their fields,
    functions by name (their ``repr`` holds a memory address)."""
    if isinstance(value, dict):
        return {str(key): _described(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_described(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if dataclasses.is_dataclass(value):
        fields_of = {field.name: _described(getattr(value, field.name)) for field in dataclasses.fields(value)}
        return {"@": type(value).__qualname__, **fields_of}
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    if hasattr(value, "__dict__"):
        return {"@": type(value).__qualname__, **{key: _described(item) for key, item in vars(value).items()}}
    return repr(value)


def _tuner(
    sweep: Sweep,
    settings: TunerSettings,
    storage: Storage,
    name: str,
    restore: bool,
    callbacks: list[tune.Callback] | None,
    *,
    search: tuple[dict[str, Any], SearchAlgorithm | Searcher],
    scheduler: TrialScheduler,
) -> tune.Tuner:
    """Ray Tune's tuner for the sweep, with ``build_search``'s space and searcher and ``build_scheduler``'s
    scheduler: restored from the experiment's saved state, or new."""
    param_space, search_alg = search
    trainable = tune.with_resources(
        tune.with_parameters(
            CommandTrainable,
            job=sweep.job,
            metric=sweep.metric,
            trial_timeout_s=settings.trial_timeout_s,
            max_iterations=sweep.max_iterations,
            warm_start=settings.warm_start,
        ),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    if restore:
        logger.info(
            "Continuing %s: finished trials are kept, unfinished ones go on from their checkpoints", storage.shown(name)
        )
        return tune.Tuner.restore(
            storage.experiment(name),
            trainable,
            storage_filesystem=storage.filesystem,
            param_space=param_space,
            resume_unfinished=True,
            resume_errored=settings.retry_errored,
            restart_errored=False,
        )
    checkpoints = sweep.job.checkpoints
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            num_samples=settings.num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=settings.max_concurrent_trials if settings.searcher == "optuna" else None,
            trial_dirname_creator=trial_dirname,
            # Starting a Ray worker per trial costs seconds; the trainable restarts only its trainer.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            callbacks=[
                ProgressLog(sweep, settings.num_samples),
                *tracking_callbacks(settings, name),
                *(callbacks or []),
            ],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=checkpoints.interval if checkpoints else 0,
                # PBT restores trials from others' checkpoints, which must not be deleted too early.
                num_to_keep=(4 if settings.scheduler == "pbt" else 2) if checkpoints else None,
                checkpoint_at_end=False,
            ),
            # The trainer's output and TensorBoard files live in the trial's working directory,
            # which Ray deletes with its session: copy them to the storage path.
            sync_config=tune.SyncConfig(sync_artifacts=True),
        ),
    )
