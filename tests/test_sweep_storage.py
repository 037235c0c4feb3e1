"""Where a sweep keeps its results, on a local disk: the claim that makes an experiment folder one sweep's, and the
lease that lets one driver at a time run it. (The same in buckets, against real emulators: test_buckets.py.)"""

import json
import subprocess
import sys
import threading
import time

import pytest

from ray_workflow.sweeps import storage as sweep_storage
from ray_workflow.sweeps.storage import CLAIM, LEASE, StorageError, SweepRunning, claim, driving, open_storage


def test_a_folder_is_claimed_once_and_the_same_sweep_finds_it_again_while_another_is_refused(tmp_path):
    storage = open_storage(str(tmp_path))
    assert claim(storage, "exp", "identity-a", {"sweep": "a"}) is False
    assert json.loads((tmp_path / "exp" / CLAIM).read_text())["identity"] == "identity-a"
    assert claim(storage, "exp", "identity-a", {"sweep": "a"}) is True, "the same sweep continues there"
    with pytest.raises(StorageError, match="exp already holds another sweep"):
        claim(storage, "exp", "identity-b", {"sweep": "b"})


def test_a_folder_that_holds_no_claim_is_never_taken(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "experiment_state.json").write_text("{}")
    with pytest.raises(StorageError, match="already holds another sweep"):
        claim(open_storage(str(tmp_path)), "exp", "identity-a", {"sweep": "a"})


def test_a_driver_whose_lease_is_renewed_keeps_the_sweep_and_a_second_is_refused_once_it_sees_the_heartbeat(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sweep_storage, "HEARTBEAT_S", 0.5)
    storage = open_storage(str(tmp_path))
    claim(storage, "exp", "identity", {})
    holding, done = threading.Event(), threading.Event()

    def first() -> None:
        with driving(storage, "exp"):
            holding.set()
            done.wait(30)

    holder = threading.Thread(target=first)
    holder.start()
    try:
        assert holding.wait(30)
        started = time.monotonic()
        with pytest.raises(SweepRunning, match="is being run now by another driver"), driving(storage, "exp"):
            pass
        assert time.monotonic() - started < 10
    finally:
        done.set()
        holder.join(30)
    assert not (tmp_path / "exp" / LEASE).exists(), "a driver that ends gives its lease back"


def test_the_lease_of_a_driver_that_died_is_taken_over_once_it_has_not_been_renewed_for_a_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_storage, "HEARTBEAT_S", 0.5)
    monkeypatch.setattr(sweep_storage, "LEASE_S", 3.0)
    storage = open_storage(str(tmp_path))
    claim(storage, "exp", "identity", {})
    dead = {"driver": "gone", "host": "lost-head", "pid": 4242, "heartbeat": time.time()}
    (tmp_path / "exp" / LEASE).write_text(json.dumps(dead))
    started = time.monotonic()
    with driving(storage, "exp"):
        taken = time.monotonic() - started
        assert json.loads((tmp_path / "exp" / LEASE).read_text())["driver"] != "gone"
    assert 3.0 <= taken < 30, "taken over once silent for the lease's length, not before"
    assert not (tmp_path / "exp" / LEASE).exists()


def test_the_lease_of_a_driver_that_ended_on_this_machine_is_taken_over_at_once(tmp_path):
    storage = open_storage(str(tmp_path))
    claim(storage, "exp", "identity", {})
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(ended.stdout)
    here = sweep_storage._pid_namespace()
    (tmp_path / "exp" / LEASE).write_text(json.dumps({"driver": "x", "pid": pid, "pids": here, "heartbeat": 0}))
    started = time.monotonic()
    with driving(storage, "exp"):
        assert time.monotonic() - started < sweep_storage.HEARTBEAT_S, "no wait for a driver known to have ended"
