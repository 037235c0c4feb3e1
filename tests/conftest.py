"""Shared fixtures: real local Ray clusters on their own ports and temp dirs, started and stopped here."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import k8s_harness  # noqa: E402

from ray_workflow.hosts import local as local_cluster  # noqa: E402
from ray_workflow.sweeps.training_command import TrainingJob  # noqa: E402

# The tests run with a home of their own, so that nothing they do reads or changes the user's: the address file,
# the Ray token (where Ray's tools look: RAY_AUTH_TOKEN_PATH), the tokens kept per cluster, the clusters' state.
# Warp's kernel cache stays the machine's (a cold one costs about 50 s a node), and so do the Kubernetes binaries
# and the emulators.
# The folder goes when the run ends.
AUTH_HOME = Path(tempfile.mkdtemp(prefix="pytest_ray_home_"))
os.environ.setdefault("WARP_CACHE_PATH", str(Path.home() / ".cache" / "warp"))
CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
os.environ.setdefault("ISAACLAB_RAY_K8S_CACHE", str(CACHE_HOME / "isaaclab_ray" / "k8s"))  # k8s/build.sh's
os.environ.setdefault("ISAACLAB_RAY_EMULATORS_CACHE", str(CACHE_HOME / "isaaclab_ray" / "emulators"))  # emulators/
os.environ["HOME"] = str(AUTH_HOME)
os.environ["RAY_AUTH_TOKEN_PATH"] = str(AUTH_HOME / ".ray" / "auth_token")
os.environ["ISAACLAB_RAY_TOKEN_DIR"] = str(AUTH_HOME / "tokens")
for variable in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ADDRESS"):
    os.environ.pop(variable, None)


@pytest.fixture(scope="session", autouse=True)
def _remove_auth_home() -> Iterator[None]:
    yield
    shutil.rmtree(AUTH_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local_clusters")


@pytest.fixture(scope="session")
def ray_cluster(cluster_state_dir: Path) -> Iterator[local_cluster.LocalCluster]:
    """One two-CPU cluster shared by the tests that only need somewhere to run."""
    cluster = local_cluster.start("pytest-shared", num_cpus=2, state_dir=cluster_state_dir)
    yield cluster
    local_cluster.down(cluster, cluster_state_dir)


@pytest.fixture(scope="session")
def ray_driver(ray_cluster: local_cluster.LocalCluster) -> Iterator[local_cluster.LocalCluster]:
    """This test process connected to the shared cluster as a Ray driver."""
    import ray

    from ray_workflow.sweeps.tuning import connect

    connect(ray_cluster.gcs_address)
    yield ray_cluster
    ray.shutdown()


# Every process a test starts, directly or through our tools and their children, carries this variable with the
# test's own value; Ray clusters a test starts pass it to their workers and trainers too.
TEST_MARK = "ISAACLAB_RAY_TEST_MARK"


def marked_processes(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``TEST_MARK=mark`` (this process itself aside)."""
    found = []
    for process in psutil.process_iter(["status"]):
        try:
            if process.pid != os.getpid() and process.info["status"] != psutil.STATUS_ZOMBIE:
                if process.environ().get(TEST_MARK) == mark:
                    found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves a process behind, pass or fail, and kill what it left: whatever carries its
    mark, or names its temp folder (trainers that Ray workers of a shared cluster start, and their children)."""
    mark = uuid.uuid4().hex
    os.environ[TEST_MARK] = mark
    try:
        yield
    finally:
        del os.environ[TEST_MARK]

        def left_behind() -> list[psutil.Process]:
            found = {process.pid: process for process in marked_processes(mark)}
            found.update((process.pid, process) for process in processes_mentioning(str(tmp_path)))
            return list(found.values())

        left = wait_until_none(left_behind, 30)
        described = []
        for process in left:
            try:
                described.append(f"{process.pid} {' '.join(process.cmdline())[:160]}")
                process.kill()
            except psutil.NoSuchProcess:
                continue
        if described:
            pytest.fail("processes left behind (now killed):\n" + "\n".join(described))


def this_tests_processes() -> list[psutil.Process]:
    """Live processes carrying the running test's mark."""
    return marked_processes(os.environ[TEST_MARK])


