"""Ray's own tools against our clusters, typed as a new user types them: the original design's one-liner
(step 4), a sweep sent with ``ray job submit`` (step 6), ``ray job list/logs/stop``, ``ray status``,
``ray list nodes`` and the dashboard's login, with token auth on and no token pasted by hand.

The user here has a home of their own (a temp folder) and a shell in which the README's one line of
set-up, ``export RAY_AUTH_MODE=token``, was run; nothing else. Their Ray token is made by our tools
where Ray looks for it (``~/.ray/auth_token``), and the cluster is asked what ran, not our output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, processes_mentioning, wait_for, wait_until_none
from ray.job_submission import JobStatus, JobSubmissionClient

# Step 4 of the original design document, character for character.
ONE_LINER = (
    "ray job submit --working-dir . --address=$(awk '!/^#/{print $0}' ~/.ray_address | head -n 1) "
    "-- python test_kuberay_config.py --num_jobs 4"
)
FIRST_ADDRESS = "$(awk '!/^#/{print $0}' ~/.ray_address | head -n 1)"


def user_shell(home: Path) -> dict[str, str]:
    """A fresh user's environment: their own home, the project's environment first on the PATH, and the one
    variable the README asks for; no token anywhere but where our tools and Ray put it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RAY_", "ISAACLAB_RAY_")) and key not in ("HOME", "PYTHONPATH")
    }
    return {
        **env,
        "HOME": str(home),
        "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:{env['PATH']}",
        "RAY_AUTH_MODE": "token",
    }


