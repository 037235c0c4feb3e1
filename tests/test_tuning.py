"""Sweeps on a real local Ray cluster with real Ray Tune and real training processes."""

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

from conftest import PROJECT_ROOT, TEST_MARK, this_tests_processes, wait_until_none, with_test_mark
from ray import tune
from ray.job_submission import JobStatus, JobSubmissionClient

from ray_workflow import UPLOAD_EXCLUDES, auth
from ray_workflow.sweeps.report import ERROR, FINISHED, STOPPED
from ray_workflow.sweeps.sweep import Sweep, load_sweep
from ray_workflow.sweeps.training_command import WARM_START_LINE, TrainerCheckpoints, TrainingJob
from ray_workflow.sweeps.tuning import TunerSettings, build_scheduler, run_sweep

SCRIPTED = TrainingJob(command=("{python}", "{project_root}/tests/scripted_trainer.py", "--spawn_child"))


def scripted_sweep(search_space, iterations=10, seconds_per_iteration=0.05, **changes):
    job = dataclasses.replace(
        with_test_mark(SCRIPTED),
        command=(
            *SCRIPTED.command,
            "--iterations",
            str(iterations),
            "--seconds_per_iteration",
            str(seconds_per_iteration),
        ),
    )
    fields = dict(
        name="scripted",
        job=job,
        search_space=search_space,
        metric="score",
        mode="max",
        max_iterations=iterations,
        grace_period=min(2, iterations),
    )
    fields.update(changes)
    return Sweep(**fields)


def settings(tmp_path, **changes):
    values = dict(
        num_samples=1,
        searcher="grid",
        scheduler="fifo",
        storage_path=str(tmp_path),
        name="exp",
        ray_address="auto",
        trial_timeout_s=60,
    )
    values.update(changes)
    return TunerSettings(**values)


def by_value(report, key):
    return {trial.hyperparameters[key]: trial for trial in report.trials}


def test_short_cartpole_sweep_finishes_with_sane_results_and_leaves_its_report(ray_driver, tmp_path):
    cartpole = load_sweep(PROJECT_ROOT / "hyper_parameter_tuning/config/cartpole_sweep.py")
    short = dataclasses.replace(
        cartpole,
        job=dataclasses.replace(
            with_test_mark(cartpole.job), command=(*cartpole.job.command, "--max_iterations", "12")
        ),
        max_iterations=12,
        grace_period=4,
    )
    report = run_sweep(short, settings(tmp_path, num_samples=4, searcher="optuna", scheduler="asha", seed=1))
    assert len(report.trials) == 4
    assert all(trial.status in (FINISHED, STOPPED) for trial in report.trials), report.table
    assert any(trial.status == FINISHED and trial.iterations >= 12 for trial in report.trials)
    for trial in report.trials:
        assert 9 < trial.best_metric <= 500, "CartPole returns lie between 9 and 500"
        assert [i for i, _ in trial.curve] == list(range(1, len(trial.curve) + 1)), "one result per iteration"
        assert 5e-4 <= trial.hyperparameters["agent.learning_rate"] <= 4e-3
    assert report.best.best_metric == max(trial.best_metric for trial in report.trials)
    with open(report.csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["trial_id"] for row in rows) == sorted(trial.trial_id for trial in report.trials)
    assert report.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert wait_until_none(this_tests_processes, 30) == []


def test_crashing_trial_is_an_error_with_exit_code_and_output_tail_while_others_finish(ray_driver, tmp_path):
    sweep = scripted_sweep({"agent.crash_at": tune.grid_search([-1, 3])})
    report = run_sweep(sweep, settings(tmp_path))
    trials = by_value(report, "agent.crash_at")
    assert trials[-1].status == FINISHED and trials[-1].iterations >= 10
    crashed = trials[3]
    assert crashed.status == ERROR
    assert "exited with code 3" in crashed.error
    error_file = next(tmp_path.rglob("error.txt"))
    assert "CUDA error: an illegal memory access" in error_file.read_text()
    trainer_log = tmp_path / "exp" / f"trial_{crashed.trial_id}" / "training_output.log"
    assert "CUDA error: an illegal memory access" in trainer_log.read_text(), "the trainer's output reaches storage"
    assert report.best is trials[-1]
    assert wait_until_none(this_tests_processes, 30) == []


