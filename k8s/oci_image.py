"""Packs a folder into a one-layer OCI image archive that ``ctr images import`` reads, named by its
``io.containerd.image.name`` annotation. The layer is GNU tar's, uncompressed, with numeric owners and fixed
times, so the same folder gives the same image. Standard library only: the build runs before any venv exists.

    python3 k8s/oci_image.py ROOTFS NAME OUT.tar [--env K=V]... [--cmd ARG]...
"""

import argparse
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path


def _blob(archive: tarfile.TarFile, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def pack(rootfs: Path, name: str, out: Path, env: list[str], cmd: list[str]) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        layer = Path(scratch) / "layer.tar"
        subprocess.run(
            [
                "tar",
                "--create",
                "--file",
                str(layer),
                "--directory",
                str(rootfs),
                "--numeric-owner",
                "--sort=name",
                "--mtime=2026-01-01 00:00Z",
                "--xattrs",
                "--exclude=./dev/*",
                ".",
            ],
            check=True,
        )
        digest = hashlib.sha256()
        with layer.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        layer_digest = f"sha256:{digest.hexdigest()}"
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": env, "Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w") as archive:
            archive.add(layer, arcname=f"blobs/sha256/{layer_digest.split(':')[1]}")
            layer_descriptor = {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer.stat().st_size,
            }
            config_descriptor = _blob(archive, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_descriptor,
                "layers": [layer_descriptor],
            }
            manifest_descriptor = _blob(
                archive, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
            )
            manifest_descriptor["annotations"] = {"io.containerd.image.name": name}
            index = {"schemaVersion": 2, "manifests": [manifest_descriptor]}
            for file_name, content in (("oci-layout", {"imageLayoutVersion": "1.0.0"}), ("index.json", index)):
                data = json.dumps(content).encode()
                info = tarfile.TarInfo(file_name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        partial.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("name")
    parser.add_argument("out", type=Path)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--cmd", action="append", default=[])
    args = parser.parse_args()
    pack(args.rootfs, args.name, args.out, args.env, args.cmd)


if __name__ == "__main__":
    main()
