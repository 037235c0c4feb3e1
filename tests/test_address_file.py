import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

from ray_workflow import address_file
from ray_workflow.address_file import AddressFileError, ClusterAddress, HostRecord, read, update, write


def test_blocks_comments_and_blank_lines_are_read_in_order(tmp_path):
    path = tmp_path / "addresses"
    path.write_text(
        "# written by hand\n\n# Cluster: tuner-1\nhttp://10.0.0.1:8265\n\n"
        "# Cluster: tuner-2\n10.0.0.2:6379\n# a note\nlocalhost:9000\n"
    )
    assert address_file.read(path) == [
        ClusterAddress("tuner-1", "http://10.0.0.1:8265"),
        ClusterAddress("tuner-2", "http://10.0.0.2:8265"),
        ClusterAddress(None, "http://localhost:9000"),
    ]


def test_malformed_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "addresses"
    path.write_text("# Cluster: a\nhttp://10.0.0.1:8265\nnot an address\n")
    with pytest.raises(AddressFileError, match=rf"{re.escape(str(path))}:3: 'not an address' is not a Ray address"):
        address_file.read(path)


@pytest.mark.parametrize("line", ["http://host", "host:99999", "ftp://host:1", "host:80 extra"])
def test_addresses_without_a_valid_port_or_scheme_are_malformed(line):
    with pytest.raises(AddressFileError, match=":1:"):
        address_file.parse(line)


def test_write_then_read_round_trips_and_leaves_no_temporary_file(tmp_path):
    clusters = [ClusterAddress("c-1", "http://127.0.0.1:8265"), ClusterAddress("c-2", "http://127.0.0.1:8465")]
    path = address_file.write(clusters, tmp_path / "sub" / "addresses")
    assert address_file.read(path) == clusters
    assert os.listdir(path.parent) == ["addresses"]


def test_the_design_documents_awk_one_liner_reads_the_first_address(tmp_path):
    path = address_file.write(
        [ClusterAddress("c-1", "http://127.0.0.1:8265"), ClusterAddress("c-2", "http://127.0.0.1:8465")],
        tmp_path / "addresses",
    )
    first = subprocess.run(
        ["bash", "-c", f"awk '!/^#/{{print $0}}' {path} | head -n 1"], capture_output=True, text=True, check=True
    )
    assert first.stdout == "http://127.0.0.1:8265\n"


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "", "  "])
def test_a_name_that_would_break_the_file_is_refused_and_nothing_is_written(tmp_path, name):
    path = tmp_path / "ray_address"
    path.write_text("# Cluster: keep\nhttp://10.0.0.1:8265\n")
    with pytest.raises(AddressFileError, match="cannot be written"):
        write([ClusterAddress(name, "http://10.0.0.2:8265")], path)
    assert path.read_text() == "# Cluster: keep\nhttp://10.0.0.1:8265\n"
    assert [c.dashboard_url for c in read(path)] == ["http://10.0.0.1:8265"]


