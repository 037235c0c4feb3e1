"""launch.py --cluster_host slurm, grok_slurm_address.sh and the other tools, against a real SLURM.

The SLURM is Debian's slurmctld, slurmd and munge (22.05), started by these tests as plain
processes with two nodes on this machine (tests/slurm_harness.py); `make slurm` installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from cartpole_configs import ONE_BY_ONE, results_by_trial, write_config
from conftest import PROJECT_ROOT, needs, processes_mentioning, saved_sweep_state, wait_for, wait_until_none
from ray.job_submission import JobStatus, JobSubmissionClient
from slurm_harness import SlurmForTests, missing

from ray_workflow import address_file, auth, ray_ports
from ray_workflow.hosts.slurm import script as slurm
from ray_workflow.ray_ports import PORT_BLOCK

pytestmark = needs(missing(), "SLURM tests")


# A small cluster that fits the test SLURM's two nodes: the head on one, a worker on the other. Its ports are the
# default: each cluster finds a block free on both nodes, as on a lab's shared nodes.
NODES = ["--cpu_per_worker", "1", "--gpu_per_worker", "0", "--ram_gb_per_worker", "2"]
SMALL = [*NODES, "--time", "15"]


@pytest.fixture(scope="module")
def slurm_cluster():
    harness = SlurmForTests()
    try:
        harness.start()
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def env(slurm_cluster):
    """A user's shell: SLURM's config, and another cluster's token and address, which sbatch passes on to
    the job and which our clusters must ignore."""
    return {
        **os.environ,
        **slurm_cluster.environment,
        "RAY_AUTH_TOKEN": "a-token-of-another-cluster",
        "RAY_ADDRESS": "10.0.0.1:6379",
    }


def launch(env: dict, cwd: Path, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """launch.py on SLURM from ``cwd``, job logs there too (by default they go to the project's logs/slurm)."""
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "launch.py"), "--cluster_host", "slurm", "--log_dir", str(cwd), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def ray_processes(job_id: str) -> list:
    """Live Ray processes of one SLURM job: they run from its temp dirs /tmp/ray-<job>-<node>."""
    return processes_mentioning(f"/tmp/ray-{job_id}-")


