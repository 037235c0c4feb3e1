"""Sweeps that survive: resume after the driver dies, retries after a node is lost, job stop, PBT, MLflow.

Real Ray clusters (a head, and worker nodes joined to it with their own ports and temp dirs),
real Ray Tune, real CartPole training with the trainer's own checkpoints.
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cartpole_configs import ONE_BY_ONE, results_by_trial, write_config
from conftest import PROJECT_ROOT, processes_mentioning, saved_sweep_state, sweep_command, wait_for, wait_until_gone
from daemons import lose_head
from ray.job_submission import JobStatus, JobSubmissionClient

from ray_workflow import UPLOAD_EXCLUDES, auth
from ray_workflow.hosts import local as lc


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("resilience_state")
    with lc.running(1, name="resilience-head", num_cpus=1, state_dir=state_dir) as (cluster,):
        yield cluster, state_dir


def test_killed_driver_resumes_keeping_finished_trials_and_continuing_unfinished_ones(head, tmp_path):
    cluster, _ = head
    config = write_config(tmp_path, iterations=40, interval=10, grid=[0.0, 0.001, 0.01])
    storage, name = tmp_path / "storage", "resumable"
    experiment = storage / name
    command = sweep_command(config, cluster.gcs_address, storage, name, *ONE_BY_ONE, "--max_concurrent_trials", "1")
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    finished, checkpointed = wait_for(lambda: saved_sweep_state(experiment), 180, "a finished and a checkpointed trial")
    finished_results = {trial: (trial / "result.json").read_bytes() for trial in finished}
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert wait_until_gone(name, timeout_s=30) == [], "the dead driver's trainers must end"

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = results_by_trial(experiment)
    assert len(rows) == 3 and {row["status"] for row in rows.values()} == {"FINISHED"}
    assert {row["iterations"] for row in rows.values()} == {"40"}
    for trial, result_bytes in finished_results.items():
        assert (trial / "result.json").read_bytes() == result_bytes, f"{trial.name} was run again"
    for trial in checkpointed:
        assert "Resuming from checkpoint" in (trial / "training_output.log").read_text()


def test_trial_on_a_lost_node_is_retried_from_its_checkpoint_and_the_sweep_completes(head, tmp_path):
    cluster, state_dir = head
    worker = lc.start("resilience-worker", num_cpus=1, state_dir=state_dir, head_address=cluster.gcs_address)
    config = write_config(tmp_path, iterations=80, interval=10, grid=[0.0, 0.001])
    storage, name = tmp_path / "storage", "node_loss"
    driver = subprocess.Popen(
        sweep_command(config, cluster.gcs_address, storage, name, *ONE_BY_ONE, "--max_failures", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def trainer_on_worker_with_checkpoint():
        on_worker = [p for p in processes_mentioning(worker.temp_dir) if "train_cartpole.py" in " ".join(p.cmdline())]
        if not on_worker:
            return None
        log_dir = Path(on_worker[0].cmdline()[on_worker[0].cmdline().index("--log_dir") + 1])
        trial = log_dir.parent.name
        return trial if list((storage / name / trial).glob("checkpoint_*")) else None

    trial = wait_for(trainer_on_worker_with_checkpoint, 180, "a trial on the worker node with a checkpoint")
    os.killpg(worker.pgid, signal.SIGKILL)
    lc.down(worker, state_dir)
    assert wait_until_gone(worker.temp_dir, timeout_s=30) == [], "no process of the dead node's trial may remain"
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output[-3000:]
    rows = results_by_trial(storage / name)
    assert {row["status"] for row in rows.values()} == {"FINISHED"}, rows
    assert {row["iterations"] for row in rows.values()} == {"80"}
    log = (storage / name / trial / "training_output.log").read_text()
    assert "Resuming from checkpoint" in log, log[-2000:]


def test_stopping_the_sweeps_ray_job_ends_every_trainer_on_every_node(head, tmp_path):
    cluster, state_dir = head
    worker = lc.start("resilience-worker2", num_cpus=1, state_dir=state_dir, head_address=cluster.gcs_address)
    try:
        name = f"job_stop_{int(time.time())}"
        client = JobSubmissionClient(cluster.dashboard_url, headers=auth.http_headers(cluster.dashboard_url))
        job_id = client.submit_job(
            entrypoint=f"python hyper_parameter_tuning/config/cartpole_sweep.py --num_samples 2 --scheduler fifo "
            f"--searcher random --storage_path {tmp_path} --name {name}",
            runtime_env={"working_dir": str(PROJECT_ROOT), "excludes": UPLOAD_EXCLUDES},
        )

        def running_trainers():
            found = [p for p in processes_mentioning(name) if any("train_cartpole.py" in a for a in p.cmdline())]
            return found if len(found) >= 2 else None

        trainers = wait_for(running_trainers, 180, "two running trainers")
        nodes = {cluster.temp_dir if cluster.temp_dir in " ".join(p.cmdline()) else worker.temp_dir for p in trainers}
        assert nodes == {cluster.temp_dir, worker.temp_dir}, "one trainer on each node"
        client.stop_job(job_id)
        wait_for(lambda: client.get_job_status(job_id) == JobStatus.STOPPED, 60, "the job to stop")
        assert wait_until_gone(name, timeout_s=30) == []
    finally:
        lc.down(worker, state_dir)


def test_population_based_training_with_the_real_trainer_continues_every_exploit_from_the_donor(ray_driver, tmp_path):
    """Whether PBT exploits here depends on how CartPole trains; that it always exploits is shown with the scripted
    trainer (test_tuning). What must hold either way: every trial completes, and every exploit continues the
    embedded trainer from the donor's checkpoint, env steps and all."""
    import dataclasses

    from ray import tune

    from ray_workflow.sweeps.sweep import load_sweep
    from ray_workflow.sweeps.training_command import TrainerCheckpoints
    from ray_workflow.sweeps.tuning import TunerSettings, run_sweep

    cartpole = load_sweep(PROJECT_ROOT / "hyper_parameter_tuning/config/cartpole_sweep.py")
    sweep = dataclasses.replace(
        cartpole,
        job=dataclasses.replace(
            cartpole.job,
            command=(*cartpole.job.command, "--max_iterations", "24"),
            checkpoints=TrainerCheckpoints("checkpoint_*.zip", 4, ("--checkpoint_interval", "{interval}")),
        ),
        search_space={"agent.learning_rate": tune.loguniform(1e-4, 5e-3)},
        max_iterations=24,
        grace_period=1,
    )
    report = run_sweep(
        sweep,
        TunerSettings(
            num_samples=4,
            searcher="random",
            scheduler="pbt",
            seed=3,
            storage_path=str(tmp_path),
            name="pbt",
            ray_address="auto",
            max_failures=0,
        ),
    )
    assert len(report.trials) == 4 and all(t.status == "FINISHED" for t in report.trials), report.table
    experiment = tmp_path / "pbt"
    progress = {}
    for trial_dir in experiment.glob("trial_*"):
        with open(trial_dir / "progress.csv") as handle:
            progress[trial_dir.name] = list(csv.DictReader(handle))
    exploits = []
    for trial_dir in experiment.glob("trial_*"):
        for line in (trial_dir / "training_output.log").read_text().splitlines():
            if "Resuming from checkpoint" in line:
                iterations = int(line.split(" after ")[1].split()[0])
                steps = int(line.split("(")[1].split()[0])
                if iterations < 24:  # an exploit at the last iteration leaves nothing to continue
                    exploits.append((trial_dir.name, iterations, steps))
    for target, iterations, steps in exploits:
        donors = [
            name
            for name, rows in progress.items()
            if name != target
            and any(
                int(row["iteration"]) == iterations - 1 and int(float(row["Train/env_steps"])) == steps for row in rows
            )
        ]
        assert donors, f"{target} resumed at {steps} env steps, which no other trial had after {iterations} iterations"
        assert any(
            int(row["iteration"]) == iterations and int(float(row["Train/env_steps"])) == steps + 256
            for row in progress[target]
        ), f"{target}'s next iteration does not continue from the donor"


