"""Sweeps whose results live in a bucket, on nodes that share no disk: real GCS and S3 emulators (fake-gcs-server,
moto) started here, a real Ray cluster whose worker nodes run in mount namespaces of their own where the head's
folders and the drivers' are empty, real CartPole training. What is in a bucket is read through the bucket's own
API, never through our code.
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest
from buckets import GUARDED_BUCKET, BucketsForTests, missing
from cartpole_configs import CONFIG, ONE_BY_ONE, write_config
from conftest import PROJECT_ROOT, needs, saved_sweep_state, wait_for, wait_until_gone
from ray.job_submission import JobSubmissionClient

from ray_workflow import auth
from ray_workflow.hosts import local as lc
from ray_workflow.sweeps.storage import CLAIM, StorageError, claim, open_storage

pytestmark = [
    needs(missing(), "bucket tests"),
    pytest.mark.skipif(os.geteuid() != 0, reason="nodes that share no disk need mount namespaces, which need root"),
]


@pytest.fixture(scope="module")
def buckets():
    emulators = BucketsForTests()
    try:
        emulators.start()
        yield emulators
    finally:
        emulators.stop()


def start_nodes(state: Path, hidden: list[str], name: str) -> list[lc.LocalCluster]:
    """A head that runs no trial, and two worker nodes that see neither its folders nor ``hidden`` (where the
    drivers run) nor, for the second, the first's: whatever a trial leaves must reach the bucket to last."""
    head = lc.start(f"{name}-head", num_cpus=0, state_dir=state)
    nodes = [head]
    for index in (1, 2):
        unseen = [head.temp_dir, *hidden, *[node.temp_dir for node in nodes[1:]]]
        nodes.append(lc.start(f"{name}-{index}", num_cpus=1, state_dir=state, head_address=head.gcs_address,
                              hidden=tuple(unseen)))  # fmt: skip
    return nodes


@pytest.fixture(scope="module")
def nodes(buckets, tmp_path_factory):
    """Started with the emulators' settings in their environment, as a user's nodes would have their cloud's."""
    state = tmp_path_factory.mktemp("bucket_nodes")
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in buckets.environment.items():
            patch.setenv(variable, value)
        started = start_nodes(state, [str(tmp_path_factory.getbasetemp())], "bucket")
    yield started
    for node in reversed(started):
        lc.down(node, state)