def test_trainer_rejecting_its_overrides_is_an_error_not_a_finished_trial(ray_driver, tmp_path):
    cartpole = load_sweep(PROJECT_ROOT / "hyper_parameter_tuning/config/cartpole_sweep.py")
    broken = dataclasses.replace(
        cartpole,
        job=with_test_mark(cartpole.job),
        search_space={"agent.n_steps": tune.grid_search([0])},
        grace_period=1,
    )
    report = run_sweep(broken, settings(tmp_path))
    (trial,) = report.trials
    assert trial.status == ERROR and "exited with code 2" in trial.error
    assert report.best is None


def test_silent_trial_is_killed_with_its_children_after_the_timeout(ray_driver, tmp_path):
    sweep = scripted_sweep({"agent.hang_at": tune.grid_search([2])})
    started = time.monotonic()
    report = run_sweep(sweep, settings(tmp_path, trial_timeout_s=3))
    (trial,) = report.trials
    assert trial.status == ERROR and "no new 'score' for 3 s" in trial.error
    assert trial.iterations == 2
    assert time.monotonic() - started < 60
    assert wait_until_none(this_tests_processes, 30) == []


def test_resume_keeps_errored_trials_and_reruns_them_only_with_retry_errored(ray_driver, tmp_path):
    flaky = tmp_path / "crash-while-this-exists"
    flaky.write_text("")
    sweep = scripted_sweep({"agent.crash_while_exists": tune.grid_search(["", str(flaky)])})
    first = by_value(run_sweep(sweep, settings(tmp_path, max_failures=0)), "agent.crash_while_exists")
    assert first[""].status == FINISHED and first[str(flaky)].status == ERROR

    flaky.unlink()  # the cause is gone: only a retry shows it
    kept = by_value(run_sweep(sweep, settings(tmp_path, max_failures=0, resume=True)), "agent.crash_while_exists")
    assert kept[str(flaky)].status == ERROR and kept[str(flaky)].iterations == 2, "errored trials are not rerun"
    retried = run_sweep(sweep, settings(tmp_path, max_failures=0, resume=True, retry_errored=True))
    retried = by_value(retried, "agent.crash_while_exists")
    assert retried[str(flaky)].status == FINISHED and retried[str(flaky)].iterations == 10
    assert retried[""].status == FINISHED and retried[""].trial_id == first[""].trial_id
    assert wait_until_none(this_tests_processes, 30) == []


def test_pbt_always_continues_the_weaker_trial_from_the_stronger_ones_checkpoint(ray_driver, tmp_path):
    """Two trials side by side whose scores are their qualities at every iteration: at PBT's checks the weaker one is
    always in the bottom quantile and the stronger one in the top, so the exploit cannot go the other way."""
    job = TrainingJob(
        command=("{python}", "{project_root}/tests/scripted_trainer.py", "--flat", "--iterations", "20")
        + ("--seconds_per_iteration", "0.5"),
        checkpoints=TrainerCheckpoints("checkpoint_*.txt", 2, ("--checkpoint_interval", "{interval}")),
    )
    sweep = Sweep(
        name="pbt",
        job=with_test_mark(job),
        search_space={"agent.quality": tune.uniform(0.1, 1.0)},
        metric="score",
        mode="max",
        max_iterations=20,
        grace_period=1,
    )
    report = run_sweep(sweep, settings(tmp_path, num_samples=2, searcher="random", scheduler="pbt", seed=1))
    assert [trial.status for trial in report.trials] == [FINISHED, FINISHED], report.table
    results = {}
    for trial_dir in (tmp_path / "exp").glob("trial_*"):
        results[trial_dir] = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    weaker, _ = sorted(results, key=lambda trial_dir: results[trial_dir][0]["score"])
    resumes = re.findall(
        r"Resuming from checkpoint \S+ after (\d+) iterations", (weaker / "training_output.log").read_text()
    )
    assert resumes, "the weaker trial never continued from the stronger one's checkpoint"
    resumed_at = int(resumes[-1])
    assert resumed_at % 2 == 0 and 0 < resumed_at < 20, "a checkpoint PBT took at one of its checks"
    # A score is the quality in force: the weaker trial's changed once it took the stronger one's checkpoint and
    # config (perturbed), and it trained on from there to the last iteration.
    scores = [r["score"] for r in results[weaker]]
    assert scores[-1] != scores[0] and results[weaker][-1]["iteration"] == 19, results[weaker]


