"""Results in a bucket: what GCS and S3 cost a sweep against a local folder, and how long a lost head stops it.

Against the real emulators of the tests (fake-gcs-server and moto, started here; `make emulators` builds the
first), on a local Ray cluster. Three parts, each printing a table:

- sweep: the same CartPole sweep (4 trials of 20 iterations, a checkpoint every 5) with --storage_path a folder,
  gs:// and s3://: the sweep's time, a trial's, and one checkpoint's upload (the trainer's zip, through pyarrow as
  Ray Tune uploads it);
- state: Ray Tune's experiment state as a sweep grows (8, 64 and 256 trials of a function that reports once): the
  sweep's time per store and the size and upload time of the state file Tune syncs;
- lost_head: a sweep sent with multicluster_submit.py --resubmit 1, its head killed mid-sweep and started again
  with the same command: the time until the cluster answers, until the job is sent again, and until a trial
  reports again.

    .venv/bin/python benchmarks/bucket_storage.py --parts sweep state lost_head
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import PROJECT_ROOT, describe, local_clusters
from tabulate import tabulate

sys.path.insert(0, str(PROJECT_ROOT / "tests"))

import pyarrow.fs  # noqa: E402
from buckets import BucketsForTests, missing  # noqa: E402
from cartpole_configs import ONE_BY_ONE, write_config  # noqa: E402
from daemons import lose_head  # noqa: E402

from ray_workflow import auth  # noqa: E402
from ray_workflow.hosts import local as lc  # noqa: E402


def stores(buckets: BucketsForTests, folder: Path) -> dict[str, str]:
    """A fresh place of each kind: a folder, a GCS bucket, an S3 bucket."""
    tag = uuid.uuid4().hex[:8]
    return {
        "folder": str(folder / f"local-{tag}"),
        "gs": buckets.create_bucket("gs", f"bench-{tag}"),
        "s3": buckets.create_bucket("s3", f"bench-{tag}"),
    }


def filesystem(buckets: BucketsForTests, uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if uri.startswith(("gs://", "s3://")):
        return buckets.filesystem(uri[:2]), uri[5:]
    return pyarrow.fs.LocalFileSystem(), uri


def upload_times(buckets: BucketsForTests, file: Path, uri: str, repeats: int) -> list[float]:
    """Seconds to upload ``file`` under ``uri`` as Tune does (pyarrow's copy_files), ``repeats`` times."""
    target_fs, base = filesystem(buckets, uri)
    if isinstance(target_fs, pyarrow.fs.LocalFileSystem):
        Path(base).mkdir(parents=True, exist_ok=True)
    times = []
    for index in range(repeats):
        started = time.perf_counter()
        pyarrow.fs.copy_files(str(file), f"{base}/upload-{index}-{file.name}", destination_filesystem=target_fs)
        times.append(time.perf_counter() - started)
    return times


def run_config(config: Path, cluster: lc.LocalCluster, storage: str, env: dict[str, str], *flags: str) -> float:
    """Seconds the sweep ``config`` took as its own driver (failing loudly if it failed)."""
    started = time.perf_counter()
    command = [sys.executable, str(config), "--ray_address", cluster.gcs_address, "--storage_path", storage, *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tempfile.mkdtemp(prefix="bench_"))
    if done.returncode != 0:
        raise RuntimeError(f"sweep on {storage} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def trial_seconds(buckets: BucketsForTests, experiment: str) -> list[float]:
    """Each trial's time from its own results (Tune's time_total_s at its last report)."""
    source, base = filesystem(buckets, experiment)
    seconds = []
    for info in source.get_file_info(pyarrow.fs.FileSelector(base, recursive=True)):
        if info.path.endswith("/result.json"):
            with source.open_input_stream(info.path) as stream:
                last = stream.read().decode().strip().splitlines()[-1]
            seconds.append(json.loads(last)["time_total_s"])
    return seconds


def sweep_part(buckets: BucketsForTests, cluster: lc.LocalCluster, env: dict[str, str], work: Path) -> None:
    config = write_config(work, iterations=20, interval=5, grid=[0.0, 0.001, 0.005, 0.01])
    rows = []
    checkpoint = None
    for kind, storage in stores(buckets, work).items():
        wall = run_config(config, cluster, storage, env, *ONE_BY_ONE, "--name", "sweep")
        per_trial = trial_seconds(buckets, f"{storage}/sweep")
        if checkpoint is None:
            checkpoint = next(Path(storage, "sweep").glob("trial_*/checkpoint_*/checkpoint_*.zip"))
        uploads = upload_times(buckets, checkpoint, f"{storage}/uploads", 20)
        rows.append([kind, f"{wall:.1f}", f"{statistics.mean(per_trial):.1f}", f"{statistics.median(uploads):.4f}"])
        print(f"  {kind}: sweep {wall:.1f} s; checkpoint upload {describe(uploads)}", flush=True)
    size = checkpoint.stat().st_size / 1024
    print(f"\nbucket_storage sweep: 4 CartPole trials x 20 iterations, 2 at once, checkpoint every 5 ({size:.0f} KiB)")
    print(tabulate(rows, headers=["storage", "sweep s", "trial s (mean)", "checkpoint upload s (median of 20)"],
                   tablefmt="github"))  # fmt: skip


def state_part(buckets: BucketsForTests, cluster: lc.LocalCluster, work: Path, sizes: list[int]) -> None:
    import ray
    from ray import tune

    def report_once(config: dict) -> None:
        tune.report({"score": config["x"]})

    auth.prepare_driver(cluster.gcs_address)
    ray.init(address=cluster.gcs_address, logging_level="ERROR", log_to_driver=False)
    rows = []
    try:
        for trials in sizes:
            for kind, storage in stores(buckets, work).items():
                target_fs, base = filesystem(buckets, storage)
                tuner = tune.Tuner(
                    report_once,
                    param_space={"x": tune.grid_search(list(range(trials)))},
                    run_config=tune.RunConfig(name="state", storage_path=base,
                                              storage_filesystem=None if kind == "folder" else target_fs,
                                              verbose=0),
                )  # fmt: skip
                started = time.perf_counter()
                results = tuner.fit()
                wall = time.perf_counter() - started
                assert len(results) == trials and not results.errors
                state = max(
                    (info for info in target_fs.get_file_info(pyarrow.fs.FileSelector(f"{base}/state"))
                     if Path(info.path).name.startswith("experiment_state")),
                    key=lambda info: info.size,
                )  # fmt: skip
                local_copy = work / f"state-{trials}.json"
                pyarrow.fs.copy_files(state.path, str(local_copy), source_filesystem=target_fs)
                uploads = upload_times(buckets, local_copy, f"{storage}/uploads", 10)
                rows.append([trials, kind, f"{wall:.1f}", f"{1000 * wall / trials:.0f}",
                             f"{state.size / 1024:.0f}", f"{1000 * statistics.median(uploads):.1f}"])  # fmt: skip
                print(f"  {trials} trials, {kind}: {wall:.1f} s", flush=True)
    finally:
        ray.shutdown()
    print("\nbucket_storage state: trials of a function that reports once, Tune's experiment state synced to storage")
    headers = ["trials", "storage", "sweep s", "ms per trial", "state KiB", "state upload ms (median of 10)"]
    print(tabulate(rows, headers=headers, tablefmt="github"))


def lost_head_part(work: Path) -> None:
    state, addresses, storage = work / "state", work / "ray_address", work / "storage"
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(state)]
    up = [*cli, "up", "1", "--name", "lost", "--num_cpus", "2", "--output", str(addresses)]
    subprocess.run(up, check=True, capture_output=True, timeout=180)
    (work / "lost").mkdir()
    config = write_config(work / "lost", iterations=60, interval=5, grid=[0.0, 0.001])
    job = f"{config} --storage_path {storage} {' '.join(ONE_BY_ONE)}"
    submit = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(addresses),
         "--resubmit", "1", "--resubmit_wait_s", "600", job],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait(lambda: len(list(storage.glob("*/trial_*/checkpoint_*"))) >= 2, 600)
        (head,) = lc.load_all(state)
        killed = time.perf_counter()
        lose_head(head)
        restarted_at = time.time()
        subprocess.run(up, check=True, capture_output=True, timeout=180)
        answered = time.perf_counter() - killed
        new_address = next(line for line in addresses.read_text().splitlines() if line.startswith("http"))
        client_headers = auth.http_headers(new_address)
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(new_address, headers=client_headers)
        wait(lambda: client.list_jobs(), 600)
        resent = time.perf_counter() - killed
        wait(lambda: any(path.stat().st_mtime > restarted_at for path in storage.glob("*/trial_*/result.json")), 600)
        reporting = time.perf_counter() - killed
        submit.communicate(timeout=900)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
            submit.wait()
        subprocess.run([*cli, "down", "--output", str(addresses)], capture_output=True, timeout=120)
    print("\nbucket_storage lost_head: head killed mid-sweep, `local_clusters.py up` again, multicluster --resubmit 1")
    rows = [["cluster answers again (local_clusters.py up)", f"{answered:.1f}"],
            ["the job is sent again", f"{resent:.1f}"],
            ["a trial reports again (lease taken over, Tune restored)", f"{reporting:.1f}"]]  # fmt: skip
    print(tabulate(rows, headers=["after the head is killed", "s"], tablefmt="github"))


def wait(condition, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise TimeoutError("timed out")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["sweep", "state", "lost_head"], default=["sweep", "state"])
    parser.add_argument("--state_trials", type=int, nargs="+", default=[8, 64, 256])
    args = parser.parse_args()
    if why := missing():
        print(f"bucket_storage.py: {why}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench_buckets_"))
    buckets = BucketsForTests()
    buckets.start()
    try:
        os.environ.update(buckets.environment)
        if {"sweep", "state"} & set(args.parts):
            with local_clusters(1, num_cpus=2, prefix="bucket-bench") as (cluster,):
                os.environ.update(auth.driver_environment(auth.token_for(cluster.gcs_address)))
                if "sweep" in args.parts:
                    sweep_part(buckets, cluster, {**os.environ}, work)
                if "state" in args.parts:
                    state_part(buckets, cluster, work, args.state_trials)
        if "lost_head" in args.parts:
            lost_head_part(work)
    finally:
        buckets.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
