import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, processes_mentioning, wait_for, wait_until_none
from ray.job_submission import JobStatus, JobSubmissionClient

from ray_workflow import address_file, auth
from ray_workflow.hosts import local as lc

JOB_PROBE = "python -c \"import os, sys, ray; ray.init(); print(os.environ['RAY_ADDRESS'], sys.executable)\""


def shell(**settings: str) -> dict[str, str]:
    """A user's shell with ``settings``: none of the Ray token variables an earlier test's driver left in ours."""
    return {**{key: value for key, value in os.environ.items() if key not in auth.AUTH_VARIABLES}, **settings}


def run_job(cluster: lc.LocalCluster, entrypoint: str) -> str:
    client = JobSubmissionClient(cluster.dashboard_url, headers=auth.http_headers(cluster.dashboard_url))
    job_id = client.submit_job(entrypoint=entrypoint)
    deadline = time.monotonic() + 120
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED}:
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.3)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs
    return logs


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("state")
    with lc.running(2, name="pair", num_cpus=1, state_dir=state_dir) as clusters:
        yield clusters, state_dir


def test_clusters_get_distinct_ports_and_temp_dirs_and_each_runs_its_own_jobs(two_clusters):
    (first, second), _ = two_clusters
    assert [first.name, second.name] == ["pair-1", "pair-2"]
    assert first.base_port != second.base_port and first.temp_dir != second.temp_dir
    for cluster in (first, second):
        logs = run_job(cluster, JOB_PROBE)
        gcs, python = logs.strip().splitlines()[-1].split()
        assert gcs.endswith(str(cluster.port("gcs")))
        assert python.startswith(str(PROJECT_ROOT / ".venv")), "jobs must run with the project's interpreter"


def test_a_port_in_use_is_refused_and_named(two_clusters, tmp_path):
    base = lc.free_base_port(start=40000)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 6))
        holder.listen()
        with pytest.raises(lc.LocalClusterError, match=rf"port {base + 6} is already in use"):
            lc.start("blocked", base_port=base, state_dir=tmp_path)
    assert lc.load_all(tmp_path) == []


def test_stopping_one_cluster_leaves_the_others_running(tmp_path, two_clusters):
    (first, _), _ = two_clusters
    extra = lc.start("extra", num_cpus=1, state_dir=tmp_path)
    assert lc.is_running(extra)
    assert lc.down(extra, tmp_path) is True
    assert processes_mentioning(extra.temp_dir) == []
    assert lc.load_all(tmp_path) == []
    assert lc.is_running(first)
    run_job(first, "python -c 'print(1)'")


BYSTANDER = (
    "import signal, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: (print('TERM', flush=True), sys.exit(0)))\n"
    "for line in sys.stdin:\n"
    "    print('pong', flush=True)\n"
)