def with_test_mark(job: TrainingJob) -> TrainingJob:
    """``job`` whose trainers carry the running test's mark, so that the guard finds them and their children
    even when the Ray workers of a cluster shared by several tests start them."""
    return dataclasses.replace(job, env={**job.env, TEST_MARK: os.environ[TEST_MARK]})


def live_processes(matches: Callable[[dict], bool]) -> list[psutil.Process]:
    """Live processes whose ``cmdline``, ``cwd`` and ``status`` info ``matches``: for checks only."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and matches(process.info):
                found.append(process)
        except (psutil.NoSuchProcess, TypeError):
            continue
    return found


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains ``text`` (a test's unique temp path)."""
    return live_processes(lambda info: any(text in arg for arg in info["cmdline"]))


def wait_until_none(find: Callable[[], list[psutil.Process]], timeout_s: float) -> list[psutil.Process]:
    """What ``find()`` still returns after ``timeout_s`` (empty as soon as it finds nothing)."""
    deadline = time.monotonic() + timeout_s
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def wait_until_gone(text: str, timeout_s: float = 10.0) -> list[psutil.Process]:
    """Processes mentioning ``text`` still alive after ``timeout_s`` (empty when all have ended)."""
    return wait_until_none(lambda: processes_mentioning(text), timeout_s)


def wait_for(condition, timeout_s: float, what: str):
    """``condition()``'s first true value, polled until ``timeout_s``; a timeout fails the test, naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def sweep_command(config: Path, address: str, storage: Path, name: str, *flags: str) -> list[str]:
    """A sweep config run as its own driver process against ``address``, its experiment at ``storage/name``."""
    command = [sys.executable, str(config), "--ray_address", address, "--storage_path", str(storage)]
    return [*command, "--name", name, *flags]


def saved_sweep_state(experiment: Path | str, filesystem=None) -> tuple[list[Path], list[Path]] | None:
    """From Tune's own saved experiment state (in a bucket: through ``filesystem``, a pyarrow filesystem): the
    finished trials' folders and those of unfinished trials with a checkpoint, once it records both (what a resume
    would start from); else None.

    A checkpoint folder on disk is not enough: Tune resumes from what its state file records.
    """
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(str(experiment), storage_filesystem=filesystem).trials
    except Exception:  # no state written yet, or being replaced
        return None
    experiment = Path(experiment)
    finished = [experiment / f"trial_{t.trial_id}" for t in trials if t.status == "TERMINATED"]
    checkpointed = [experiment / f"trial_{t.trial_id}" for t in trials if t.status != "TERMINATED" and t.checkpoint]
    return (finished, checkpointed) if finished and checkpointed else None


def needs(reason: str | None, what: str) -> pytest.MarkDecorator:
    """Skip a module's tests where ``reason`` says what this machine lacks, saying so; in CI (CI=true), which must
    run ``what``, stop the run instead."""
    if reason and os.environ.get("CI"):
        raise RuntimeError(f"CI must run the {what}: {reason}")
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[k8s_harness.KubernetesForTests]:
    """One real Kubernetes control plane for every KubeRay test of the session, started by the first that asks.
    Without its binaries the tests skip, saying so, except in CI (CI=true), which must run them."""
    reason = k8s_harness.missing()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the Kubernetes tests: {reason}")
    if reason:
        pytest.skip(reason)
    plane = k8s_harness.KubernetesForTests(k8s_harness.binaries())
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture
def kube(control_plane: k8s_harness.KubernetesForTests, monkeypatch, request):
    """A namespace of the test's own on the control plane (``kube.Namespace``), with kubectl (and our tools) pointed
    at it."""
    from kube import Namespace

    name = "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    control_plane.kubectl("create", "namespace", name)
    for variable, value in control_plane.environment.items():
        monkeypatch.setenv(variable, value)
    yield Namespace(control_plane, name)
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def validator():
    """The bundled KubeRay v1.7.0 RayCluster CRD's schema, as the offline check uses it."""
    from kube import CRD

    from ray_workflow.hosts.kuberay import crd_schema

    return crd_schema.validator_from_file(CRD)
