"""A bundle that must not apply changes nothing: tampered, truncated, unsigned or foreign-signed, rewound,
made for another device.  And the layout inside is a standard OCI layout: skopeo reads and copies it."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agentlab import Lab
from tests.bundle.conftest import apply, create, device_files, offline_config, sign_every_commit, signing_key
from tests.fleetutil import git
from tests.services.registry import RegistryServer

pytestmark = pytest.mark.integration


def blob_offset(bundle: Path) -> tuple[int, int]:
    """Offset and size of the largest OCI blob's bytes inside an uncompressed bundle."""
    with tarfile.open(bundle) as tar:
        biggest = max((m for m in tar.getmembers() if m.name.startswith("oci/blobs/")), key=lambda m: m.size)
        return biggest.offset_data, biggest.size


def rewrite(src: Path, dst: Path, name: str, change: Callable[[bytes], bytes]) -> Path:
    """A copy of the bundle ``src`` with member ``name``'s bytes changed (its tar header follows the size)."""
    with tarfile.open(src) as original, tarfile.open(dst, "w") as copy:
        for m in original.getmembers():
            f = original.extractfile(m)
            body = f.read() if f else b""
            if m.name == name:
                body = change(body)
                m.size = len(body)
            copy.addfile(m, io.BytesIO(body))
    return dst


