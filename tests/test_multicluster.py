"""multicluster_submit.py and test_kuberay_config.py against real local clusters with fake GPU slots."""

import os
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest
from conftest import PROJECT_ROOT, wait_for
from ray.job_submission import JobSubmissionClient

from ray_workflow import address_file, auth
from ray_workflow.address_file import ClusterAddress
from ray_workflow.hosts import local as lc
from ray_workflow.multicluster import Plan, SubmissionError, assign

SUBMIT = [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py")]


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("mc_state")
    with lc.running(2, name="mc", num_cpus=2, num_gpus=2, state_dir=state_dir) as started:
        yield started


@pytest.fixture
def addresses(clusters, tmp_path):
    return address_file.write([ClusterAddress(c.name, c.dashboard_url) for c in clusters], tmp_path / "ray_address")


def submit(*args, timeout=240, env=None):
    return subprocess.run([*SUBMIT, *args], capture_output=True, text=True, timeout=timeout, env=env)


def job_statuses(cluster, tag: str) -> list[str]:
    """What the cluster's own job list says of the probe jobs tagged ``tag``."""
    client = JobSubmissionClient(cluster.dashboard_url, headers=auth.http_headers(cluster.dashboard_url))
    return [
        job.status.value for job in client.list_jobs() if re.search(rf"--tag {re.escape(tag)}(\s|$)", job.entrypoint)
    ]


def fresh(tag: str) -> str:
    """A tag no earlier test used: jobs stay in a cluster's list."""
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def probe_lines(output):
    """(cluster prefix, tag, GCS port the job saw, env) of every probe line; the port identifies the cluster."""
    return re.findall(r"^\[(\S+)\] probe tag=(\S+) gcs=\S+:(\d+) env=(\S+)$", output, flags=re.M)


def test_each_job_runs_on_its_own_cluster_in_file_order(clusters, addresses):
    a, b = fresh("A"), fresh("B")
    result = submit(
        "--address_file",
        str(addresses),
        "--env",
        "PROBE_ENV=on",
        f"tests/job_probe.py --tag {a}",
        f"tests/job_probe.py --tag {b}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = sorted(probe_lines(result.stdout))
    assert found == [
        ("mc-1", a, str(clusters[0].port("gcs")), "on"),
        ("mc-2", b, str(clusters[1].port("gcs")), "on"),
    ]
    assert [job_statuses(cluster, tag) for cluster in clusters for tag in (a, b)] == [
        ["SUCCEEDED"],
        [],
        [],
        ["SUCCEEDED"],
    ]


@pytest.mark.parametrize("variable", ["RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"])
def test_an_address_exported_in_the_shell_does_not_redirect_the_jobs(clusters, addresses, variable):
    # Ray's job SDK prefers these to the address it is given: both jobs would go to mc-2.
    a, b = fresh("A"), fresh("B")
    target = clusters[1].gcs_address if variable == "RAY_ADDRESS" else clusters[1].dashboard_url
    shell = {**os.environ, variable: target}
    result = submit(
        "--address_file", str(addresses), f"tests/job_probe.py --tag {a}", f"tests/job_probe.py --tag {b}", env=shell
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted((name, tag, gcs) for name, tag, gcs, _ in probe_lines(result.stdout)) == [
        ("mc-1", a, str(clusters[0].port("gcs"))),
        ("mc-2", b, str(clusters[1].port("gcs"))),
    ]
    assert job_statuses(clusters[0], a) == ["SUCCEEDED"] and job_statuses(clusters[1], a) == []


def test_one_job_goes_to_every_cluster(clusters, addresses):
    result = submit("--address_file", str(addresses), "tests/job_probe.py --tag all")
    assert result.returncode == 0, result.stderr
    assert sorted((name, gcs) for name, _, gcs, _ in probe_lines(result.stdout)) == [
        ("mc-1", str(clusters[0].port("gcs"))),
        ("mc-2", str(clusters[1].port("gcs"))),
    ]


def test_a_failing_job_makes_the_exit_code_non_zero_while_the_other_succeeds(clusters, addresses):
    ok, bad = fresh("ok"), fresh("bad")
    result = submit(
        "--address_file",
        str(addresses),
        f"tests/job_probe.py --tag {ok}",
        f"tests/job_probe.py --tag {bad} --exit_code 5",
    )
    assert result.returncode == 1
    assert job_statuses(clusters[0], ok) == ["SUCCEEDED"] and job_statuses(clusters[1], bad) == ["FAILED"]
    table = result.stdout.split("| cluster")[1]
    assert re.search(r"mc-1 .*SUCCEEDED", table) and re.search(r"mc-2 .*FAILED", table), "the table agrees"
    assert "mc-2: FAILED" in result.stderr


def test_more_jobs_than_clusters_is_refused_without_queue_and_queued_with_it(clusters, addresses):
    tags = [fresh(f"q{i}") for i in range(3)]
    jobs = [f"tests/job_probe.py --tag {tag}" for tag in tags]
    refused = submit("--address_file", str(addresses), *jobs)
    assert refused.returncode == 2
    assert "3 jobs for 2 clusters" in refused.stderr and "--queue" in refused.stderr
    assert [job_statuses(cluster, tag) for cluster in clusters for tag in tags] == [[]] * 6, "nothing was submitted"
    queued = submit("--address_file", str(addresses), "--queue", *jobs)
    assert queued.returncode == 0, queued.stdout + queued.stderr
    assert sorted(tag for _, tag, _, _ in probe_lines(queued.stdout)) == sorted(tags)
    for tag in tags:
        assert sorted(sum((job_statuses(cluster, tag) for cluster in clusters), [])) == ["SUCCEEDED"], tag


def test_fewer_jobs_than_clusters_uses_the_first_ones_with_a_note(clusters, tmp_path):
    idle = lc.start("mc-idle", num_cpus=1, state_dir=tmp_path / "state")
    try:
        three = [*clusters, idle]
        path = address_file.write([ClusterAddress(c.name, c.dashboard_url) for c in three], tmp_path / "ray_address")
        everywhere = fresh("all")
        result = submit("--address_file", str(path), f"tests/job_probe.py --tag {everywhere}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "note" not in result.stdout  # one job goes everywhere
        assert [job_statuses(cluster, everywhere) for cluster in three] == [["SUCCEEDED"]] * 3
        x, y = fresh("x"), fresh("y")
        result = submit("--address_file", str(path), f"tests/job_probe.py --tag {x}", f"tests/job_probe.py --tag {y}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "note: 2 jobs for 3 clusters; no job for mc-idle" in result.stdout
        assert job_statuses(clusters[0], x) == ["SUCCEEDED"] and job_statuses(clusters[1], y) == ["SUCCEEDED"]
        assert job_statuses(idle, x) == [] and job_statuses(idle, y) == []
    finally:
        lc.down(idle, tmp_path / "state")


def test_malformed_address_file_names_file_and_line(tmp_path):
    path = tmp_path / "ray_address"
    path.write_text("# Cluster: a\nhttp://127.0.0.1:8265\n\nhttp//broken\n")
    result = submit("--address_file", str(path), "tests/job_probe.py --tag x")
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"error: {path}:4: 'http//broken' is not a Ray address "
        "(expected http://HOST:PORT or HOST:PORT)"
    )


def test_unreachable_cluster_is_named_and_the_other_job_still_runs(clusters, tmp_path):
    with socket.socket() as silent:  # accepts connections, never answers: a hung dashboard
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        path = address_file.write(
            [
                ClusterAddress("gone", "http://127.0.0.1:1"),
                ClusterAddress("silent", silent_url),
                ClusterAddress(clusters[0].name, clusters[0].dashboard_url),
            ],
            tmp_path / "ray_address",
        )
        started = time.monotonic()
        result = submit(
            "--address_file",
            str(path),
            "--connect_timeout_s",
            "2",
            "tests/job_probe.py --tag a",
            "tests/job_probe.py --tag b",
            "tests/job_probe.py --tag c",
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "cluster gone at http://127.0.0.1:1 is unreachable" in result.stdout
    assert f"cluster silent at {silent_url} is unreachable" in result.stdout
    assert [tag for _, tag, _, _ in probe_lines(result.stdout)] == ["c"]
    assert elapsed < 60


def test_assign_rules():
    a, b, c = (ClusterAddress(name, f"http://{name}:1") for name in "abc")
    assert assign(["j"], [a, b], False) == Plan(first=[(a, "j"), (b, "j")], queued=[], idle=[])
    assert assign(["j0", "j1", "j2"], [a, b], True) == Plan(first=[(a, "j0"), (b, "j1")], queued=["j2"], idle=[])
    assert assign(["j0", "j1"], [a, b, c], False) == Plan(first=[(a, "j0"), (b, "j1")], queued=[], idle=[c])
    with pytest.raises(SubmissionError, match="3 jobs for 2 clusters"):
        assign(["j0", "j1", "j2"], [a, b], False)
    with pytest.raises(SubmissionError, match="unbalanced|No closing quotation"):
        assign(["x 'y"], [a], False)
    with pytest.raises(SubmissionError, match="lists no clusters"):
        assign(["j"], [], False)


def check(cluster, *args):
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "test_kuberay_config.py"), "--address", cluster.gcs_address, *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_two_one_gpu_jobs_pass_with_distinct_devices(clusters):
    result = check(clusters[0], "--num_jobs", "2", "--allow_missing_nvidia_smi")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(r"\|\s+\d+ \|", line)]
    devices = sorted(row.split("|")[3].strip() for row in rows)
    assert devices == ["0", "1"]
    assert "missing (not on PATH)" in result.stdout
    assert "OK: 2 task(s)" in result.stdout


def test_more_gpus_than_the_cluster_has_fail_fast_with_the_numbers(clusters):
    started = time.monotonic()
    result = check(clusters[0], "--num_jobs", "3", "--allow_missing_nvidia_smi")
    assert result.returncode == 1
    assert "cluster has 2 GPUs (at most 2 on one node); 3 x 1 = 3 requested" in result.stderr
    assert time.monotonic() - started < 60


def test_missing_nvidia_smi_fails_the_check_unless_allowed(clusters):
    result = check(clusters[1], "--num_jobs", "1")
    assert result.returncode == 1
    assert "nvidia-smi missing (not on PATH)" in result.stderr


def test_check_runs_through_multicluster_submit_on_every_cluster(addresses):
    result = submit(
        "--address_file",
        str(addresses),
        "test_kuberay_config.py --num_jobs 2 --gpus_per_job 0.5 --allow_missing_nvidia_smi",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("OK: 2 task(s) x 0.5 GPU(s)") == 2


def test_ctrl_c_stops_the_jobs_it_submitted_and_says_so(clusters, tmp_path):
    import signal

    from ray.job_submission import JobStatus, JobSubmissionClient

    path = address_file.write([ClusterAddress(clusters[0].name, clusters[0].dashboard_url)], tmp_path / "addr")
    process = subprocess.Popen(
        [*SUBMIT, "--address_file", str(path), "tests/job_probe.py --tag long --sleep_s 120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "submitted raysubmit_" in line:
            break
    job_id = re.search(r"(raysubmit_\w+)", seen[-1])[1]
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"interrupted: stopped 1 submitted job(s): {job_id} on mc-1" in output
    client = JobSubmissionClient(clusters[0].dashboard_url, headers=auth.http_headers(clusters[0].dashboard_url))
    deadline = time.monotonic() + 30
    while client.get_job_status(job_id) != JobStatus.STOPPED and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get_job_status(job_id) == JobStatus.STOPPED


def test_silent_clusters_are_asked_at_once_so_they_cost_one_timeout_in_all():
    from contextlib import ExitStack

    from ray_workflow.multicluster import MultiClusterSubmitter, RunStatus, SubmitOptions

    with ExitStack() as stack:
        addresses = []
        for index in range(3):  # accept connections, never answer: hung dashboards
            silent = stack.enter_context(socket.socket())
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            addresses.append(ClusterAddress(f"silent-{index}", f"http://127.0.0.1:{silent.getsockname()[1]}"))
        started = time.monotonic()
        runs = MultiClusterSubmitter(SubmitOptions(connect_timeout_s=4)).run(assign(["job.py"], addresses, False))
        elapsed = time.monotonic() - started
    assert [run.status for run in runs] == [RunStatus.UNREACHABLE] * 3
    assert elapsed < 10, f"three silent clusters took {elapsed:.1f} s: asked one after another (12 s and more)"


def test_a_zero_or_nan_connect_timeout_is_refused_by_the_parser(tmp_path):
    for value in ("0", "nan", "-1", "inf"):
        result = submit("--connect_timeout_s", value, "job.py")
        assert result.returncode == 2 and f"argument --connect_timeout_s: {value!r}" in result.stderr, result.stderr


def test_a_cluster_refuses_a_wrong_token_and_one_with_its_own_token_refuses_the_users(clusters, tmp_path):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    from ray_workflow import auth

    first, second = clusters
    entrypoint = "python -c 'print(1)'"
    with pytest.raises(AuthenticationError, match="Forbidden: Invalid authentication token"):
        JobSubmissionClient(first.dashboard_url, headers={"Authorization": "Bearer not-the-token"})
    # Clusters of one user share the user's token; one started with a token of its own takes only that.
    assert auth.token_for(first.dashboard_url).value == auth.token_for(second.dashboard_url).value
    own = lc.start("mc-own", num_cpus=1, own_token=True, state_dir=tmp_path)
    try:
        assert auth.token_for(own.dashboard_url).value != auth.user_token().value
        with pytest.raises(AuthenticationError, match="Forbidden: Invalid authentication token"):
            JobSubmissionClient(own.dashboard_url, headers=auth.bearer_headers(auth.user_token().value))
        client = JobSubmissionClient(own.dashboard_url, headers=auth.http_headers(own.dashboard_url))
        job_id = client.submit_job(entrypoint=entrypoint)
        wait_for(lambda: client.get_job_status(job_id).is_terminal(), 60, "the job to end")
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED
    finally:
        lc.down(own, tmp_path)


def test_secrets_beside_the_scripts_are_not_uploaded_with_the_job(addresses, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for secret in (".env", "id_rsa", "kubeconfig", "gcp-credentials.json", "server.key"):
        (work / secret).write_text("SECRET")
    (work / "list_files.py").write_text("import os\nprint('files:', sorted(os.listdir('.')))\n")
    result = submit("--address_file", str(addresses), "--working_dir", str(work), "list_files.py")
    assert result.returncode == 0, result.stdout + result.stderr
    listings = [line for line in result.stdout.splitlines() if "files:" in line]
    assert listings and all("list_files.py" in line for line in listings)
    assert not any(
        secret in line for line in listings for secret in (".env", "id_rsa", "kubeconfig", "credentials", ".key")
    )


def test_a_silent_cluster_listed_first_does_not_delay_the_live_clusters_job(clusters):
    from ray_workflow.multicluster import MultiClusterSubmitter, RunStatus, SubmitOptions

    tag = fresh("prompt")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        addresses = [
            ClusterAddress("silent", f"http://127.0.0.1:{silent.getsockname()[1]}"),
            ClusterAddress(clusters[0].name, clusters[0].dashboard_url),
        ]
        launched = time.time()
        runs = MultiClusterSubmitter(SubmitOptions(connect_timeout_s=30)).run(
            assign(["tests/job_probe.py --tag silent-one", f"tests/job_probe.py --tag {tag}"], addresses, False)
        )
    assert sorted(run.status for run in runs) == sorted([RunStatus.UNREACHABLE, RunStatus.SUCCEEDED])
    client = JobSubmissionClient(clusters[0].dashboard_url, headers=auth.http_headers(clusters[0].dashboard_url))
    (job,) = [job for job in client.list_jobs() if job.entrypoint.endswith(f"--tag {tag}")]
    # The live cluster's job started before the silent cluster's 30 s were up (the cluster's own clock says when).
    assert job.start_time / 1000 - launched < 30, f"started {job.start_time / 1000 - launched:.1f} s after launch"