def test_mlflow_gets_every_trials_parameters_and_metrics(ray_driver, tmp_path):
    import dataclasses

    import mlflow

    from ray_workflow.sweeps.sweep import load_sweep
    from ray_workflow.sweeps.tuning import TunerSettings, run_sweep

    cartpole = load_sweep(PROJECT_ROOT / "hyper_parameter_tuning/config/cartpole_sweep.py")
    short = dataclasses.replace(
        cartpole,
        job=dataclasses.replace(cartpole.job, command=(*cartpole.job.command, "--max_iterations", "5")),
        max_iterations=5,
        grace_period=1,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = run_sweep(
        short,
        TunerSettings(
            num_samples=2,
            searcher="random",
            scheduler="fifo",
            seed=0,
            storage_path=str(tmp_path / "storage"),
            name="tracked",
            ray_address="auto",
            mlflow_uri=uri,
        ),
    )
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tracked"])
    assert len(runs) == 2
    assert sorted(float(v) for v in runs["params.agent.learning_rate"]) == sorted(
        t.hyperparameters["agent.learning_rate"] for t in report.trials
    )
    assert runs["metrics.Train/mean_reward"].notna().all()
    event_dirs = {p.parent.parent.name for p in (tmp_path / "storage" / "tracked").glob("trial_*/tensorboard/events.*")}
    assert event_dirs == {f"trial_{t.trial_id}" for t in report.trials}, "one TensorBoard folder shows every trial"


def test_a_sweep_whose_head_is_killed_is_sent_again_once_its_cluster_is_back_and_continues_where_it_was(tmp_path):
    """No person in the loop: multicluster_submit.py --resubmit waits for the cluster to answer again under its
    name (started again with the same command), sends the same job, and the same sweep command continues its
    experiment: finished trials kept, the unfinished one from its checkpoint, the lost driver's lease taken over."""
    state, addresses = tmp_path / "state", tmp_path / "ray_address"
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(state)]
    up = [*cli, "up", "1", "--name", "again", "--num_cpus", "1", "--output", str(addresses)]
    started = subprocess.run(up, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    config = write_config(tmp_path, iterations=40, interval=10, grid=[0.0, 0.001])
    storage = tmp_path / "storage"
    job = f"{config} --storage_path {storage} {' '.join(ONE_BY_ONE)} --max_concurrent_trials 1"
    submit = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(addresses)]
        + ["--resubmit", "1", "--resubmit_wait_s", "300", job],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        experiment = wait_for(lambda: next(storage.glob("cartpole_ppo_*"), None), 120, "the sweep's experiment")
        finished, checkpointed = wait_for(lambda: saved_sweep_state(experiment), 240, "a finished and a saved trial")
        kept = {trial: (trial / "result.json").read_bytes() for trial in finished}
        (head,) = lc.load_all(state)
        lose_head(head)  # the head's machine is lost: the sweep's driver goes with it
        assert wait_until_gone(head.temp_dir, timeout_s=30) == []

        again = subprocess.run(up, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        output, _ = submit.communicate(timeout=600)
        assert submit.returncode == 0, output[-4000:]
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
            submit.wait()
        subprocess.run([*cli, "down", "--output", str(addresses)], capture_output=True, timeout=120)
    table = [line for line in output.splitlines() if line.startswith("| again ")]
    assert len(table) == 2 and "CLUSTER_LOST (sent again)" in table[0] and "| 1 of 2" in table[0], output[-4000:]
    assert "SUCCEEDED" in table[1] and "| 2 of 2" in table[1], table
    rows = results_by_trial(experiment)
    assert len(rows) == 2 and {row["status"] for row in rows.values()} == {"FINISHED"}, rows
    assert {row["iterations"] for row in rows.values()} == {"40"}
    for trial, result in kept.items():
        assert (trial / "result.json").read_bytes() == result, f"{trial.name} was run again"
    for trial in checkpointed:
        log = (trial / "training_output.log").read_text()
        assert "iteration 1/40 " in log and "Resuming from checkpoint" in log, "one log for the trial, both heads' runs"
    assert "taking over" in output, "the lost driver's lease was taken over"