class Bystander:
    """A process group that is not ours. ``untouched()`` asks it whether it was signalled: a signal sent before
    the ping is handled before the ping is read, so no waiting on luck."""

    def __enter__(self) -> "Bystander":
        self.process = subprocess.Popen(
            [sys.executable, "-c", BYSTANDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.untouched()  # its SIGTERM handler is in place
        return self

    def untouched(self) -> bool:
        self.process.stdin.write("ping\n")
        self.process.stdin.flush()
        return self.process.stdout.readline() == "pong\n"

    def __exit__(self, *_) -> None:
        self.process.kill()
        self.process.wait()


def test_stop_does_not_signal_a_group_that_no_longer_runs_the_cluster(tmp_path):
    with Bystander() as bystander:
        stale = lc.LocalCluster(
            name="stale",
            base_port=45000,
            temp_dir=str(tmp_path / "gone"),
            pgid=bystander.process.pid,
            num_cpus=None,
            num_gpus=None,
        )
        assert lc.down(stale, tmp_path) is False
        assert bystander.untouched(), "an unrelated process group was signalled"


def test_cli_up_status_down(tmp_path):
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state")]
    output = tmp_path / "ray_address"
    elsewhere = address_file.ClusterAddress("on-kuberay", "http://10.8.0.11:8265")  # launched before, kept
    address_file.write([elsewhere], output)
    up = subprocess.run(
        [*cli, "up", "1", "--name", "cli", "--num_cpus", "1", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    (cluster,) = lc.load_all(tmp_path / "state")
    assert address_file.read(output) == [elsewhere, address_file.ClusterAddress("cli", cluster.dashboard_url)]
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, check=True)
    assert "cli" in status.stdout and "running" in status.stdout
    down = subprocess.run([*cli, "down", "--output", str(output)], capture_output=True, text=True, check=True)
    assert "stopped cli" in down.stdout
    assert wait_until_none(lambda: processes_mentioning(cluster.temp_dir), 30) == []
    assert address_file.read(output) == [elsewhere], "down drops the stopped cluster's block and keeps the rest"


def test_cli_run_stops_its_cluster_and_returns_the_commands_exit_code(tmp_path):
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path)]
    result = subprocess.run(
        [
            *cli,
            "run",
            "--name",
            "runner",
            "--num_cpus",
            "1",
            "--",
            sys.executable,
            "-c",
            "import os, sys; print('address', os.environ['RAY_ADDRESS']); sys.exit(7)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 7
    assert "address 127.0.0.1:" in result.stdout and "stopped runner" in result.stdout
    assert lc.load_all(tmp_path) == []


def test_gpus_are_split_between_clusters_without_sharing():
    assert lc.split_gpus(["0", "1", "2", "3"], 2, 2) == ["0,1", "2,3"]
    assert lc.split_gpus(["4", "7", "5"], 3, 1) == ["4", "7", "5"]
    with pytest.raises(lc.LocalClusterInputError, match="needs 6 GPUs; this machine has 4"):
        lc.split_gpus(["0", "1", "2", "3"], 3, 2)


def test_cluster_environment_pins_its_ports_gpus_interpreter_and_token(tmp_path):
    cluster = lc.LocalCluster(name="c", base_port=30000, temp_dir="/tmp/x", pgid=0, num_cpus=1, num_gpus=2)
    env = lc.start_environment(cluster, cuda_visible_devices="2,3")
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env["AUTOSCALER_METRIC_PORT"] == "30009" and env["DASHBOARD_METRIC_PORT"] == "30010"
    assert env["RAY_AUTH_MODE"] == "disabled" and "RAY_ADDRESS" not in env  # no token file: asked for no auth
    token_file = tmp_path / "x.token"
    token_file.write_text("t0ken\n")
    cluster.token_file = str(token_file)
    env = lc.start_environment(cluster)
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "t0ken" and "RAY_AUTH_TOKEN_PATH" not in env
    assert env["PATH"].split(":")[0] == str(PROJECT_ROOT / ".venv" / "bin")
    command = lc.start_command(cluster)
    ports = [int(command[i + 1]) for i, arg in enumerate(command) if arg.endswith("-port")]
    assert len(ports) == len(set(ports)) == 11 and all(30000 <= port < 30200 for port in ports)


def record(state_dir, name, temp_dir, pgid=2**22 - 3):
    """A state file as `up` writes it, for a cluster whose processes are gone."""
    state_dir.mkdir(parents=True, exist_ok=True)
    cluster = lc.LocalCluster(
        name=name, base_port=45000, temp_dir=str(temp_dir), pgid=pgid, num_cpus=None, num_gpus=None
    )
    (state_dir / f"{name}.json").write_text(json.dumps(dataclasses.asdict(cluster)))
    return cluster


def test_down_never_deletes_a_directory_that_was_not_created_for_that_cluster(tmp_path):
    precious = tmp_path / "my_results"
    precious.mkdir()
    (precious / "weeks_of_training.pt").write_text("weights")
    record(tmp_path / "state", "forged", precious)
    host = lc.LocalHost(tmp_path / "state")
    assert host.down([cluster.name for cluster in host.status()])
    assert (precious / "weeks_of_training.pt").read_text() == "weights"
    assert lc.load_all(tmp_path / "state") == []


def test_down_by_name_takes_the_cluster_and_its_numbered_members_only(tmp_path):
    state = tmp_path / "state"
    for name in ("team-a", "team-a-1", "team-a-2", "team-ab", "team-a-x1"):
        record(state, name, tmp_path / f"gone-{name}")
    host = lc.LocalHost(state)
    stopped = host.down([cluster.name for cluster in host.status("team-a")])
    assert sorted(c.name for c in stopped) == ["team-a", "team-a-1", "team-a-2"]
    assert sorted(c.name for c in lc.load_all(state)) == ["team-a-x1", "team-ab"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "two\nlines", "", "UPPER", "x" * 60])
def test_a_name_that_cannot_be_a_cluster_name_is_refused_before_anything_is_written(tmp_path, name):
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state")]
    output = tmp_path / "ray_address"
    result = subprocess.run([*cli, "up", "--name", name, "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "--name" in result.stderr
    assert not output.exists() and not (tmp_path / "state").exists()
    assert not (tmp_path / "escape.json").exists()


def test_a_damaged_record_is_reported_and_skipped_while_the_others_are_stopped(tmp_path):
    state = tmp_path / "state"
    record(state, "healthy", tmp_path / "gone")
    (state / "broken.json").write_text("{not json")
    (state / "wrong.json").write_text(json.dumps({"name": "other", "base_port": 1}))
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(state)]
    status = subprocess.run([*cli, "status"], capture_output=True, text=True)
    assert status.returncode == 0 and "healthy" in status.stdout, status.stderr
    assert "broken.json: damaged local-cluster record skipped" in status.stderr
    down = subprocess.run([*cli, "down"], capture_output=True, text=True)
    assert down.returncode == 0 and "stopped healthy" in down.stdout, down.stderr
    assert "Traceback" not in down.stderr + status.stderr
    assert sorted(path.name for path in state.iterdir()) == ["broken.json", "wrong.json"]


def test_run_with_a_missing_command_says_so_and_stops_its_cluster(tmp_path):
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path)]
    result = subprocess.run(
        [*cli, "run", "--name", "missing", "--num_cpus", "1", "--", "no-such-command-xyz"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "cannot run 'no-such-command-xyz'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and lc.load_all(tmp_path) == []


def test_base_port_outside_the_port_range_is_refused(tmp_path):
    with pytest.raises(lc.LocalClusterInputError, match="--base_port 70000"):
        lc.start("ports", base_port=70000, state_dir=tmp_path)


def sweep_cli(*args, env=None):
    config = PROJECT_ROOT / "hyper_parameter_tuning" / "config" / "cartpole_sweep.py"
    return subprocess.run([sys.executable, str(config), *args], capture_output=True, text=True, timeout=120, env=env)


def test_a_sweep_told_auto_refuses_to_guess_between_several_running_clusters(two_clusters):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    result = sweep_cli("--ray_address", "auto", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (first, second), _ = two_clusters
    assert "Ray clusters run on this machine" in result.stderr
    assert f":{first.port('gcs')}" in result.stderr and f":{second.port('gcs')}" in result.stderr


def test_a_sweep_pointed_at_a_dead_address_fails_at_once_in_one_line():
    started = time.monotonic()
    result = sweep_cli("--ray_address", "127.0.0.1:1")
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "no Ray cluster answers there" in result.stderr and time.monotonic() - started < 60


def test_a_node_address_that_is_not_an_ip_is_refused(tmp_path):
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state")]
    result = subprocess.run([*cli, "up", "--node_ip_address", "0.0.0.0; rm -rf ~"], capture_output=True, text=True)
    assert result.returncode == 2 and "--node_ip_address '0.0.0.0; rm -rf ~': not an IP address" in result.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["down", "--name", ""], "--name '' is not a valid Kubernetes name"),
        (["--state_dir", "/etc/hostname", "status"], "is a file, not a folder"),
        (["up", "--node_ip_address", "0.0.0.0"], "--node_ip_address 0.0.0.0: clients cannot reach a cluster there"),
        (["up", "--output", "/tmp"], "--output /tmp: is a folder, not an address file"),
    ],
)
def test_bad_names_state_dirs_node_addresses_and_outputs_are_refused_in_one_line_before_anything_starts(
    args, message, tmp_path
):
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), *(["--state_dir", str(tmp_path / "s")]), *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert lc.load_all(tmp_path / "s") == []