def shell(env: dict[str, str], command: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """``command`` typed at a bash prompt in the project folder."""
    return subprocess.run(
        ["bash", "-c", command], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )


class UserCluster:
    """A cluster the user started with ``local_clusters.py up``, read back from what that command recorded."""

    def __init__(self, home: Path) -> None:
        self.home = home
        (record,) = (home / ".cache" / "isaaclab_ray" / "local_clusters").glob("*.json")
        self.record = json.loads(record.read_text())
        self.dashboard = f"http://127.0.0.1:{self.record['base_port'] + 1}"
        self.gcs = f"127.0.0.1:{self.record['base_port']}"
        self.token = (home / ".ray" / "auth_token").read_text().strip()

    def client(self) -> JobSubmissionClient:
        return JobSubmissionClient(self.dashboard, headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = user_shell(home)
    up = shell(env, "python local_clusters.py up 1 --name mine --num_cpus 4 --num_gpus 4", timeout_s=120)
    cluster = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        cluster = UserCluster(home)
        yield env, cluster
    finally:
        down = shell(env, "python local_clusters.py down", timeout_s=120)
        assert down.returncode == 0, down.stderr
        if cluster is not None:
            assert wait_until_none(lambda: processes_mentioning(cluster.record["temp_dir"]), 30) == []


def test_our_tools_make_the_users_token_where_ray_looks_for_it(user):
    env, cluster = user
    token_file = cluster.home / ".ray" / "auth_token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert len(cluster.token) == 64
    printed = shell(env, "ray get-auth-token")
    assert printed.returncode == 0 and printed.stdout == cluster.token


def test_the_design_documents_one_liner_runs_as_written(user):
    env, cluster = user
    result = shell(env, ONE_LINER)
    # The cluster has 4 (fake) GPU slots and no nvidia-smi: the check runs all 4 tasks and fails on that alone.
    assert "OK:" not in result.stdout and "nvidia-smi" in result.stdout, result.stdout[-3000:] + result.stderr
    assert "Authentication" not in result.stdout + result.stderr
    jobs = [
        job for job in cluster.client().list_jobs() if job.entrypoint == "python test_kuberay_config.py --num_jobs 4"
    ]
    assert [job.status for job in jobs] == [JobStatus.FAILED]
    logs = cluster.client().get_job_logs(jobs[0].submission_id)
    assert "missing (not on PATH)" in logs and logs.count("| (unset)") == 0

    passing = shell(env, ONE_LINER + " --allow_missing_nvidia_smi")
    assert passing.returncode == 0, passing.stdout[-3000:] + passing.stderr
    assert "OK: 4 task(s) x 1 GPU(s) passed every check" in passing.stdout


def test_a_sweep_sent_with_ray_job_submit_runs_on_the_cluster(user, tmp_path):
    env, cluster = user
    results = tmp_path / "results"
    command = (
        f"ray job submit --working-dir . --address={FIRST_ADDRESS} "
        """--runtime-env-json '{"env_vars": {"CARTPOLE_MAX_ITERATIONS": "3"}}' -- """
        "python hyper_parameter_tuning/config/cartpole_sweep.py --num_samples 2 --searcher random "
        f"--scheduler fifo --name cli_sweep --storage_path {shlex.quote(str(results))}"
    )
    result = shell(env, command, timeout_s=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (job,) = [job for job in cluster.client().list_jobs() if "cli_sweep" in job.entrypoint]
    assert job.status == JobStatus.SUCCEEDED
    rows = (results / "cli_sweep" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2


def test_job_list_logs_stop_and_status_work_with_the_address_file(user):
    env, cluster = user
    started = shell(
        env,
        f"ray job submit --no-wait --address={FIRST_ADDRESS} -- "
        "python -c \"import time; print('cli-marker', flush=True); time.sleep(600)\"",
    )
    assert started.returncode == 0, started.stderr
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", started.stdout)[0]
    try:
        wait_for(lambda: cluster.client().get_job_status(job_id) == JobStatus.RUNNING, 60, "the job to run")
        listed = shell(env, f"ray job list --address={FIRST_ADDRESS}")
        assert listed.returncode == 0 and job_id in listed.stdout, listed.stderr
        wait_for(lambda: "cli-marker" in cluster.client().get_job_logs(job_id), 60, "the job's first line")
        logs = shell(env, f"ray job logs {job_id} --address={FIRST_ADDRESS}")
        assert logs.returncode == 0 and "cli-marker" in logs.stdout, logs.stderr
        stopped = shell(env, f"ray job stop {job_id} --address={FIRST_ADDRESS}")
        assert stopped.returncode == 0, stopped.stderr
        assert cluster.client().get_job_status(job_id) == JobStatus.STOPPED
    finally:
        if not cluster.client().get_job_status(job_id).is_terminal():
            cluster.client().stop_job(job_id)

    status = shell(env, f"ray status --address {cluster.gcs}")
    assert status.returncode == 0 and "4.0 GPU" in status.stdout, status.stdout + status.stderr
    nodes = shell(env, f"ray list nodes --address={FIRST_ADDRESS} --format json")
    assert nodes.returncode == 0, nodes.stderr
    assert [node["state"] for node in json.loads(nodes.stdout)] == ["ALIVE"]


def test_without_the_token_ray_refuses_and_the_dashboard_login_takes_it(user):
    env, cluster = user
    refused = shell({**env, "RAY_AUTH_MODE": "disabled"}, f"ray job list --address={FIRST_ADDRESS}")
    assert refused.returncode != 0 and "Missing authentication token" in refused.stdout + refused.stderr

    with pytest.raises(urllib.error.HTTPError) as no_token:
        urllib.request.urlopen(f"{cluster.dashboard}/api/version", timeout=10)
    assert no_token.value.code == 401
    # The dashboard's login page posts the pasted token here and keeps the cookie it gets back.
    pasted = shell(env, "ray get-auth-token").stdout
    login = urllib.request.Request(
        f"{cluster.dashboard}/api/authenticate", method="POST", headers={"Authorization": f"Bearer {pasted}"}
    )
    with urllib.request.urlopen(login, timeout=10) as response:
        cookie = response.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("ray-authentication-token=")
    page = urllib.request.Request(f"{cluster.dashboard}/api/version", headers={"Cookie": cookie})
    with urllib.request.urlopen(page, timeout=10) as response:
        assert json.load(response)["ray_version"]


def test_a_second_cluster_gets_the_same_token_and_a_cluster_token_cluster_gets_its_own(user):
    env, cluster = user
    before = cluster.token
    other = shell(env, "python local_clusters.py up 1 --name own --num_cpus 1 --cluster_token --output ~/own_address")
    try:
        assert other.returncode == 0, other.stderr
        assert (cluster.home / ".ray" / "auth_token").read_text().strip() == before
        own = next(line for line in (cluster.home / "own_address").read_text().splitlines() if line.startswith("http"))
        # Ray's CLI sends the user's token, which that cluster refuses; our tools send the one kept for it.
        refused = shell(env, f"ray job list --address={own}")
        assert refused.returncode != 0 and "Authentication failed" in refused.stdout + refused.stderr
        ours = shell(
            env,
            "python multicluster_submit.py --address_file ~/own_address \"-c 'print(1)'\" --working_dir tests",
        )
        assert ours.returncode == 0, ours.stdout + ours.stderr
    finally:
        shell(env, "python local_clusters.py down --name own")
    assert (cluster.home / ".ray" / "auth_token").read_text().strip() == before


def sweep_or_check(env: dict[str, str], script: str, address: str) -> subprocess.CompletedProcess:
    flag = "--address" if script == "test_kuberay_config.py" else "--ray_address"
    extra = "--num_jobs 1 --gpus_per_job 0" if script == "test_kuberay_config.py" else "--num_samples 1"
    return shell(env, f"{sys.executable} {script} {flag} {address} {extra}", timeout_s=120)


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("wrong", "refused the token from"),
        ("empty", "does not hold a token"),
        ("folder", "is a folder: it cannot hold a token"),
        ("missing", "requires a Ray token and none was found"),
    ],
)
def test_a_bad_token_is_named_in_one_line_by_multicluster_submit(user, tmp_path, problem, message):
    env, cluster = user
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    token_file = home / ".ray" / "auth_token"
    if problem == "wrong":
        token_file.write_text("0" * 64)
    elif problem == "empty":
        token_file.write_text("\n")
    elif problem == "folder":
        token_file.mkdir()
    (home / ".ray_address").write_text(f"# Cluster: mine\n{cluster.dashboard}\n")
    result = shell(user_shell(home), "python multicluster_submit.py \"-c 'print(1)'\" --working_dir tests")
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("mine:")]
    assert line.startswith("mine: TOKEN_REFUSED: cluster mine at") and message in line, result.stderr
    if problem != "missing":
        assert str(token_file) in line
    assert "Traceback" not in result.stdout + result.stderr
    assert "0" * 64 not in result.stdout + result.stderr


def test_a_sweep_and_the_cluster_check_with_a_wrong_token_say_so_in_one_line(user, tmp_path):
    env, cluster = user
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("0" * 64)
    for script in ("test_kuberay_config.py", "hyper_parameter_tuning/config/cartpole_sweep.py"):
        result = sweep_or_check(user_shell(home), script, cluster.gcs)
        assert result.returncode == 1, result.stdout + result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"the token from {home / '.ray' / 'auth_token'}" in errors[0], result.stderr
        assert "Traceback" not in result.stdout + result.stderr


def test_a_running_cluster_keeps_running_jobs_after_every_token_file_is_removed(user, tmp_path):
    """A user who cleans ~/.cache and ~/.ray while a cluster runs: the cluster holds its token in its processes'
    environment (as KubeRay's containers do), so a job sent with the token still starts and succeeds."""
    env, cluster = user
    token_files = [
        cluster.home / ".ray" / "auth_token",
        *(cluster.home / ".cache" / "isaaclab_ray" / "tokens").iterdir(),
    ]
    kept = tmp_path / "kept"
    kept.mkdir()
    moved = [(path, kept / str(index)) for index, path in enumerate(token_files)]
    for path, aside in moved:
        path.rename(aside)
    try:
        client = cluster.client()
        job = client.submit_job(entrypoint="python -c \"print('served without a token file')\"")
        wait_for(lambda: client.get_job_status(job).is_terminal(), 120, "the job to end")
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, client.get_job_logs(job)
        assert "served without a token file" in client.get_job_logs(job)
    finally:
        for path, aside in moved:
            aside.rename(path)
