import os
import re
import stat
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

from ray_workflow import address_file
from ray_workflow.address_file import AddressFileError, ClusterAddress, read, update, write


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
    with pytest.raises(AddressFileError, match="is a directory"):
        read(tmp_path)
    with pytest.raises(AddressFileError, match="is a directory"):
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
    update([], path, remove=["b", "not-there"])
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