def test_grok_ray_address_refuses_a_state_dir_that_is_a_file_in_one_line(tmp_path):
    result = subprocess.run(
        [str(PROJECT_ROOT / "grok_ray_address.sh"), "--state_dir", "/etc/hostname", "--output", str(tmp_path / "a")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr == "error: --state_dir /etc/hostname: is a file, not a folder\n"


def test_the_cluster_check_pointed_at_a_dead_address_fails_at_once_in_one_line():
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "test_kuberay_config.py"), "--address", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "--address 127.0.0.1:1: no Ray cluster answers there" in result.stderr
    assert result.stderr.count("\n") == 1 and time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("problem", "flags", "message"),
    [
        ("folder", [], "is a folder: it cannot hold a token"),
        ("empty", [], "does not hold a token"),
        ("none", ["--cluster_token", "--no_auth"], "--cluster_token and --no_auth"),
        # Read whole, these would fill the memory (5 GB in 19 s), hang, or pass 50 MB for a token.
        ("/dev/zero", [], "is a device: it cannot hold a token"),
        ("fifo", [], "is a FIFO: it cannot hold a token"),
        ("50 MB", [], "is 52428800 bytes, too big (at most 4096): it cannot hold a token"),
    ],
)
def test_a_user_token_that_cannot_be_one_is_named_and_nothing_starts(tmp_path, problem, flags, message):
    token = Path("/dev/zero") if problem == "/dev/zero" else tmp_path / "auth_token"
    if problem == "folder":
        token.mkdir()
    elif problem == "empty":
        token.write_text("")
    elif problem == "fifo":
        os.mkfifo(token)
    elif problem == "50 MB":
        token.write_bytes(b"a" * 50 * 2**20)
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state"), "up"]
        + ["--name", "tokenless", "--output", str(tmp_path / "ray_address"), *flags],
        capture_output=True,
        text=True,
        env=shell(RAY_AUTH_TOKEN_PATH=str(token)),
        timeout=120,
    )
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    if problem != "none":
        assert str(token) in result.stderr
    assert lc.load_all(tmp_path / "state") == [] and not (tmp_path / "ray_address").exists()
    assert list(Path(tempfile.gettempdir()).glob("ray_tokenless_*")) == []