def test_pbt_gives_the_next_slot_to_the_paused_donor_not_to_the_trial_it_sent_back(tmp_path):
    """The livelock a PBT sweep on two nodes once fell into: the exploited trial takes its paused donor's training
    time, and Tune's own choice gives the tie to whichever trial is listed first, every time. Ours gives it to the
    trial that has waited longest. (Tune's real scheduler and trials; the controller only lists them.)"""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers.pbt import _PBTTrialState

    checkpoints = TrainerCheckpoints("checkpoint_*.txt", 4, ("--checkpoint_interval", "{interval}"))
    job = dataclasses.replace(SCRIPTED, checkpoints=checkpoints)
    sweep = scripted_sweep({"agent.quality": tune.uniform(0.1, 1.0)}, job=job)
    scheduler = build_scheduler(sweep, settings(tmp_path, scheduler="pbt"))
    sent_back, donor = Trial("scripted", stub=True), Trial("scripted", stub=True)
    for trial, reported_at in ((sent_back, 2000.0), (donor, 1000.0)):
        trial.set_status(Trial.PAUSED)
        trial.run_metadata.last_result = {"timestamp": reported_at, "training_iteration": 12}
        scheduler._trial_state[trial] = _PBTTrialState(trial)
        scheduler._trial_state[trial].last_train_time = 12  # the exploit copied the donor's
    controller = type("Controller", (), {"get_trials": lambda self: [sent_back, donor]})()
    assert scheduler.choose_trial_to_run(controller) is donor
    donor.set_status(Trial.RUNNING)
    assert scheduler.choose_trial_to_run(controller) is sent_back


def test_trials_stopped_early_by_asha_leave_no_process_behind(ray_driver, tmp_path):
    sweep = scripted_sweep(
        {"agent.quality": tune.grid_search([2.0, 1.0, 0.1, 0.2])}, iterations=40, seconds_per_iteration=0.1
    )
    report = run_sweep(sweep, settings(tmp_path, scheduler="asha", max_concurrent_trials=2))
    statuses = {trial.hyperparameters["agent.quality"]: trial.status for trial in report.trials}
    assert STOPPED in statuses.values(), report.table
    assert statuses[2.0] == FINISHED
    assert wait_until_none(this_tests_processes, 30) == []


