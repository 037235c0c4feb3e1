"""What a finished sweep leaves for a person: a table, the best config, results.csv, learning curves."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ray_workflow.files import atomic_write
from ray_workflow.sweeps.sweep import Sweep
from ray_workflow.sweeps.trainable import TRAINING_FINISHED

FINISHED, STOPPED, ERROR = "FINISHED", "STOPPED", "ERROR"


@dataclass
class TrialSummary:
    trial_id: str
    status: str
    hyperparameters: dict[str, Any]
    best_metric: float | None
    iterations: int
    curve: list[tuple[int, float]]
    error: str | None


@dataclass
class SweepReport:
    trials: list[TrialSummary]
    best: TrialSummary | None
    directory: Path
    table: str

    @property
    def csv_path(self) -> Path:
        return self.directory / "results.csv"

    @property
    def plot_path(self) -> Path:
        return self.directory / "learning_curves.png"


def summarize(result: Any, sweep: Sweep) -> TrialSummary:
    """One trial's row from a Ray Tune ``Result``."""
    frame = result.metrics_dataframe
    curve: list[tuple[int, float]] = []
    if frame is not None and sweep.metric in frame:
        # The trainable's closing result repeats the trainer's last iteration; count each one once.
        trainer_iterations = frame["iteration"] if "iteration" in frame else frame["training_iteration"]
        seen = set()
        for trainer_iteration, value in zip(trainer_iterations, frame[sweep.metric], strict=True):
            if trainer_iteration in seen or math.isnan(value):
                continue
            seen.add(trainer_iteration)
            curve.append((len(curve) + 1, float(value)))
    values = [value for _, value in curve]
    best = (max(values) if sweep.mode == "max" else min(values)) if values else None
    metrics = result.metrics or {}
    if result.error is not None:
        status = ERROR
    elif metrics.get(TRAINING_FINISHED) or metrics.get("training_iteration", 0) >= sweep.max_iterations:
        status = FINISHED
    else:
        status = STOPPED
    trial_id = metrics.get("trial_id") or Path(result.path).name
    return TrialSummary(
        trial_id=str(trial_id),
        status=status,
        hyperparameters={key: result.config.get(key) for key in sweep.tunable_keys()},
        best_metric=best,
        iterations=len(curve),
        curve=curve,
        error=_error_line(result.error),
    )


def _error_line(error: BaseException | None) -> str | None:
    """The first line of the trainable's own exception, without Ray's task wrapper."""
    if error is None:
        return None
    cause = getattr(error, "cause", None) or error
    return str(cause).strip().splitlines()[0]


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(trials: list[TrialSummary], sweep: Sweep) -> str:
    keys = sweep.tunable_keys()
    headers = ["trial", *keys, f"best {sweep.metric}", "iterations", "status"]
    rows = [
        [
            t.trial_id,
            *(_format(t.hyperparameters.get(k)) for k in keys),
            _format(t.best_metric) if t.best_metric is not None else "-",
            t.iterations,
            t.status if t.error is None else f"{t.status}: {t.error[:60]}",
        ]
        for t in trials
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


def plot_learning_curves(trials: list[TrialSummary], sweep: Sweep, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for trial in trials:
        if not trial.curve:
            continue
        iterations, values = zip(*trial.curve, strict=True)
        style = {FINISHED: "-", STOPPED: "--", ERROR: ":"}[trial.status]
        axes.plot(iterations, values, style, label=f"{trial.trial_id} ({trial.status.lower()})")
    axes.set_xlabel("training iteration")
    axes.set_ylabel(sweep.metric)
    axes.set_title(f"{sweep.name}: {len(trials)} trials (dashed: stopped early, dotted: error)")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png"), binary=True)
    plt.close(figure)


def write_report(results: Any, sweep: Sweep, directory: Path) -> SweepReport:
    """Summarize a Ray Tune ``ResultGrid`` and write results.csv and learning_curves.png into ``directory``."""
    trials = sorted((summarize(result, sweep) for result in results), key=lambda t: t.trial_id)
    scored = [t for t in trials if t.best_metric is not None and t.status != ERROR]
    sign = 1 if sweep.mode == "max" else -1
    best = max(scored, key=lambda t: sign * t.best_metric) if scored else None
    report = SweepReport(trials=trials, best=best, directory=directory, table=trials_table(trials, sweep))
    keys = sweep.tunable_keys()

    def write_csv(handle: Any) -> None:
        writer = csv.writer(handle)
        writer.writerow(["trial_id", "status", *keys, f"best_{sweep.metric}", "iterations", "error"])
        for t in trials:
            writer.writerow(
                [
                    t.trial_id,
                    t.status,
                    *(t.hyperparameters.get(k) for k in keys),
                    t.best_metric,
                    t.iterations,
                    t.error or "",
                ]
            )

    atomic_write(report.csv_path, write_csv)
    plot_learning_curves(trials, sweep, report.plot_path)
    return report