def test_no_auth_from_the_command_line_starts_a_cluster_that_takes_jobs_without_a_token(tmp_path):
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state")]
    output = tmp_path / "ray_address"
    up = subprocess.run(
        [*cli, "up", "--name", "open", "--num_cpus", "1", "--no_auth", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    try:
        (cluster,) = address_file.read(output)
        client = JobSubmissionClient(cluster.dashboard_url)  # no token at all
        job_id = client.submit_job(entrypoint="python -c 'print(1)'")
        wait_for(lambda: client.get_job_status(job_id).is_terminal(), 120, "the job to end")
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED
    finally:
        subprocess.run([*cli, "down"], capture_output=True, check=True)


def test_gpus_per_cluster_from_the_command_line_gives_each_cluster_its_own_devices(tmp_path):
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state")]
    output = tmp_path / "ray_address"
    machine = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}  # two GPUs, as the machine would list them
    up = subprocess.run(
        [*cli, "up", "2", "--name", "split", "--num_cpus", "1", "--gpus_per_cluster", "1", "--output", str(output)],
        capture_output=True,
        text=True,
        env=machine,
        timeout=180,
    )
    assert up.returncode == 0, up.stderr
    try:
        check = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(output)]
            + ["test_kuberay_config.py --num_jobs 1 --allow_missing_nvidia_smi"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        devices = dict(re.findall(r"^\[(split-\d)\] \|\s+0 \|[^|]+\|\s+(\d)\s+\|", check.stdout, flags=re.M))
        assert devices == {"split-1": "0", "split-2": "1"}, check.stdout
    finally:
        subprocess.run([*cli, "down"], capture_output=True, check=True)
    refused = subprocess.run(
        [*cli, "up", "3", "--name", "split", "--gpus_per_cluster", "1"], capture_output=True, text=True, env=machine
    )
    assert refused.returncode == 2 and "--gpus_per_cluster 1 x 3 clusters needs 3 GPUs; this machine has 2" in (
        refused.stderr
    )
    assert lc.load_all(tmp_path / "state") == []


def test_a_record_whose_temp_dir_would_match_anyone_never_gets_a_group_signalled(tmp_path):
    with Bystander() as bystander:
        state = tmp_path / "state"
        state.mkdir()
        record = {"name": "evil", "base_port": 45000, "temp_dir": "", "pgid": bystander.process.pid}
        (state / "evil.json").write_text(json.dumps({**record, "num_cpus": None, "num_gpus": None}))
        down = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(state), "down"]
            + ["--output", str(tmp_path / "ray_address")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert down.returncode == 0 and "damaged local-cluster record skipped" in down.stderr, down.stderr
        assert bystander.untouched(), "a group that is not ours was signalled"


def test_a_port_taken_between_the_check_and_ray_start_moves_the_cluster_to_the_next_free_block(tmp_path, monkeypatch):
    from ray_workflow import ray_ports

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ray does: a port left in TIME_WAIT is free
    checked = []
    real_check = lc.ports_in_use

    def another_program_takes_it_right_after_the_check(block: int) -> list[int]:
        busy = real_check(block)
        if not busy and not checked:  # the first block found free is taken by someone else before `ray start` binds it
            holder.bind(("0.0.0.0", block + ray_ports.offset("gcs")))
            holder.listen()
            checked.append(block)
        return busy

    monkeypatch.setattr(lc, "ports_in_use", another_program_takes_it_right_after_the_check)
    try:
        cluster = lc.start("raced", num_cpus=1, state_dir=tmp_path)
        try:
            assert checked and cluster.base_port != checked[0]
            run_job(cluster, "python -c 'print(1)'")
        finally:
            lc.down(cluster, tmp_path)
    finally:
        holder.close()


def test_a_cluster_ended_behind_the_tools_back_is_reported_lost_and_dropped_by_every_reader(tmp_path):
    """Its processes killed by hand: multicluster_submit.py says CLUSTER_LOST with the host's word and the block
    goes, so Ray's one-liner never takes the dead cluster first; the live cluster's block stays."""
    cli = [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state")]
    addresses = tmp_path / "ray_address"
    up = subprocess.run([*cli, "up", "2", "--name", "lost", "--num_cpus", "1", "--output", str(addresses)],
                        capture_output=True, text=True, timeout=180)  # fmt: skip
    assert up.returncode == 0, up.stderr
    first, second = lc.load_all(tmp_path / "state")
    assert [block.host for block in address_file.read(addresses)] == [lc.LocalHost(tmp_path / "state").record] * 2
    try:
        os.killpg(first.pgid, signal.SIGKILL)
        wait_for(lambda: not lc.is_running(first), 30, "the first cluster's processes to be gone")
        submit = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(addresses)]
            + ["--working_dir", str(PROJECT_ROOT / "tests"), "--connect_timeout_s", "5", "-c 'print(1)'"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert submit.returncode == 1
        assert (
            f"lost-1: CLUSTER_LOST: cluster lost-1 has ended: its Ray processes (group {first.pgid}) are gone"
            in submit.stderr
        ), submit.stderr
        assert f"dropped cluster lost-1: its Ray processes (group {first.pgid}) are gone" in submit.stderr
        assert [block.name for block in address_file.read(addresses)] == ["lost-2"]
        awk = subprocess.run(["bash", "-c", f"awk '!/^#/{{print $0}}' {addresses} | head -n 1"], capture_output=True,
                             text=True, check=True)  # fmt: skip
        assert awk.stdout.strip() == second.dashboard_url
    finally:
        subprocess.run([*cli, "down", "--output", str(addresses)], capture_output=True, timeout=120)


def test_the_grok_script_and_status_drop_the_block_of_a_cluster_stopped_from_elsewhere(tmp_path):
    host = lc.LocalHost(tmp_path / "state")
    (tmp_path / "state").mkdir()
    addresses = tmp_path / "ray_address"
    address_file.write([address_file.ClusterAddress("gone", "http://127.0.0.1:21001", host.record)], addresses)
    grok = subprocess.run(
        [str(PROJECT_ROOT / "grok_ray_address.sh"), "--address", "10.0.0.5:6379", "--cluster_name", "lab-box"]
        + ["--output", str(addresses), "--state_dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert grok.returncode == 0, grok.stderr
    assert f"warning: {addresses}: dropped cluster gone: no local cluster named 'gone' is recorded" in grok.stderr
    assert [block.name for block in address_file.read(addresses)] == ["lab-box"]


def test_a_forged_record_naming_root_as_its_temp_dir_signals_no_process_group(tmp_path):
    """``/`` is in every command line; only a temp dir holding our mark, named as a path, makes processes ours."""
    with Bystander() as bystander:
        forged = record(tmp_path / "state", "forged", "/", pgid=bystander.process.pid)
        assert lc.processes(forged) == [] and not lc.is_running(forged)
        host = lc.LocalHost(tmp_path / "state")
        assert [cluster.name for cluster in host.down(["forged"])] == ["forged"]
        assert bystander.untouched(), "a group that is not ours was signalled"
        assert Path("/bin").is_dir()


def test_up_refuses_an_address_file_it_could_not_write_before_any_cluster_starts(tmp_path):
    (tmp_path / ".ray_address.lock").mkdir()
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state"), "up"]
        + ["--name", "unwritten", "--output", str(tmp_path / "ray_address")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot lock the address file" in result.stderr and "is a folder" in result.stderr
    assert lc.load_all(tmp_path / "state") == [] and list(Path(tempfile.gettempdir()).glob("ray_unwritten_*")) == []


def test_up_stops_its_cluster_again_when_the_address_file_stays_locked(tmp_path, monkeypatch, capsys):
    """Another command holding the file's lock: up waits its limit, names the holder, and leaves nothing running."""
    import local_clusters

    lock = tmp_path / ".ray_address.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(600)", str(lock)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == b"held\n"
        monkeypatch.setattr(address_file, "LOCK_TIMEOUT_S", 2.0)
        state = tmp_path / "state"
        code = local_clusters.main(["--state_dir", str(state), "up", "--name", "locked", "--num_cpus", "1",
                                    "--output", str(tmp_path / "ray_address")])  # fmt: skip
        assert code == 1
        assert f"held its lock {lock} for 2 s (process {holder.pid}:" in capsys.readouterr().err
        assert lc.load_all(state) == [] and list(Path(tempfile.gettempdir()).glob("ray_locked_*")) == []
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_while_a_cluster_starts_stops_it_and_leaves_no_record(tmp_path):
    state = tmp_path / "state"
    up = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(state), "up", "--name", "halfway"]
        + ["--num_cpus", "1", "--output", str(tmp_path / "ray_address")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The node is recorded as soon as its `ray start` runs: interrupt then, halfway through its start.
    wait_for(lambda: list(state.glob("halfway.json")), 60, "the node's record")
    up.send_signal(signal.SIGINT)
    _, err = up.communicate(timeout=60)
    assert up.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert lc.load_all(state) == [] and list(Path(tempfile.gettempdir()).glob("ray_halfway_*")) == []


@pytest.mark.parametrize("problem", ["the kept-token folder is a file", "~/.ray is a file"])
def test_a_token_folder_that_cannot_be_one_is_named_in_one_line_and_nothing_starts(tmp_path, problem):
    env = shell(HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    if problem == "~/.ray is a file":
        (tmp_path / "home" / ".ray").write_text("not a folder")
    else:
        env["ISAACLAB_RAY_TOKEN_DIR"] = "/etc/hostname"
        env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "auth_token")
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state"), "up"]
        + ["--name", "tokenhome", "--output", str(tmp_path / "ray_address")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert ("/etc/hostname" if "kept" in problem else str(tmp_path / "home" / ".ray")) in result.stderr
    assert lc.load_all(tmp_path / "state") == [] and list(Path(tempfile.gettempdir()).glob("ray_tokenhome_*")) == []


def test_a_token_that_cannot_be_made_where_ray_keeps_it_is_named_in_one_line(tmp_path):
    """Ray's token path in a folder nobody can create (as an unwritable home is for its user): nothing starts."""
    token = Path("/proc/no-such-home/.ray/auth_token")
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "local_clusters.py"), "--state_dir", str(tmp_path / "state"), "up"]
        + ["--name", "unmade", "--output", str(tmp_path / "ray_address")],
        capture_output=True,
        text=True,
        env=shell(RAY_AUTH_TOKEN_PATH=str(token)),
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot make your Ray token {token} (")
    assert lc.load_all(tmp_path / "state") == [] and list(Path(tempfile.gettempdir()).glob("ray_unmade_*")) == []