def test_rewriting_keeps_the_files_permissions(tmp_path):
    path = tmp_path / "ray_address"
    path.write_text("http://10.0.0.1:8265\n")
    path.chmod(0o600)
    write([ClusterAddress("c", "http://10.0.0.2:8265")], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_credentials_in_an_address_are_never_echoed(tmp_path):
    path = tmp_path / "ray_address"
    path.write_text("http://admin:hunter2@10.0.0.1:8265/x y\n")
    with pytest.raises(AddressFileError) as error:
        read(path)
    assert "hunter2" not in str(error.value) and "admin" not in str(error.value)
    assert f"{path}:1:" in str(error.value) and "***@10.0.0.1" in str(error.value)


def test_an_address_file_that_is_a_directory_is_one_clear_error(tmp_path):
    with pytest.raises(AddressFileError, match="is a folder, not an address file"):
        read(tmp_path)
    with pytest.raises(AddressFileError, match="is a folder, not an address file"):
        write([ClusterAddress("c", "http://10.0.0.2:8265")], tmp_path)


def test_update_replaces_a_clusters_block_in_place_adds_new_ones_last_and_keeps_the_others(tmp_path):
    path = tmp_path / "ray_address"
    write([ClusterAddress("a", "http://10.0.0.1:8265"), ClusterAddress("b", "http://10.0.0.2:8265")], path)
    update([ClusterAddress("a", "http://10.0.0.9:8265"), ClusterAddress("c", "http://10.0.0.3:8265")], path)
    assert read(path) == [
        ClusterAddress("a", "http://10.0.0.9:8265"),
        ClusterAddress("b", "http://10.0.0.2:8265"),
        ClusterAddress("c", "http://10.0.0.3:8265"),
    ]
    address_file.drop(["b", "not-there"], path)
    assert [cluster.name for cluster in read(path)] == ["a", "c"]


def test_update_leaves_a_file_it_cannot_parse_as_it_is(tmp_path):
    path = tmp_path / "ray_address"
    path.write_text("# Cluster: mine\nnot an address\n")
    with pytest.raises(AddressFileError, match=":2: 'not an address' is not a Ray address"):
        update([ClusterAddress("new", "http://10.0.0.1:8265")], path)
    assert path.read_text() == "# Cluster: mine\nnot an address\n"


WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from ray_workflow.address_file import ClusterAddress, update
for index in range(int(sys.argv[4])):
    update([ClusterAddress(f"{sys.argv[3]}-{index}", f"http://10.0.0.1:{20000 + index}")], sys.argv[2])
"""


def test_writers_at_the_same_time_never_lose_each_others_blocks(tmp_path):
    path = tmp_path / "ray_address"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(PROJECT_ROOT), str(path), name, "40"])
        for name in ("left", "right", "third")
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0]
    names = sorted(cluster.name for cluster in read(path))
    assert names == sorted(f"{name}-{index}" for name in ("left", "right", "third") for index in range(40))


def test_a_symlinked_address_file_stays_a_symlink_and_its_target_is_updated(tmp_path):
    target = tmp_path / "shared" / "ray_address"
    target.parent.mkdir()
    write([ClusterAddress("a", "http://10.0.0.1:8265")], target)
    link = tmp_path / ".ray_address"
    link.symlink_to(target)
    update([ClusterAddress("b", "http://10.0.0.2:8265")], link)
    assert link.is_symlink() and [cluster.name for cluster in read(target)] == ["a", "b"]


def test_blocks_of_one_name_on_two_hosts_are_two_clusters(tmp_path):
    """Two namespaces may each hold a cluster of that name: each host's block is replaced and dropped on its own."""
    path = tmp_path / "ray_address"
    team_a, team_b = HostRecord.of("kuberay", namespace="team-a"), HostRecord.of("kuberay", namespace="team-b")
    update([ClusterAddress("tuner", "http://10.0.0.1:8265", team_a)], path)
    update([ClusterAddress("tuner", "http://10.0.0.2:8265", team_b)], path)
    update([ClusterAddress("tuner", "http://10.0.0.3:8265", team_a)], path)
    assert [(block.dashboard_url, block.host) for block in read(path)] == [
        ("http://10.0.0.3:8265", team_a),
        ("http://10.0.0.2:8265", team_b),
    ]
    address_file.drop(["tuner"], path, team_b)
    assert [block.host for block in read(path)] == [team_a]


def test_what_our_tools_write_round_trips_with_its_host_and_gcs_address_and_ray_skips_it(tmp_path):
    path = tmp_path / "ray_address"
    block = ClusterAddress("c", "http://10.0.0.1:20001", HostRecord.of("slurm", state_dir="/a b"), "10.0.0.1:20000")
    write([block], path)
    (read_back,) = read(path)
    assert (read_back.host, read_back.gcs_address) == (block.host, "10.0.0.1:20000")
    awk = subprocess.run(["awk", "!/^#/{print $0}", str(path)], capture_output=True, text=True, check=True)
    assert awk.stdout == "http://10.0.0.1:20001\n"


def test_a_malformed_host_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "ray_address"
    path.write_text("# Cluster: c\n# Host: slurm state_dir\nhttp://10.0.0.1:8265\n")
    with pytest.raises(AddressFileError, match=rf"{re.escape(str(path))}:2: .*expected '# Host: KIND key=value"):
        read(path)


HOLDER = """
import fcntl, sys, time
with open(sys.argv[1], "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lock_held_too_long_is_an_error_naming_the_process_that_holds_it(tmp_path, monkeypatch):
    path = tmp_path / "ray_address"
    lock = tmp_path / ".ray_address.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        monkeypatch.setattr(address_file, "LOCK_TIMEOUT_S", 1.0)
        with pytest.raises(address_file.AddressFileBusy, match=rf"held its lock .* for 1 s \(process {holder.pid}: "):
            update([ClusterAddress("a", "http://10.0.0.1:8265")], path)
        assert not path.exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "folder", "big"])
def test_an_address_file_that_is_not_a_small_regular_file_is_refused_at_once(tmp_path, kind):
    """Read whole, /dev/zero would fill memory and a FIFO would hang the command: neither is opened for reading."""
    path = {"/dev/zero": Path("/dev/zero"), "fifo": tmp_path / "fifo", "folder": tmp_path, "big": tmp_path / "b"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "big":
        path.write_bytes(b"#" * (address_file.MAX_BYTES + 1))
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "multicluster_submit.py"), "--address_file", str(path), "x.py"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {path}: is ") and "not an address file" in result.stderr