def test_tampered_and_truncated_bundles_change_nothing(lab: Lab, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = offline_config(lab)
    good = tmp_path / "good.tar"
    assert create(lab, good, "--device", "dev1") == 0
    before = device_files(lab)

    tampered = tmp_path / "tampered.tar"
    data = bytearray(good.read_bytes())
    offset, size = blob_offset(good)
    data[offset + size // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    capsys.readouterr()
    assert apply(config, tampered) == 1
    err = capsys.readouterr().err
    assert "tampered.tar: member oci/blobs/sha256/" in err and "was changed" in err and "Traceback" not in err
    assert device_files(lab) == before

    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[: offset + size // 2])
    assert apply(config, truncated) == 1
    assert "truncated" in capsys.readouterr().err
    assert device_files(lab) == before

    # a changed index.json: the member hashes in manifest.json catch it before any git or blob is used
    index_changed = rewrite(good, tmp_path / "index.tar", "oci/index.json",
                            lambda body: body.replace(b'"schemaVersion": 2', b'"schemaVersion": 3'))
    assert apply(config, index_changed) == 1
    assert "member oci/index.json was changed" in capsys.readouterr().err
    assert device_files(lab) == before

    assert apply(config, good) == 0
    assert device_files(lab) != before


def test_with_trust_set_unsigned_bundles_and_unsigned_commits_are_refused(
        lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    key, signers = signing_key(tmp_path, "admin")
    other, _ = signing_key(tmp_path, "intruder")
    sign_every_commit(monkeypatch, key)
    git(lab.work, "commit", "-q", "--amend", "--no-edit")  # the lab's first commit, signed now
    git(lab.work, "push", "-q", "--force", "origin", "main")
    config = offline_config(lab, trust={"allowedSigners": str(signers)})
    unsigned, foreign, signed = tmp_path / "unsigned.tar", tmp_path / "foreign.tar", tmp_path / "signed.tar"
    assert create(lab, unsigned, "--device", "dev1") == 0
    assert create(lab, foreign, "--device", "dev1", "--sign-key", str(other)) == 0
    assert create(lab, signed, "--device", "dev1", "--sign-key", str(key)) == 0
    before = device_files(lab)
    capsys.readouterr()
    assert apply(config, unsigned) == 1
    assert "unsigned, and this device accepts only bundles signed" in capsys.readouterr().err
    assert apply(config, foreign) == 1
    assert "does not allow for bundles" in capsys.readouterr().err
    assert device_files(lab) == before

    # a manifest changed after signing (here: its sequence) fails the signature
    def resequence(body: bytes) -> bytes:
        doc = json.loads(body)
        doc["sequence"] += 1
        return json.dumps(doc).encode()

    resigned = rewrite(signed, tmp_path / "resigned.tar", "manifest.json", resequence)
    assert apply(config, resigned) == 1
    assert "the signature does not match manifest.json" in capsys.readouterr().err
    assert device_files(lab) == before
    assert apply(config, signed) == 0
    assert "signed by admin@fleet" in capsys.readouterr().out
    applied = json.loads((lab.data_dir / "state.json").read_text())["appliedCommit"]

    # a signed bundle that carries an unsigned commit: the pass's trust check refuses the commit
    monkeypatch.setenv("GIT_CONFIG_VALUE_2", "false")
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "unsigned pin 2.0")
    assert create(lab, tmp_path / "unsigned-commit.tar", "--device", "dev1", "--sign-key", str(key)) == 0
    capsys.readouterr()
    assert apply(config, tmp_path / "unsigned-commit.tar") == 1
    out = capsys.readouterr().out
    assert "not ready" in out and "unsigned" in out.lower()
    state = json.loads((lab.data_dir / "state.json").read_text())
    assert state["appliedCommit"] == applied and state["models"]["counter"]["version"] == "1.0"
    assert not (lab.data_dir / "models/counter/2.0").exists()


def test_rewound_history_and_foreign_device_are_refused(lab: Lab, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = offline_config(lab)
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "pin 2.0")
    assert create(lab, tmp_path / "b2.tar", "--device", "dev1") == 0
    assert apply(config, tmp_path / "b2.tar") == 0
    applied = git(lab.server, "rev-parse", "main")
    # someone rewrites main on the server: drop the 2.0 commit and commit something else
    git(lab.work, "reset", "-q", "--hard", "HEAD~1")
    # (Lab.commit pushes without force, so this push is made by hand)
    (lab.work / "devices/dev3.yaml").write_text("apiVersion: fleet/v1\nkind: Device\nmetadata: {name: dev3}\nspec: {}\n")
    git(lab.work, "add", "-A")
    git(lab.work, "commit", "-qm", "rewritten")
    git(lab.work, "push", "-q", "--force", "origin", "main")
    assert create(lab, tmp_path / "rewound.tar", "--device", "dev1") == 0
    assert create(lab, tmp_path / "dev2.tar", "--device", "dev2") == 0
    before = device_files(lab)
    capsys.readouterr()
    assert apply(config, tmp_path / "rewound.tar") == 1
    err = capsys.readouterr().err
    assert f"is not a descendant of the applied commit {applied[:12]}" in err and "rewind" in err
    assert apply(config, tmp_path / "dev2.tar") == 1
    assert "made for dev2, not for dev1" in capsys.readouterr().err
    assert device_files(lab) == before


def test_since_needs_history_the_device_has(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = offline_config(lab)
    first = git(lab.server, "rev-parse", "main")
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "pin 2.0")
    assert create(lab, tmp_path / "thin.tar", "--device", "dev1", "--since", first) == 0
    before = device_files(lab)
    capsys.readouterr()
    assert apply(config, tmp_path / "thin.tar") == 1
    assert f"its history starts after {first[:12]}" in capsys.readouterr().err
    assert device_files(lab) == before


def test_oci_layout_is_read_by_skopeo_and_zstd_bundles_apply(lab: Lab, tmp_path: Path,
                                                            registry: tuple[RegistryServer, dict[str, str]]) -> None:
    bundle = tmp_path / "b.tar.zst"
    assert create(lab, bundle, "--device", "dev1", "--zstd") == 0
    assert bundle.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    # standard tools: zstd and tar unpack it, skopeo reads and copies the layout
    out = tmp_path / "unpacked"
    out.mkdir()
    tar = tmp_path / "b.tar"
    subprocess.run(["zstd", "-q", "-d", str(bundle), "-o", str(tar)], check=True)
    subprocess.run(["tar", "-xf", str(tar), "-C", str(out)], check=True)
    ref = lab.refs["1.0"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out / 'oci'}:{ref}"], check=True,
                         capture_output=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == ref.split("@")[1]
    copied = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{out / 'oci'}:{ref}", f"dir:{copied}"], check=True,
                   capture_output=True)
    layers = json.loads(raw)["layers"]
    for layer in layers:
        assert (copied / layer["digest"].split(":")[1]).stat().st_size == layer["size"]
    # and the zstd bundle applies like a plain one
    assert apply(offline_config(lab), bundle) == 0
    assert (lab.data_dir / "models/counter/1.0/weights.bin").is_file()