def test_cartpole_sweep_runs_as_a_ray_job_with_the_working_dir_uploaded(ray_cluster, tmp_path):
    client = JobSubmissionClient(ray_cluster.dashboard_url, headers=auth.http_headers(ray_cluster.dashboard_url))
    job_id = client.submit_job(
        entrypoint=f"python hyper_parameter_tuning/config/cartpole_sweep.py --num_samples 2 --searcher random "
        f"--scheduler fifo --storage_path {tmp_path} --name job_sweep --cpus_per_trial 0.5",
        runtime_env={
            "working_dir": str(PROJECT_ROOT),
            "excludes": UPLOAD_EXCLUDES,
            "env_vars": {"CARTPOLE_MAX_ITERATIONS": "5", TEST_MARK: os.environ[TEST_MARK]},
        },
    )
    deadline = time.monotonic() + 300
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED}:
        assert time.monotonic() < deadline
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "Best trial" in logs
    with open(tmp_path / "job_sweep" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {row["status"] for row in rows} == {FINISHED}
    assert {row["iterations"] for row in rows} == {"5"}
    assert wait_until_none(this_tests_processes, 30) == []


def test_sweep_script_help_lists_the_tuner_flags():
    import subprocess

    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "hyper_parameter_tuning/config/cartpole_sweep.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in ("--num_samples", "--storage_path", "--ray_address", "--gpus_per_trial", "--trial_timeout_s"):
        assert flag in result.stdout


def isaac_lab_style_sweep(*extra_args, run_name_args=("--run_timestamp", "{run_name}"), cwd=None, qualities):
    job = TrainingJob(
        command=("{python}", "{project_root}/tests/scripted_trainer.py", "--iterations", "6", *extra_args),
        log_dir_flag=None,
        run_name_args=run_name_args,
        cwd=cwd,
    )
    job = with_test_mark(job)
    return Sweep(
        name="isaac_lab_style",
        job=job,
        search_space={"agent.quality": tune.grid_search(qualities)},
        metric="score",
        max_iterations=6,
        grace_period=6,
    )


def assert_every_result_is_the_trials_own(report, experiment):
    """The scripted trainer writes score = quality x (iteration + 1): any other value came from another trial."""
    for trial in report.trials:
        quality = trial.hyperparameters["agent.quality"]
        lines = (experiment / f"trial_{trial.trial_id}" / "result.json").read_text().splitlines()
        results = [json.loads(line) for line in lines]
        assert results[-1]["training_finished"] and not any(r.get("training_finished") for r in results[:-1])
        assert [r["iteration"] for r in results] == list(range(6)), trial.trial_id
        assert [r["score"] for r in results] == [quality * (i + 1) for i in range(6)], trial.trial_id


def test_trials_sharing_a_log_root_with_a_late_name_line_report_only_their_own_metrics(ray_driver, tmp_path):
    root = tmp_path / "isaaclab" / "logs" / "rl_games" / "cartpole"
    sweep = isaac_lab_style_sweep("--log_root", str(root), "--name_line_delay", "0.5", qualities=[1.0, 2.0, 3.0, 4.0])
    report = run_sweep(sweep, settings(tmp_path / "storage", max_concurrent_trials=2))
    assert {trial.status for trial in report.trials} == {FINISHED}
    assert_every_result_is_the_trials_own(report, tmp_path / "storage" / "exp")
    assert len(list(root.iterdir())) == 4, "every trial gets its own run folder, even when two start in one second"


def test_late_name_line_without_a_run_name_of_ours_is_awaited_not_guessed(ray_driver, tmp_path):
    root = tmp_path / "logs" / "rsl_rl" / "cartpole"
    sweep = isaac_lab_style_sweep(
        "--log_root", str(root), "--name_line_delay", "1.0", run_name_args=(), qualities=[1.0, 2.0]
    )
    report = run_sweep(sweep, settings(tmp_path / "storage", max_concurrent_trials=1))
    assert {trial.status for trial in report.trials} == {FINISHED}
    assert_every_result_is_the_trials_own(report, tmp_path / "storage" / "exp")


def test_log_root_relative_to_the_trainers_cwd_is_found(ray_driver, tmp_path):
    isaaclab = tmp_path / "isaaclab"
    isaaclab.mkdir()
    sweep = isaac_lab_style_sweep(
        "--log_root", "logs/rl_games/cartpole", "--run_name", "suffix", cwd=str(isaaclab), qualities=[2.0]
    )
    report = run_sweep(sweep, settings(tmp_path / "storage", trial_timeout_s=30))
    (trial,) = report.trials
    assert trial.status == FINISHED and trial.iterations == 6 and trial.best_metric == 12.0
    assert_every_result_is_the_trials_own(report, tmp_path / "storage" / "exp")


def test_numeric_tuner_flags_refuse_nan_infinity_and_nonsense_in_one_line():
    config = PROJECT_ROOT / "hyper_parameter_tuning" / "config" / "cartpole_sweep.py"
    for flag, value in (("--cpus_per_trial", "nan"), ("--trial_timeout_s", "nan"), ("--trial_timeout_s", "0"),
                        ("--gpus_per_trial", "-1"), ("--max_failures", "inf"), ("--num_samples", "2.5")):  # fmt: skip
        result = subprocess.run([sys.executable, str(config), flag, value], capture_output=True, text=True)
        assert result.returncode == 2 and f"argument {flag}" in result.stderr and "Traceback" not in result.stderr


def test_sweeps_started_at_once_never_share_a_folder_and_the_same_command_run_again_continues_its_own(
    ray_cluster, tmp_path
):
    config = PROJECT_ROOT / "hyper_parameter_tuning" / "config" / "cartpole_sweep.py"
    flags = ["--num_samples", "1", "--searcher", "random", "--scheduler", "fifo", "--cpus_per_trial", "1"]
    env = {**os.environ, "CARTPOLE_MAX_ITERATIONS": "2"}

    def together(*extra: list[str]) -> list[subprocess.CompletedProcess]:
        """The sweep with each of ``extra``'s flags, all started at once."""
        drivers = [
            subprocess.Popen(
                [sys.executable, str(config), "--ray_address", ray_cluster.gcs_address]
                + ["--storage_path", str(tmp_path), *flags, *more],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for more in extra
        ]
        finished = []
        for driver in drivers:
            out, err = driver.communicate(timeout=300)
            finished.append(subprocess.CompletedProcess(driver.args, driver.returncode, out, err))
        return finished

    # The same command twice at once is one sweep, run by one driver at a time: the second is refused while the
    # first runs, or (if the first has ended by then) continues the finished sweep and runs nothing again.
    first, second = together([], [])
    for result in (first, second):
        assert result.returncode == 0 or (
            result.returncode == 2 and "is being run now by another driver" in result.stderr.strip().splitlines()[-1]
        ), result.stderr[-2000:]
    assert 0 in (first.returncode, second.returncode)
    (folder,) = [path.parent for path in tmp_path.glob("*/results.csv")]
    assert len((folder / "results.csv").read_text().splitlines()) == 2
    (trial,) = folder.glob("trial_*")
    kept = (trial / "result.json").read_bytes()
    # Run again once it has ended: it continues that sweep (nothing runs again); another command is another sweep.
    (again,) = together([])
    assert again.returncode == 0 and f"Continuing {folder}" in again.stdout, again.stdout[-2000:]
    assert list(folder.glob("trial_*")) == [trial] and (trial / "result.json").read_bytes() == kept
    (other,) = together(["--seed", "7"])
    assert other.returncode == 0, other.stderr[-2000:]
    assert len(list(tmp_path.glob("*/results.csv"))) == 2

    # One name for two different sweeps: exactly one runs, the other is refused before it writes anything.
    results = together(["--name", "shared", "--seed", "1"], ["--name", "shared", "--seed", "2"])
    assert sorted(result.returncode for result in results) == [0, 2], [r.stderr[-2000:] for r in results]
    (refused,) = [result for result in results if result.returncode == 2]
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: --name shared: {tmp_path / 'shared'} already holds another sweep; choose another --name, "
        "or --resume to continue it"
    )
    assert "Traceback" not in refused.stderr
    assert len((tmp_path / "shared" / "results.csv").read_text().splitlines()) == 2


def test_a_trial_no_node_can_hold_is_refused_in_one_line_before_the_sweep_writes_anything(ray_cluster, tmp_path):
    """Tune would only warn and wait forever for 1e9 CPUs; the sweep names the flag and what the nodes have."""
    config = PROJECT_ROOT / "hyper_parameter_tuning" / "config" / "cartpole_sweep.py"
    for flag, value, resource in (("--cpus_per_trial", "1e9", "CPUs"), ("--gpus_per_trial", "1", "GPUs")):
        result = subprocess.run(
            [sys.executable, str(config), "--ray_address", ray_cluster.gcs_address, "--storage_path", str(tmp_path)]
            + [flag, value],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith(
                f"error: {flag} {float(value):g}: no node of the cluster has that many {resource} (the largest has "
            )
        ), result.stderr[-2000:]
        assert list(tmp_path.iterdir()) == []


def test_a_trial_actors_trials_start_from_its_warm_slot_and_report_what_fresh_trials_report(ray_driver, tmp_path):
    """One trial actor (trials need both CPUs, so they run one at a time): every trial forks from its slot, the
    first once the slot has imported; a sweep with --no_warm_start reports the same."""
    sweep = scripted_sweep({"agent.quality": tune.grid_search([1.0, 2.0])}, iterations=6, seconds_per_iteration=0.2)
    sweep = dataclasses.replace(sweep, job=dataclasses.replace(sweep.job, warm_imports=("torch.utils.tensorboard",)))
    reports = {
        warm: run_sweep(sweep, settings(tmp_path / str(warm), cpus_per_trial=2, warm_start=warm))
        for warm in (True, False)
    }
    started_warm = {}
    for warm, report in reports.items():
        assert [trial.status for trial in report.trials] == [FINISHED] * 2, report.table
        for trial in report.trials:
            log = (tmp_path / str(warm) / "exp" / f"trial_{trial.trial_id}" / "training_output.log").read_text()
            started_warm[warm, trial.hyperparameters["agent.quality"]] = log.startswith(WARM_START_LINE)
    assert all(started_warm[True, quality] for quality in (1.0, 2.0)), started_warm
    assert not any(started_warm[False, quality] for quality in (1.0, 2.0))
    curves = {warm: {t.hyperparameters["agent.quality"]: t.curve for t in r.trials} for warm, r in reports.items()}
    assert curves[True] == curves[False]
    assert wait_until_none(this_tests_processes, 30) == []
