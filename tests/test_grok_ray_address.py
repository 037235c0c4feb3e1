"""``grok_ray_address.sh``: addresses the user types, written as blocks, or refused in one line when they are not
addresses."""

import subprocess

from conftest import PROJECT_ROOT

from ray_workflow import address_file
from ray_workflow.grok import main as discovery_main


def test_grok_ray_address_writes_given_heads(tmp_path):
    output = tmp_path / "ray_address"
    result = subprocess.run(
        [
            str(PROJECT_ROOT / "grok_ray_address.sh"),
            "--address",
            "10.0.0.5:6379",
            "--cluster_name",
            "lab-box",
            "--address",
            "http://10.0.0.6:8265",
            "--cluster_name",
            "desk",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert address_file.read(output) == [
        address_file.ClusterAddress("lab-box", "http://10.0.0.5:8265"),
        address_file.ClusterAddress("desk", "http://10.0.0.6:8265"),
    ]


def test_grok_ray_address_refuses_a_bad_address_in_one_line_without_echoing_credentials(tmp_path, capsys):
    output = tmp_path / "ray_address"
    code = discovery_main(["ray", "--address", "http://me:hunter2@10.0.0.5:notaport", "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2 and "is not a Ray address" in err and "hunter2" not in err and not output.exists()
    code = discovery_main(
        ["ray", "--address", "10.0.0.5:8265", "--cluster_name", "two\nlines", "--output", str(output)]
    )
    assert code == 2 and "cannot be written" in capsys.readouterr().err and not output.exists()