def alive_nodes(dashboard: str) -> list[dict]:
    request = urllib.request.Request(f"{dashboard}/api/v0/nodes?limit=100", headers=auth.http_headers(dashboard))
    with urllib.request.urlopen(request, timeout=10) as response:
        nodes = json.load(response)["data"]["result"]["result"]
    return [node for node in nodes if node["state"] == "ALIVE"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cpu_per_worker", "1.5"], "--cpu_per_worker 1.5: SLURM allocates whole CPUs"),
        (["--time", "soon"], "--time 'soon': not a SLURM time limit"),
        (["--namespace", "ns"], "--namespace does not apply on SLURM"),
        (["--image", "img"], "--image does not apply on SLURM (a module or container line goes in --setup)"),
        (["--cluster_host", "local", "--partition", "gpu"], "--partition does not apply with --cluster_host local"),
        (["--name", "Team/A"], "--name 'Team/A' is not a SLURM cluster name here"),
        (["--setup", "module load a\nrm -rf ~"], "--setup"),
        (["--gres", "gpu:a100:2;reboot"], "--gres"),
        (["--max_workers", "1", "2"], "--max_workers: a SLURM cluster has one kind of node"),
        (["--base_port", "65400"], "--base_port 65400"),
        (["--partition", "nosuch"], "Invalid partition name specified"),
        (["--max_workers", "5"], "Requested node configuration is not available"),
        # SLURM's refusal, then the flag that asked for what no node has.
        (["--gpu_per_worker", "1"], "(check --gpu_per_worker)"),
        (["--cpu_per_worker", "64"], "(check --max_workers, --cpu_per_worker, --ram_gb_per_worker)"),
        (["--state_dir", "/etc/hostname/state"], "--state_dir /etc/hostname/state: cannot keep files there (/etc/"),
        (["--log_dir", "/etc/hostname/logs"], "--log_dir /etc/hostname/logs: cannot keep files there (/etc/hostname"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_anything_is_submitted(env, tmp_path, slurm_cluster, flags, message):
    before = slurm_cluster.job_ids()
    result = launch(env, tmp_path, *SMALL, "--state_dir", str(tmp_path / "state"), *flags)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert slurm_cluster.job_ids() - before == set()
    assert not (tmp_path / "state").exists() or list((tmp_path / "state").iterdir()) == []


def test_dry_run_prints_a_batch_script_that_bash_accepts_and_submits_nothing(env, tmp_path, slurm_cluster):
    before = slurm_cluster.job_ids()
    result = launch(
        env,
        tmp_path,
        "--dry_run",
        "--name",
        "lab",
        "--num_clusters",
        "2",
        "--max_workers",
        "3",
        "--gpu_per_worker",
        "4",
        "--partition",
        "gpu",
        "--account",
        "rl-lab",
        "--time",
        "4:00:00",
        "--setup",
        "module load cuda/12.4",
        "--base_port",
        "23000",
        "--state_dir",
        str(tmp_path / "state"),
    )
    assert result.returncode == 0, result.stderr
    scripts = result.stdout.split("#!/bin/bash\n")[1:]
    assert len(scripts) == 2
    first, second = scripts
    for line in [
        "#SBATCH --job-name=lab-1",
        "#SBATCH --nodes=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=rl-lab",
        "#SBATCH --time=4:00:00",
        "module load cuda/12.4",
        f"RAY_AUTH_TOKEN_PATH={tmp_path / 'state' / 'lab-1.token'}",
    ]:
        assert line in first, line
    assert "#SBATCH --job-name=lab-2" in second
    # The second cluster's 4 nodes take the 800 ports after the first's.
    assert "candidates=(23000)" in first and "candidates=(23800)" in second
    syntax = subprocess.run(["bash", "-n"], input="#!/bin/bash\n" + first, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr
    assert slurm_cluster.job_ids() - before == set() and not (tmp_path / "state").exists()


def test_cluster_spans_two_nodes_runs_the_check_and_a_sweep_and_down_cancels_only_ours(env, tmp_path, slurm_cluster):
    # Jobs that are not this cluster: one with its name but not our marker, one with our marker and a longer name.
    others = [
        slurm_cluster.run("sbatch", "--parsable", "--job-name=team", "--mem=100M", "--wrap", "sleep 600"),
        slurm_cluster.run(
            "sbatch",
            "--parsable",
            "--job-name=team-b",
            "--comment=isaaclab_ray_workflow",
            "--mem=100M",
            "--wrap",
            "sleep 600",
        ),
    ]
    assert all(other.returncode == 0 for other in others), [other.stderr for other in others]
    other_ids = sorted(other.stdout.strip() for other in others)
    try:
        check_cluster_and_cancel_it(env, tmp_path, slurm_cluster, other_ids)
    finally:
        ours = [job for job in slurm_cluster.queue() if job.split()[1] == "team"]
        slurm_cluster.run("scancel", *other_ids, *[job.split()[0] for job in ours])
        wait_for(lambda: not slurm_cluster.job_ids() & set(other_ids), 60, "the other jobs to end")


def check_cluster_and_cancel_it(env: dict, tmp_path: Path, slurm_cluster: SlurmForTests, other_ids: list[str]) -> None:
    state, addresses = tmp_path / "state", tmp_path / "ray_address"
    # Launched from a folder with a space in its name, where the job log goes too; a setup line that every node runs.
    launch_dir, setup_ran = tmp_path / "launch dir", tmp_path / "setup_ran"
    launch_dir.mkdir()
    setup = f'echo "$SLURMD_NODENAME" >> {setup_ran}'
    submitted = launch(
        env,
        launch_dir,
        *SMALL,
        "--name",
        "team",
        "--max_workers",
        "1",
        "--state_dir",
        str(state),
        "--no_wait",
        "--setup",
        setup,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted team (job" in submitted.stdout

    found = subprocess.run(
        [str(PROJECT_ROOT / "grok_slurm_address.sh"), "--name", "team", "--state_dir", str(state)]
        + ["--output", str(addresses), "--timeout_s", "180"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert found.returncode == 0, found.stderr
    (cluster,) = address_file.read(addresses)
    assert cluster.name == "team"
    job_id = json.loads((state / "team.json").read_text())["job_id"]
    assert job_id not in other_ids
    assert len(alive_nodes(cluster.dashboard_url)) == 2
    nodes = slurm_cluster.run("squeue", "--noheader", "--jobs", job_id, "--format=%N").stdout.strip()
    assert nodes == "node[1-2]"
    assert sorted(setup_ran.read_text().split()) == ["node1", "node2"]
    assert (launch_dir / f"team-{job_id}.out").is_file()

    check_with_rays_own_cli(env, tmp_path, addresses, cluster)

    check = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(addresses)]
        + ["test_kuberay_config.py --num_jobs 2 --gpus_per_job 0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OK: 2 task(s) x 0 GPU(s) passed every check" in check.stdout
    sweep = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(addresses)]
        + ["--env", "CARTPOLE_MAX_ITERATIONS=3"]
        + [
            "hyper_parameter_tuning/config/cartpole_sweep.py --num_samples 2 --searcher random --scheduler fifo "
            f"--storage_path {tmp_path / 'results'} --name slurm_sweep --cpus_per_trial 1"
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-2000:]
    assert "SUCCEEDED" in sweep.stdout and "Best trial" in sweep.stdout
    assert (tmp_path / "results" / "slurm_sweep" / "results.csv").exists()
    # Two 1-CPU trials at once on two 1-CPU nodes: each trained on its own SLURM node's Ray node.
    trial_nodes = set()
    for results in (tmp_path / "results" / "slurm_sweep").glob("trial_*/result.json"):
        trial_nodes |= {json.loads(line)["node_id"] for line in results.read_text().splitlines()}
    assert trial_nodes == {node["node_id"] for node in alive_nodes(cluster.dashboard_url)}
    assert ray_processes(job_id)

    down = launch(
        env, tmp_path, "--down", "--name", "team", "--state_dir", str(state), "--address_file", str(addresses)
    )
    assert down.returncode == 0, down.stderr
    assert address_file.read(addresses) == [], "down drops the cancelled cluster's block"
    assert f"cancelled SLURM job team (job {job_id})" in down.stdout
    assert job_id not in slurm_cluster.job_ids() and set(other_ids) <= slurm_cluster.job_ids()
    assert wait_until_none(lambda: ray_processes(job_id), 30) == []
    assert list(Path("/tmp").glob(f"ray-{job_id}-*")) == []
    assert list(state.glob("team.*")) == []
    assert not auth.token_path(cluster.dashboard_url).exists()


def check_with_rays_own_cli(env: dict, tmp_path: Path, addresses: Path, cluster: address_file.ClusterAddress) -> None:
    """The design document's ``ray job submit`` one-liner and Ray's other commands against the SLURM cluster, in a
    shell with the README's ``RAY_AUTH_MODE=token`` and the user's Ray token where Ray looks (RAY_AUTH_TOKEN_PATH)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(addresses, home / ".ray_address")
    shell = {key: value for key, value in env.items() if key not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    shell.update(HOME=str(home), RAY_AUTH_MODE="token", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    first = "$(awk '!/^#/{print $0}' ~/.ray_address | head -n 1)"
    host, dashboard_port = cluster.dashboard_url.removeprefix("http://").rsplit(":", 1)
    gcs_port = int(dashboard_port) - ray_ports.offset("dashboard") + ray_ports.offset("gcs")
    commands = [
        f"ray job submit --working-dir . --address={first} -- python test_kuberay_config.py --num_jobs 2 "
        "--gpus_per_job 0 --allow_missing_nvidia_smi",
        f"ray job list --address={first}",
        f"ray status --address {host}:{gcs_port}",
    ]
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command], cwd=PROJECT_ROOT, env=shell, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, command + "\n" + result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count(" node_") == 2, result.stdout  # `ray status`: both SLURM nodes' Ray nodes are active
    client = JobSubmissionClient(cluster.dashboard_url, headers=auth.http_headers(cluster.dashboard_url))
    (job,) = [job for job in client.list_jobs() if "test_kuberay_config.py" in job.entrypoint]
    assert job.status == JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("setup", "workers", "failure"),
    [
        (
            ["echo preparing", "module load cuda/12.4"],
            "0",
            "setup line 2 failed on node node1: module load cuda/12.4: ",
        ),
        # The worker's node runs the setup lines too, in its own shell, and its failure is named as well.
        (['[ "$SLURMD_NODENAME" != node2 ] || { echo no CUDA here; false; }'], "1", "failed on node node2: "),
    ],
)
def test_a_failing_setup_line_fails_the_cluster_naming_the_node_the_line_and_its_output(
    env, tmp_path, slurm_cluster, setup, workers, failure
):
    before = slurm_cluster.job_ids()
    setup_flags = [part for line in setup for part in ("--setup", line)]
    result = launch(
        env,
        tmp_path,
        *SMALL,
        "--name",
        "broken",
        "--max_workers",
        workers,
        "--state_dir",
        str(tmp_path / "state"),
        *setup_flags,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "cluster broken: SLURM job" in last and "ended FAILED" in last and failure in last, result.stderr
    assert ("command not found" if workers == "0" else "no CUDA here") in last, last
    log = Path(last.split("log: ")[1])
    assert log.parent == tmp_path and failure in log.read_text()
    job_id = log.stem.rsplit("-", 1)[1]
    assert slurm_cluster.job_state(job_id) == "FAILED" and slurm_cluster.job_ids() - before == set()
    assert wait_until_none(lambda: ray_processes(job_id), 30) == []


def test_a_setup_line_that_exits_the_nodes_shell_is_named_too(env, tmp_path, slurm_cluster):
    """``exit 0`` succeeds, yet ends the node's shell before Ray starts there: the cluster fails naming that line."""
    result = launch(env, tmp_path, *SMALL, "--name", "exits", "--max_workers", "0", "--state_dir", str(tmp_path / "s"),
                    "--setup", "echo fine", "--setup", "exit 0")  # fmt: skip
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "cluster exits: SLURM job" in last and "ended FAILED" in last, last
    assert "setup line 2 exited the shell on node node1 (status 0): exit 0" in last, last


def next_job_id(slurm_cluster: SlurmForTests) -> int:
    """The id SLURM gives the next job (ids count up; the tests submit one thing at a time)."""
    probe = slurm_cluster.run("sbatch", "--parsable", "--hold", "--wrap", "true")
    assert probe.returncode == 0, probe.stderr
    slurm_cluster.run("scancel", probe.stdout.strip())
    return int(probe.stdout.strip()) + 1


def head_of(state: Path, name: str) -> tuple[str, int]:
    """The job id and base port the cluster's batch script chose and wrote."""
    job_id, _, base_port = (state / f"{name}.head").read_text().split()
    return job_id, int(base_port)


@pytest.mark.parametrize("auth_flags", [[], ["--no_auth"]], ids=["token", "no_auth"])
def test_clusters_of_default_settings_on_the_same_nodes_take_their_own_ports(env, tmp_path, slurm_cluster, auth_flags):
    """Two clusters with every default on the same two nodes, the second one's first choice of ports held by
    another program: each gets ports of its own and answers as itself. A third on the first's --base_port
    fails at once, naming the port and the node."""
    state, addresses = tmp_path / "state", tmp_path / "ray_address"
    # 1.5 GB a node, so that three clusters fit the test SLURM's nodes at once.
    small = [*SMALL[: SMALL.index("--ram_gb_per_worker")], "--ram_gb_per_worker", "1.5", "--time", "15"]
    common = [*small, "--max_workers", "1", *auth_flags, "--state_dir", str(state), "--address_file", str(addresses)]
    started: list[str] = []
    try:
        first = launch(env, tmp_path, *common, "--name", "alice")
        assert first.returncode == 0, first.stderr
        alice_job, alice_base = head_of(state, "alice")
        started.append(alice_job)

        # Another program holds the GCS port of the block the next job would try first (SLURM counts ids up, and
        # `sbatch --test-only` may take one too: hold the blocks of the next three ids).
        stride = PORT_BLOCK * 2
        slots = len(slurm.AUTO_PORTS) // stride
        upcoming = next_job_id(slurm_cluster)
        held = [slurm.AUTO_PORTS.start + (upcoming + k) % slots * stride for k in range(3)]
        with contextlib.ExitStack() as holders:
            for base in held:
                if ray_ports.ports_in_use(base)[:1] == [base]:
                    continue  # already held, by the first cluster
                holder = holders.enter_context(socket.socket())
                holder.bind(("0.0.0.0", base + ray_ports.offset("gcs")))
                holder.listen()
            second = launch(env, tmp_path, *common, "--name", "bob")
            assert second.returncode == 0, second.stderr
            bob_job, bob_base = head_of(state, "bob")
            started.append(bob_job)
        log = (tmp_path / f"bob-{bob_job}.out").read_text()
        first_choice = slurm.AUTO_PORTS.start + int(bob_job) % slots * stride
        assert first_choice in held
        taken = f"ports from {first_choice} are taken: port {first_choice + ray_ports.offset('gcs')} on node node1"
        assert taken in log, log[:2000]
        assert bob_base not in held
        blocks = [range(base, base + stride) for base in (alice_base, bob_base)]
        assert not set(blocks[0]) & set(blocks[1])

        # Each address answers with its own job's Ray nodes, and the address file holds both.
        clusters = {cluster.name: cluster for cluster in address_file.read(addresses)}
        assert sorted(clusters) == ["alice", "bob"]
        for name, job_id in (("alice", alice_job), ("bob", bob_job)):
            labels = {node["labels"].get(slurm.JOB_LABEL) for node in alive_nodes(clusters[name].dashboard_url)}
            assert labels == {job_id}, (name, labels)

        third = launch(env, tmp_path, *common, "--name", "carol", "--base_port", str(alice_base))
        assert third.returncode == 1, third.stderr
        assert third.stderr.strip().splitlines()[-1].count("\n") == 0
        assert f"port {alice_base} on node node1 is in use (--base_port {alice_base}" in third.stderr, third.stderr
        carol_job = json.loads((state / "carol.json").read_text())["job_id"]
        assert slurm_cluster.job_state(carol_job) == "FAILED"
        assert sorted(cluster.name for cluster in address_file.read(addresses)) == ["alice", "bob"]
        assert len(alive_nodes(clusters["alice"].dashboard_url)) == 2, "the first cluster is untouched"
    finally:
        if started:
            slurm_cluster.run("scancel", *started)
        wait_for(lambda: not slurm_cluster.job_ids() & set(started), 60, "the clusters to end")
    for job_id in started:
        assert wait_until_none(lambda job_id=job_id: ray_processes(job_id), 30) == []


def test_a_cluster_without_auth_takes_jobs_without_a_token_and_is_reported_at_its_time_limit(
    env, tmp_path, slurm_cluster
):
    state, addresses = tmp_path / "state", tmp_path / "ray_address"
    flags = [*NODES, "--time", "1", "--name", "short", "--max_workers", "0", "--no_auth"]
    started = launch(env, tmp_path, *flags, "--state_dir", str(state), "--address_file", str(addresses))
    assert started.returncode == 0, started.stderr
    job_id = json.loads((state / "short.json").read_text())["job_id"]
    try:
        assert ray_processes(job_id)
        (cluster,) = address_file.read(addresses)
        client = JobSubmissionClient(cluster.dashboard_url)  # --no_auth: no token at all
        submitted = client.submit_job(entrypoint="python -c 'print(1)'")
        wait_for(lambda: client.get_job_status(submitted).is_terminal(), 50, "the job to end")
        assert client.get_job_status(submitted) == JobStatus.SUCCEEDED
        # A job that outlives its cluster: multicluster_submit.py says in one line what SLURM did (the address
        # block names its host and state folder: no flag needed).
        assert cluster.host is not None and cluster.host.get("state_dir") == str(state)
        outlived = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(addresses)]
            + ["-c 'import time; time.sleep(600)'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert outlived.returncode == 1, outlived.stdout + outlived.stderr
        assert outlived.stderr.strip().splitlines()[-1] == (
            "short: CLUSTER_LOST: cluster short ended: SLURM TIMEOUT (its time limit was reached)"
        ), outlived.stderr
        assert "Traceback" not in outlived.stdout + outlived.stderr
        assert "Task exception was never retrieved" not in outlived.stdout + outlived.stderr
        wait_for(lambda: slurm_cluster.job_state(job_id) == "TIMEOUT", 240, "SLURM to end the job at its time limit")
        status = launch(env, tmp_path, "--status", "--state_dir", str(state))
        row = next(line for line in status.stdout.splitlines() if line.startswith("short"))
        assert row.split()[1:4] == ["TIMEOUT", "job", job_id] and "TimeLimit" in row, "--status agrees with SLURM"
        assert wait_until_none(lambda: ray_processes(job_id), 30) == []
    finally:
        slurm_cluster.run("scancel", job_id)
    assert job_id not in slurm_cluster.job_ids()


def test_a_later_submission_that_fails_cancels_the_clusters_already_submitted(env, tmp_path, slurm_cluster):
    """SLURM refuses the second of two jobs (a submit limit, injected in front of the real sbatch, which takes the
    first): the first is cancelled, and SLURM itself says so."""
    wrapper = tmp_path / "bin" / "sbatch"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/bash\n"
        'if [[ " $* " != *" --test-only "* ]]; then\n'
        f'  if [ -e {tmp_path}/submitted ]; then echo "sbatch: error: Batch job submission failed: '
        'Job violates accounting/QOS policy (job submit limit)" >&2; exit 1; fi\n'
        f"  touch {tmp_path}/submitted\n"
        "fi\n"
        f'exec {shutil.which("sbatch")} "$@"\n'
    )
    wrapper.chmod(0o755)
    limited = {**env, "PATH": f"{wrapper.parent}:{env['PATH']}"}
    state = tmp_path / "state"
    flags = [*SMALL, "--name", "pair", "--num_clusters", "2", "--max_workers", "0", "--state_dir", str(state)]
    result = launch(limited, tmp_path, *flags)
    assert result.returncode == 1 and "submitting cluster 'pair-2'" in result.stderr, result.stderr
    assert "job submit limit" in result.stderr.strip().splitlines()[-1]
    every_job = slurm_cluster.run("scontrol", "show", "job", "--oneliner").stdout.splitlines()
    (first,) = [line for line in every_job if " JobName=pair-1 " in line]
    assert "JobState=CANCELLED" in first, first
    assert not [line for line in every_job if " JobName=pair-2 " in line]
    assert not list(state.glob("pair-*"))


def test_ctrl_c_while_waiting_cancels_what_was_submitted_and_says_so_in_one_line(env, tmp_path, slurm_cluster):
    # Both nodes busy: the cluster waits in the queue, and says so at a steady pace.
    holder = slurm_cluster.run("sbatch", "--parsable", "--nodes=2", "--exclusive", "--wrap", "sleep 600")
    assert holder.returncode == 0, holder.stderr
    holder_id = holder.stdout.strip()
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "launch.py"), "--cluster_host", "slurm", *SMALL]
        + ["--name", "waiting", "--max_workers", "0", "--state_dir", str(state)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(process.stderr), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any(re.match(r"still waiting after \d+ s: waiting PENDING \(Resources\)$", line) for line in said),
            120,
            "the 30 s progress line",
        )
        assert any("waiting: SLURM job" in line and "is PENDING (Resources)" in line for line in said), said
        assert not any("(None)" in line for line in said), said
        job_id = json.loads((state / "waiting.json").read_text())["job_id"]
        seen = len(said)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
        reader.join(timeout=10)
        assert [line.strip() for line in said[seen:]] == [
            f"interrupted: cancelled SLURM job waiting (job {job_id}); use --no_wait to leave clusters starting"
        ]
        assert slurm_cluster.job_state(job_id) == "CANCELLED"
        assert list(state.iterdir()) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        slurm_cluster.run("scancel", holder_id)


def test_a_name_with_an_underscore_is_a_slurm_cluster_name(env, tmp_path, slurm_cluster):
    """SLURM's rule, not Kubernetes': a job name may hold '_' and capitals."""
    result = launch(env, tmp_path, *SMALL, "--dry_run", "--name", "My_Cluster", "--state_dir", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --job-name=My_Cluster\n" in result.stdout


def test_ray_gets_the_jobs_memory_and_starts_though_another_user_took_its_temp_dir_names_first(
    env, tmp_path, slurm_cluster
):
    """Ray is told the job's --mem (object store and memory resource within it, not the node's RAM); its temp dirs
    are made by the node, so another user who made /tmp/ray-<next job id>-0 and -1 beforehand changes nothing."""
    probe = slurm_cluster.run("sbatch", "--parsable", "--hold", "--wrap", "true")
    slurm_cluster.run("scancel", probe.stdout.strip())
    next_ids = range(int(probe.stdout.strip()) + 1, int(probe.stdout.strip()) + 5)  # sbatch --test-only takes ids too
    squatted = [Path(f"/tmp/ray-{job}-{node}") for job in next_ids for node in (0, 1)]
    for folder in squatted:
        folder.mkdir(mode=0o700)
        shutil.chown(folder, "nobody")
    state, addresses = tmp_path / "state", tmp_path / "ray_address"
    try:
        started = launch(env, tmp_path, *SMALL, "--name", "roomy", "--max_workers", "1", "--state_dir", str(state),
                         "--address_file", str(addresses))  # fmt: skip
        assert started.returncode == 0, started.stderr
        job_id = json.loads((state / "roomy.json").read_text())["job_id"]
        assert int(job_id) in next_ids, "other jobs took the ids this test made room for"
        (cluster,) = address_file.read(addresses)
        nodes = alive_nodes(cluster.dashboard_url)
        assert len(nodes) == 2
        for node in nodes:  # --ram_gb_per_worker 2: 2048 MB per node, 30 % of it the object store
            total = node["resources_total"]
            assert total["object_store_memory"] == pytest.approx(2048 * 2**20 * 0.3, rel=0.01), total
            assert total["memory"] == pytest.approx(2048 * 2**20 * 0.7, rel=0.01), total
        assert all(list(folder.iterdir()) == [] for folder in squatted), "the cluster wrote into someone else's folder"
        assert cluster.gcs_address and cluster.gcs_address in launch(env, tmp_path, "--status", "--state_dir",
                                                                      str(state)).stdout  # fmt: skip
    finally:
        launch(env, tmp_path, "--down", "--name", "roomy", "--state_dir", str(state), "--address_file", str(addresses))
        for folder in squatted:
            folder.rmdir()


def test_status_and_down_see_the_clusters_of_their_own_state_dir_and_a_cancelled_one_is_dropped_by_readers(
    env, tmp_path, slurm_cluster
):
    """Two HOMEs of one account (or two colleagues under one login) each see and end their own clusters only; a
    cluster cancelled behind the tool's back is CLUSTER_LOST with SLURM's word, and leaves the address file."""
    mine, theirs, addresses = tmp_path / "mine", tmp_path / "theirs", tmp_path / "ray_address"
    started = launch(env, tmp_path, *NODES, "--time", "15", "--name", "shared-name", "--max_workers", "0",
                     "--state_dir", str(mine), "--address_file", str(addresses))  # fmt: skip
    assert started.returncode == 0, started.stderr
    job_id = json.loads((mine / "shared-name.json").read_text())["job_id"]
    try:
        assert "no SLURM job of ours" in launch(env, tmp_path, "--status", "--state_dir", str(theirs)).stdout
        down = launch(env, tmp_path, "--down", "--name", "shared-name", "--state_dir", str(theirs))
        assert down.returncode == 0 and "no SLURM job of ours named 'shared-name'" in down.stdout, down.stderr
        assert slurm_cluster.job_state(job_id) == "RUNNING"

        slurm_cluster.run("scancel", job_id)  # behind the tool's back
        wait_for(lambda: slurm_cluster.job_state(job_id) == "CANCELLED", 60, "SLURM to cancel the job")
        copy = tmp_path / "copy_of_ray_address"
        shutil.copy(addresses, copy)
        submit = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(copy)]
            + ["--connect_timeout_s", "5", "-c 'print(1)'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submit.returncode == 1
        assert "shared-name: CLUSTER_LOST: cluster shared-name has ended: SLURM CANCELLED" in submit.stderr, (
            submit.stderr
        )
        assert address_file.read(copy) == []
        status = launch(env, tmp_path, "--status", "--state_dir", str(mine), "--address_file", str(addresses))
        assert f"{addresses}: dropped cluster shared-name: SLURM CANCELLED" in status.stderr, status.stderr
        assert address_file.read(addresses) == []
        row = next(line for line in status.stdout.splitlines() if line.startswith("shared-name"))
        assert row.split()[1:4] == ["CANCELLED", "job", job_id]
        forgotten = launch(env, tmp_path, "--down", "--name", "shared-name", "--state_dir", str(mine))
        assert f"forgotten SLURM job shared-name (job {job_id}, CANCELLED already)" in forgotten.stdout
        assert list(mine.iterdir()) == []
    finally:
        slurm_cluster.run("scancel", job_id)


def test_down_then_a_launch_on_the_same_base_port_at_once(env, tmp_path, slurm_cluster):
    """The stopped cluster's ports linger in TIME_WAIT for a minute; Ray binds them anyway, and so may we."""
    port = free_block_everywhere()
    state = tmp_path / "state"
    flags = [*SMALL, "--name", "again", "--max_workers", "0", "--base_port", str(port), "--state_dir", str(state)]
    for attempt in ("first", "second"):
        started = launch(env, tmp_path, *flags, "--address_file", str(tmp_path / "ray_address"))
        assert started.returncode == 0, f"{attempt}: {started.stderr}"
        down = launch(env, tmp_path, "--down", "--name", "again", "--state_dir", str(state))
        assert down.returncode == 0 and "cancelled SLURM job again" in down.stdout, down.stderr


def free_block_everywhere() -> int:
    """A block of ports nothing on this machine (both test nodes) holds, below the kernel's ephemeral range: a port
    there may be taken by any connection between our check and the job's start (seen on a busy machine)."""
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for base in range(ephemeral_start - PORT_BLOCK, 10000, -PORT_BLOCK):
        if not ray_ports.ports_in_use(base):
            return base
    raise AssertionError("no free block of ports")


def test_a_partly_ready_launch_writes_the_ready_clusters_and_names_the_one_that_failed(env, tmp_path, slurm_cluster):
    state, addresses = tmp_path / "state", tmp_path / "ray_address"
    result = launch(env, tmp_path, *SMALL, "--name", "part", "--num_clusters", "2", "--max_workers", "0",
                    "--setup", '[ "$SLURM_JOB_NAME" != part-2 ] || { echo quota exceeded; false; }',
                    "--state_dir", str(state), "--address_file", str(addresses))  # fmt: skip
    try:
        assert result.returncode == 1, result.stderr
        assert [cluster.name for cluster in address_file.read(addresses)] == ["part-1"]
        assert f"wrote 1 cluster address(es) to {addresses}" in result.stdout
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith("error: cluster part-2: SLURM job") and "setup line 1 failed" in error, error
        assert "quota exceeded" in error
    finally:
        launch(env, tmp_path, "--down", "--name", "part", "--state_dir", str(state))


def test_a_sweep_on_a_cancelled_cluster_is_sent_again_when_it_is_launched_again_and_continues(
    env, tmp_path, slurm_cluster
):
    """SLURM ends the cluster mid-sweep (a preemption, a cancel); the same launch line starts it again, and
    multicluster_submit.py --resubmit sends the same sweep, which continues its experiment on the shared disk."""
    state, addresses, storage = tmp_path / "state", tmp_path / "ray_address", tmp_path / "storage"
    flags = [*NODES, "--time", "15", "--name", "preempted", "--max_workers", "0"]
    flags += ["--state_dir", str(state), "--address_file", str(addresses)]
    started = launch(env, tmp_path, *flags)
    assert started.returncode == 0, started.stderr
    first_job = json.loads((state / "preempted.json").read_text())["job_id"]
    config = write_config(tmp_path, iterations=30, interval=10, grid=[0.0, 0.001])
    job = f"{config} --storage_path {storage} {' '.join(ONE_BY_ONE)}"
    said = tmp_path / "multicluster.log"
    with said.open("w") as log:
        submit = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(addresses)]
            + ["--resubmit", "1", "--resubmit_wait_s", "300", job],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    second_job = None
    try:
        experiment = wait_for(lambda: next(storage.glob("cartpole_ppo_*"), None), 120, "the sweep's experiment")
        finished, checkpointed = wait_for(lambda: saved_sweep_state(experiment), 300, "a finished and a saved trial")
        kept = {trial: (trial / "result.json").read_bytes() for trial in finished}
        slurm_cluster.run("scancel", first_job)
        wait_for(lambda: slurm_cluster.job_state(first_job) == "CANCELLED", 60, "SLURM to cancel the job")
        assert wait_until_none(lambda: ray_processes(first_job), 60) == []
        # Launched again once the loss is known (as a person or a scheduler would): SLURM's word on the lost one.
        wait_for(lambda: "to answer again" in said.read_text(), 120, "multicluster_submit.py to see the loss")
        assert "cluster preempted ended: SLURM CANCELLED" in said.read_text(), said.read_text()[-4000:]
        again = launch(env, tmp_path, *flags)
        assert again.returncode == 0, again.stderr
        second_job = json.loads((state / "preempted.json").read_text())["job_id"]
        submit.wait(timeout=600)
        output = said.read_text()
        assert submit.returncode == 0, output[-4000:]
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
            submit.wait()
        launch(env, tmp_path, "--down", "--name", "preempted", "--state_dir", str(state))
    table = [line for line in output.splitlines() if line.startswith("| preempted")]
    assert "CLUSTER_LOST (sent again)" in table[0] and "SUCCEEDED" in table[1] and "| 2 of 2" in table[1], table
    rows = results_by_trial(experiment)
    assert {row["status"] for row in rows.values()} == {"FINISHED"} and len(rows) == 2, rows
    for trial, result in kept.items():
        assert (trial / "result.json").read_bytes() == result, f"{trial.name} was run again"
    for trial in checkpointed:
        log = (trial / "training_output.log").read_text()
        assert "iteration 1/30 " in log and "Resuming from checkpoint" in log, "one log for the trial, both jobs' runs"
    assert second_job != first_job and {first_job, second_job}.isdisjoint(slurm_cluster.job_ids())