def sweep(config: Path, head: lc.LocalCluster, storage: str, name: str, cwd: Path, buckets, *flags: str):
    """A sweep config run as its own driver, from ``cwd`` (a folder the worker nodes cannot see)."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **buckets.environment, **auth.driver_environment(auth.token_for(head.gcs_address))}
    command = [sys.executable, str(config), "--ray_address", head.gcs_address, "--storage_path", storage]
    return subprocess.Popen([*command, "--name", name, *flags], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def trial_folders(objects: list[str], name: str) -> set[str]:
    """The trial folders of experiment ``name`` among a bucket's objects: those holding Tune's result.json."""
    return {path.split("/")[1] for path in objects if path.startswith(f"{name}/") and path.endswith("/result.json")}


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_a_sweep_in_a_bucket_keeps_every_trials_files_there_from_nodes_that_share_no_disk(
    buckets, nodes, tmp_path, scheme
):
    head, *workers = nodes
    bucket = buckets.create_bucket(scheme, f"sweeps-{uuid.uuid4().hex[:8]}")
    config = write_config(tmp_path, iterations=40, interval=20, grid=[0.0, 0.01])
    driver = sweep(config, head, f"{bucket}/team-a", "bucketed", tmp_path / "driver", buckets, *ONE_BY_ONE)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, out[-3000:] + err[-3000:]
    for worker in workers:  # asked of the node's own processes: the driver's folder is not there for them
        raylet = lc.processes(worker)[0]
        assert (tmp_path / "driver").is_dir() and not Path(f"/proc/{raylet}/root{tmp_path}/driver").exists()

    objects = buckets.objects(f"{bucket}/team-a")
    trials = trial_folders(objects, "bucketed")
    assert len(trials) == 2, objects
    for trial in trials:
        mine = [name.removeprefix(f"bucketed/{trial}/") for name in objects if name.startswith(f"bucketed/{trial}/")]
        assert "training_output.log" in mine and "result.json" in mine, mine
        assert any(name.startswith("tensorboard/events.out.tfevents") for name in mine), mine
        assert any(name.startswith("checkpoint_") and name.endswith(".zip") for name in mine), mine
    assert any(name.startswith("bucketed/experiment_state") for name in objects), objects
    assert {"bucketed/results.csv", "bucketed/learning_curves.png"} <= set(objects)
    # The report, from the bucket's data, where the driver ran too.
    rows = list(csv.DictReader(io.StringIO(buckets.read(f"{bucket}/team-a/bucketed/results.csv").decode())))
    assert sorted(row["status"] for row in rows) == ["FINISHED", "FINISHED"]
    assert (tmp_path / "driver" / "results" / "bucketed" / "results.csv").read_text().count("FINISHED") == 2
    # Every trial trained on a worker node, which could not see where the driver or the head keep files.
    ran_on = set()
    for trial in trials:
        for line in buckets.read(f"{bucket}/team-a/bucketed/{trial}/result.json").decode().splitlines():
            ran_on.add(json.loads(line)["node_id"])
    assert ran_on and ran_on <= worker_node_ids(head), ran_on


def worker_node_ids(head: lc.LocalCluster) -> set[str]:
    """The Ray node ids of the head's alive worker nodes, from the head's own list of nodes."""
    request = urllib.request.Request(
        f"{head.dashboard_url}/api/v0/nodes?limit=100", headers=auth.http_headers(head.dashboard_url)
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        listed = json.load(response)["data"]["result"]["result"]
    return {node["node_id"] for node in listed if node["state"] == "ALIVE" and not node["is_head_node"]}


def test_a_sweep_whose_whole_cluster_is_lost_continues_on_a_new_cluster_from_the_bucket(buckets, tmp_path):
    """The head goes too, its disk with it: all that is left is in the bucket, and a fresh cluster continues from it,
    keeping finished trials as they were and continuing unfinished ones from their last checkpoint."""
    bucket = buckets.create_bucket("s3", f"lost-{uuid.uuid4().hex[:8]}")
    filesystem = buckets.filesystem("s3")
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(tmp_path, iterations=40, interval=10, grid=[0.0, 0.001, 0.01])
    hidden = [str(tmp_path)]
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in buckets.environment.items():
            patch.setenv(variable, value)
        first = start_nodes(state, hidden, "lost")
    try:
        flags = (*ONE_BY_ONE, "--max_concurrent_trials", "1")
        driver = sweep(config, first[0], f"{bucket}/sweeps", "outlived", tmp_path / "driver", buckets, *flags)
        experiment = f"{bucket.removeprefix('s3://')}/sweeps/outlived"
        finished, checkpointed = wait_for(
            lambda: saved_sweep_state(experiment, filesystem), 300, "a finished and a checkpointed trial in the bucket"
        )
        kept = {trial.name: buckets.read(f"s3://{trial}/result.json") for trial in finished}
        # The driver ran on the head (as `ray job submit` runs it): it goes with it, and so does every node.
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate()
    finally:
        for node in reversed(first):
            lc.down(node, state)
    for node in first:
        assert not Path(node.temp_dir).exists()
        assert wait_until_gone(node.temp_dir, timeout_s=30) == [], "the lost cluster's processes must be gone"

    with pytest.MonkeyPatch.context() as patch:
        for variable, value in buckets.environment.items():
            patch.setenv(variable, value)
        second = start_nodes(state, hidden, "fresh")
    try:
        # The same command again: it finds its sweep in the bucket and takes over the lost driver's lease.
        resumed = sweep(config, second[0], f"{bucket}/sweeps", "outlived", tmp_path / "driver2", buckets, *flags)
        out, err = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, out[-3000:] + err[-3000:]
    finally:
        for node in reversed(second):
            lc.down(node, state)
    rows = list(csv.DictReader(io.StringIO(buckets.read(f"{bucket}/sweeps/outlived/results.csv").decode())))
    assert len(rows) == 3 and {row["status"] for row in rows} == {"FINISHED"}, rows
    assert {row["iterations"] for row in rows} == {"40"}, rows
    for trial, result in kept.items():
        assert buckets.read(f"{bucket}/sweeps/outlived/{trial}/result.json") == result, f"{trial} was run again"
    for trial in checkpointed:
        log = buckets.read(f"{bucket}/sweeps/outlived/{trial.name}/training_output.log").decode()
        # One log for the whole trial: its first run's lines, written on the lost cluster, and the new one's.
        assert "iteration 1/40 " in log and "Resuming from checkpoint" in log, log[-2000:]


PBT_SPACE = '"agent.learning_rate": tune.loguniform(1e-4, 5e-3)'
PBT_CONFIG = CONFIG.replace('"agent.ent_coef": tune.grid_search({grid})', PBT_SPACE)


def test_population_based_training_exchanges_checkpoints_between_nodes_through_the_bucket(buckets, nodes, tmp_path):
    """Two trials, one per worker node: at every perturbation the worse continues from the better's checkpoint,
    which only the bucket can carry from one node to the other."""
    head, *_ = nodes
    bucket = buckets.create_bucket("gs", f"pbt-{uuid.uuid4().hex[:8]}")
    config = tmp_path / "pbt_config.py"
    config.write_text(PBT_CONFIG.format(root=str(PROJECT_ROOT), iterations=24, interval=4, grid=None))
    flags = ("--scheduler", "pbt", "--num_samples", "2", "--seed", "3", "--max_failures", "0")
    driver = sweep(config, head, bucket, "pbt", tmp_path / "driver", buckets, *flags, "--trial_timeout_s", "120")
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, out[-3000:] + err[-3000:]

    objects = buckets.objects(bucket)
    trials = trial_folders(objects, "pbt")
    assert len(trials) == 2, objects
    results = {
        trial: [json.loads(line) for line in buckets.read(f"{bucket}/pbt/{trial}/result.json").decode().splitlines()]
        for trial in trials
    }
    # Tune's own record of every exploit: [target, donor, target's iteration, donor's iteration, configs].
    exploits = [json.loads(line) for line in buckets.read(f"{bucket}/pbt/pbt_global.txt").decode().splitlines()]
    assert exploits, "two trials, one always the worse: PBT must have exploited"
    crossed = []
    # Tune names trials there by their tags, which start with the trial's index: "0_agent_learning_rate=0.0001".
    targets = {next(t for t in trials if t.endswith(f"_{int(exploit[0].split('_')[0]):05d}")) for exploit in exploits}
    for target in targets:
        (donor,) = set(trials) - {target}
        log = buckets.read(f"{bucket}/pbt/{target}/training_output.log").decode().splitlines()
        resumes = [(int(line.split(" after ")[1].split()[0]), int(line.split("(")[1].split()[0]))
                   for line in log if "Resuming from checkpoint" in line]  # fmt: skip
        assert resumes, f"{target} was exploited, and its trainer never continued from a checkpoint"
        for done, steps in resumes:
            if done >= 24:  # an exploit at the last iteration leaves nothing to continue
                continue
            continued = [row for row in results[target] if row["iteration"] == done]
            assert any(int(row["Train/env_steps"]) == steps + 256 for row in continued), (target, done, steps)
            # While the donor still runs, it holds the other node's only CPU: the target went on on its own node,
            # from a checkpoint the donor's node wrote, which it can only have read from the bucket.
            donor_ran_on = {row["node_id"] for row in results[donor] if row["training_iteration"] == done}
            for row in continued:
                if any(later["timestamp"] > row["timestamp"] + 1 for later in results[donor]):
                    crossed.append(row["node_id"] not in donor_ran_on)
    assert crossed, "no exploit happened while its donor still ran: nothing shows the bucket carried a checkpoint"
    assert all(crossed), "a trial continued on the node of a donor that was still running there"


@pytest.mark.parametrize(
    ("case", "storage", "settings", "message"),
    [
        ("gs, no such bucket", "gs://no-such-bucket/sweeps", {}, "the bucket does not exist (NOT_FOUND"),
        ("s3, no such bucket", "s3://no-such-bucket/sweeps", {}, "the bucket does not exist (NO_SUCH_BUCKET"),
        ("s3, a key the store never issued", f"s3://{GUARDED_BUCKET}/sweeps", {"guarded": True},
         "the store does not know these credentials (INVALID_ACCESS_KEY_ID"),
        ("s3, a key that may only read", f"s3://{GUARDED_BUCKET}/sweeps", {"guarded": True, "reader": True},
         "these credentials may not write there (ACCESS_DENIED"),
        ("s3, nothing at the endpoint", "s3://any/sweeps", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
         "the store does not answer (NETWORK_CONNECTION"),
    ],
)  # fmt: skip
def test_a_bucket_that_cannot_take_the_sweep_is_one_line_before_anything_runs_or_is_written(
    buckets, nodes, tmp_path, case, storage, settings, message
):
    head, *_ = nodes
    settings = dict(settings)
    if settings.pop("guarded", False):
        settings["AWS_ENDPOINT_URL"] = buckets.guarded_s3
    if settings.pop("reader", False):
        settings.update(buckets.reader_keys)
    config = write_config(tmp_path, iterations=4, interval=2, grid=[0.0])
    jobs_before = driver_jobs(head)
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in settings.items():
            patch.setitem(buckets.environment, variable, value)
        driver = sweep(config, head, storage, "refused", tmp_path / "driver", buckets, *ONE_BY_ONE)
    _, err = driver.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert driver.returncode != 0 and len(lines) == 1, f"{case}: {err}"
    assert lines[0].startswith(f"error: --storage_path {storage}: {message}"), lines[0]
    assert not (tmp_path / "driver" / "results").exists()
    if GUARDED_BUCKET in storage:
        import boto3

        client = boto3.client("s3", endpoint_url=buckets.guarded_s3, region_name="us-east-1",
                              aws_access_key_id=buckets.reader_keys["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=buckets.reader_keys["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
        assert client.list_objects_v2(Bucket=GUARDED_BUCKET).get("KeyCount") == 0, "nothing may be half-written"
    assert driver_jobs(head) == jobs_before, "no driver may have reached the cluster"


def driver_jobs(head: lc.LocalCluster) -> list[str]:
    """Every job the head has seen, drivers that connected to it included, from its own job list."""
    client = JobSubmissionClient(head.dashboard_url, headers=auth.http_headers(head.dashboard_url))
    return sorted(job.job_id or job.submission_id for job in client.list_jobs())


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_of_eight_sweeps_claiming_one_name_in_one_bucket_at_once_exactly_one_gets_it(buckets, scheme, monkeypatch):
    for variable, value in buckets.environment.items():
        monkeypatch.setenv(variable, value)
    bucket = buckets.create_bucket(scheme, f"shared-{uuid.uuid4().hex[:8]}")
    storage = open_storage(f"{bucket}/team")
    start = threading.Barrier(8)
    won, refused = [], []

    def attempt(index: int) -> None:
        start.wait()
        try:
            claim(storage, "same-name", f"identity-{index}", {"sweep": f"sweep-{index}"})
            won.append(index)
        except StorageError as error:
            refused.append(str(error))

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(won) == 1 and len(refused) == 7, (won, refused)
    assert all("already holds another sweep" in text for text in refused), refused
    assert json.loads(buckets.read(f"{bucket}/team/same-name/{CLAIM}"))["sweep"] == f"sweep-{won[0]}"


def test_two_sweeps_of_one_name_started_at_once_in_one_bucket_never_share_its_folder(buckets, nodes, tmp_path):
    head, *_ = nodes
    bucket = buckets.create_bucket("s3", f"twice-{uuid.uuid4().hex[:8]}")
    config = write_config(tmp_path, iterations=4, interval=2, grid=[0.0])
    drivers = [  # two sweeps (their seeds differ) given one name
        sweep(
            config,
            head,
            f"{bucket}/team",
            "same-name",
            tmp_path / f"driver{seed}",
            buckets,
            *ONE_BY_ONE,
            "--seed",
            str(seed),
        )  # fmt: skip
        for seed in (1, 2)
    ]
    errors = [driver.communicate(timeout=600)[1] for driver in drivers]
    outcomes = [(driver.returncode, err) for driver, err in zip(drivers, errors, strict=True)]
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    (refusal,) = [err.strip().splitlines() for code, err in outcomes if code != 0]
    assert len(refusal) == 1 and "already holds another sweep" in refusal[0], refusal
    assert len(trial_folders(buckets.objects(f"{bucket}/team"), "same-name")) == 1
