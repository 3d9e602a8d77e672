"""The bundle container without servers: manifest fields checked by name, members checked against it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from reconciler.bundle import bundlefile
from reconciler.bundle.format import BundleManifest, Member, parse
from reconciler.bundle.unpack import read_bundle
from reconciler.errors import IntegrityError

OID = "a" * 40
INDEX = b'{"schemaVersion": 2, "manifests": []}\n'


def manifest(listed: tuple[Member, ...], **extra: object) -> bytes:
    m = BundleManifest(kind="FleetBundle", sequence=1, created="2026-01-01T00:00:00Z", branch="main", commit=OID,
                       members=listed, refs={"refs/heads/main": OID}, devices=("dev1",))
    doc = json.loads(m.to_json())
    doc.update(extra)
    return json.dumps(doc).encode()


def index_member(body: bytes = INDEX) -> Member:
    return Member("oci/index.json", len(body), hashlib.sha256(body).hexdigest())


def write(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with bundlefile.writer(path) as tar:
        for name, body in members:
            bundlefile.add_bytes(tar, name, body)
    return path


@pytest.mark.parametrize(("change", "field"), [
    ({"format": "other/v9"}, "format"), ({"kind": "Bundle"}, "kind"), ({"sequence": -1}, "sequence"),
    ({"commit": "main"}, "commit"), ({"since": 3}, "since"), ({"refs": {"HEAD": OID}}, "refs"),
    ({"members": [{"path": "../etc/passwd", "size": 1, "sha256": "0" * 64}]}, "members[0].path"),
    ({"members": [{"path": f"oci/blobs/sha256/{'1' * 64}", "size": 1, "sha256": "2" * 64}]}, "members[0].sha256"),
])
def test_manifest_fields_are_checked_by_name(change: dict[str, object], field: str) -> None:
    with pytest.raises(IntegrityError, match=re.escape(f"b.tar:manifest.json: field '{field}'")):
        parse(manifest((), **change), "b.tar:manifest.json")


def test_a_listed_member_reads_and_an_unlisted_one_is_refused(tmp_path: Path) -> None:
    good = write(tmp_path / "good.tar", [("manifest.json", manifest((index_member(),))), ("oci/index.json", INDEX)])
    unpacked = read_bundle(good, tmp_path / "s1", kind="FleetBundle")
    assert (unpacked.staging / "oci/index.json").read_bytes() == INDEX and unpacked.signer is None

    extra = write(tmp_path / "extra.tar", [("manifest.json", manifest((index_member(),))), ("oci/index.json", INDEX),
                                           ("oci/oci-layout", b"{}")])
    with pytest.raises(IntegrityError, match=re.escape("member 'oci/oci-layout' is not listed in manifest.json")):
        read_bundle(extra, tmp_path / "s2", kind="FleetBundle")
    assert not (tmp_path / "s2").exists()


def test_first_member_kind_and_missing_members(tmp_path: Path) -> None:
    first = write(tmp_path / "first.tar", [("oci/index.json", INDEX), ("manifest.json", manifest(()))])
    with pytest.raises(IntegrityError, match=re.escape("the first member must be manifest.json")):
        read_bundle(first, tmp_path / "s1", kind="FleetBundle")
    short = write(tmp_path / "short.tar", [("manifest.json", manifest((index_member(),)))])
    with pytest.raises(IntegrityError, match="truncated: 1 member"):
        read_bundle(short, tmp_path / "s2", kind="FleetBundle")
    with pytest.raises(IntegrityError, match="is a FleetBundle, expected a StatusBundle"):
        read_bundle(short, tmp_path / "s3", kind="StatusBundle")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(IntegrityError, match=r"truncated or not a bundle|first member"):
        read_bundle(tmp_path / "junk.tar", tmp_path / "s4", kind="FleetBundle")
