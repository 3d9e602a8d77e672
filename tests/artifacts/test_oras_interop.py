"""A directory published by ``reconciler publish`` carries the annotations ORAS clients unpack by, and oras-py (a
real ORAS client) pulls the same tree as our ``pull`` (real registry on loopback)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import oras.client
import pytest
import requests

from reconciler.artifacts import Reference, RegistryClient
from reconciler.artifacts.packing import DIGEST
from reconciler.main import main
from tests.services.registry import RegistryServer

pytestmark = pytest.mark.integration


def tree(root: Path) -> dict[str, bytes]:
    """The files under ``root``, without our store's own record of an activated version."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".reconciler-")}


def test_published_directory_unpacks_the_same_in_oras_clients(registry: RegistryServer, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    bundle = src / "bundle"
    (bundle / "nested" / "deeper").mkdir(parents=True)
    (bundle / "serve.py").write_text("print('serving')\n")
    (bundle / "nested" / "labels.txt").write_text("cat\ndog\n")
    (bundle / "nested" / "deeper" / "weights.bin").write_bytes(bytes(range(256)) * 100)
    (src / "config.json").write_text('{"threshold": 0.8}')
    assert main(["publish", str(bundle), str(src / "config.json"), "--to", registry.ref("models/dir", "v1")]) == 0
    pinned = capsys.readouterr().out.strip().splitlines()[-1]

    manifest = RegistryClient(None, None).get_manifest(Reference.parse(pinned))
    layer = next(d for d in manifest.layers if d.title == "bundle")
    annotations = dict(layer.annotations)
    assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert annotations["io.deis.oras.content.unpack"] == "true"
    blob = requests.get(f"http://{registry.address}/v2/models/dir/blobs/{layer.digest}", timeout=10).content
    # the digest of the uncompressed tar, which the Go ORAS file store checks before it unpacks
    assert annotations[DIGEST] == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    plain = next(d for d in manifest.layers if d.title == "config.json")
    assert "io.deis.oras.content.unpack" not in dict(plain.annotations)

    theirs = tmp_path / "oras-py"
    oras.client.OrasClient(insecure=True).pull(target=pinned, outdir=str(theirs))
    data = tmp_path / "data"
    assert main(["pull", pinned, "--data-dir", str(data), "--model", "dir", "--version", "1"]) == 0
    ours = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert tree(theirs) == tree(ours) == {
        "bundle/serve.py": b"print('serving')\n", "bundle/nested/labels.txt": b"cat\ndog\n",
        "bundle/nested/deeper/weights.bin": bytes(range(256)) * 100, "config.json": b'{"threshold": 0.8}'}
