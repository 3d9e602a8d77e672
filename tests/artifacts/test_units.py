"""Pure logic of the artifact store: references, manifest paths, guarded archive extraction."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from reconciler.artifacts.archive import extract
from reconciler.artifacts.manifest import Descriptor, parse_manifest, safe_relative_path
from reconciler.artifacts.reference import Reference
from reconciler.artifacts.registry import RegistryClient, is_loopback
from reconciler.errors import IntegrityError, InvalidConfig
from reconciler.model import RegistryConfig

DIGEST = "sha256:" + "ab" * 32


def test_reference_parse_and_format() -> None:
    ref = Reference.parse(f"127.0.0.1:5000/models/det:v1@{DIGEST}")
    assert (ref.registry, ref.host, ref.port, ref.repository, ref.tag, ref.digest) == (
        "127.0.0.1:5000", "127.0.0.1", 5000, "models/det", "v1", DIGEST)
    assert str(ref) == f"127.0.0.1:5000/models/det:v1@{DIGEST}"
    assert str(ref.pinned(DIGEST)) == f"127.0.0.1:5000/models/det@{DIGEST}"
    assert Reference.parse("registry.example.com/a/b").target == "latest"
    assert Reference.parse("localhost/a").port is None


@pytest.mark.parametrize("text", ["", "det:v1", "docker.io", "host.example/Bad", "h.example/a@sha256:12",
                                  "h.example/a:bad tag", "h.example/a:-x"])
def test_reference_rejects_bad_input(text: str) -> None:
    with pytest.raises(InvalidConfig, match="invalid OCI reference"):
        Reference.parse(text)


def test_transport_follows_docker_rules() -> None:
    loop = Reference.parse("127.0.0.5:5000/a:b")
    remote = Reference.parse("registry.example.com/a:b")
    assert is_loopback("localhost") and is_loopback("127.9.9.9") and not is_loopback("10.0.0.1")
    assert RegistryClient(None, None).transport(loop) == ("http", True)
    assert RegistryClient(None, None).transport(remote) == ("https", True)
    plain = RegistryConfig("r", "registry.example.com", plain_http=True)
    assert RegistryClient(plain, None).transport(remote) == ("http", True)
    ca = RegistryConfig("r", "127.0.0.5", 5000, ca_file="/ca.pem")
    assert RegistryClient(ca, None).transport(loop) == ("https", "/ca.pem")
    skip = RegistryConfig("r", "registry.example.com", skip_tls_verify=True)
    assert RegistryClient(skip, None).transport(remote) == ("https", False)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "", "a\\b", "a/.."])
def test_unsafe_titles_are_refused(name: str) -> None:
    with pytest.raises(IntegrityError, match="unsafe path"):
        safe_relative_path(name, "layer title")


def test_manifest_parsing_refuses_bad_descriptors() -> None:
    good = b'{"layers": [{"mediaType": "x", "digest": "%s", "size": 3}]}' % DIGEST.encode()
    assert parse_manifest(good, DIGEST, "m").total_size == 3
    negative = b'{"layers": [{"digest": "%s", "size": -1}]}' % DIGEST.encode()
    md5 = b'{"layers": [{"digest": "md5:00", "size": 1}]}'
    for bad in (md5, negative, b"not json", b'{"manifests": []}'):
        with pytest.raises(IntegrityError):
            parse_manifest(bad, DIGEST, "m")


def test_archive_detection_follows_oras_conventions() -> None:
    assert Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", DIGEST, 1).is_archive == "tar+gzip"
    # oras-py labels every plain file ".tar": such a layer stays a file unless asked to unpack.
    assert Descriptor("application/vnd.oci.image.layer.v1.tar", DIGEST, 1).is_archive is None
    unpack = (("io.deis.oras.content.unpack", "true"),)
    assert Descriptor("application/vnd.oci.image.layer.v1.tar", DIGEST, 1, unpack).is_archive == "tar"


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_archive_extracts_files_links_and_records_digests(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tgz", [
        (_info("bundle", tarfile.DIRTYPE), None),
        (_info("bundle/run.py"), b"print('hi')\n"),
        (_info("bundle/current", tarfile.SYMTYPE, "run.py"), None),
        (_info("bundle/copy.py", tarfile.LNKTYPE, "bundle/run.py"), None),
    ])
    out = tmp_path / "out"
    out.mkdir()
    result = extract(archive, out, compression="tar+gzip", max_bytes=1000, what="t")
    assert (out / "bundle/current").read_text() == "print('hi')\n"
    assert (out / "bundle/copy.py").read_text() == "print('hi')\n"
    assert set(result.files) == {"bundle/run.py", "bundle/copy.py"}
    assert result.links == {"bundle/current": "run.py"}


@pytest.mark.parametrize("members, message", [
    ([(_info("/abs"), b"x")], "unsafe path"),
    ([(_info("a/../../escape"), b"x")], "unsafe path"),
    ([(_info("up", tarfile.SYMTYPE, "../outside"), None)], "leave the version directory"),
    ([(_info("abs", tarfile.SYMTYPE, "/etc"), None)], "leave the version directory"),
    # a link chain: "d" -> "." is fine alone, but "d/x" -> ".." would climb out through it
    ([(_info("d", tarfile.SYMTYPE, "."), None), (_info("d/x", tarfile.SYMTYPE, ".."), None)],
     "leave the version directory"),
    ([(_info("hard", tarfile.LNKTYPE, "/etc/passwd"), None)], "unsafe path"),
    ([(_info("hard", tarfile.LNKTYPE, "nothing-before"), None)], "does not name a file"),
    ([(_info("dev", tarfile.CHRTYPE), None)], "device, fifo"),
    ([(_info("big"), b"x" * 600), (_info("big2"), b"y" * 600)], "cap of 1000 bytes"),
])
def test_archive_guards(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
                        message: str) -> None:
    archive = _tar(tmp_path / "evil.tgz", members)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match=message):
        extract(archive, out, compression="tar+gzip", max_bytes=1000, what="layer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz", "out"]


def test_archive_refuses_sibling_prefix_escape(tmp_path: Path) -> None:
    """oras-py's string check lets '/out2' pass for '/out'; a symlink to a sibling must not work."""
    (tmp_path / "out2").mkdir()
    archive = _tar(tmp_path / "sib.tar", [(_info("s", tarfile.SYMTYPE, "../out2"), None),
                                          (_info("s/pwned"), b"x")], gz=False)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError):
        extract(archive, out, compression="tar", max_bytes=1000, what="layer")
    assert not (tmp_path / "out2" / "pwned").exists()


def test_corrupt_archive_is_an_integrity_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(IntegrityError, match="not a valid tar\\+gzip archive"):
        extract(bad, tmp_path, compression="tar+gzip", max_bytes=1000, what="layer")


def test_cli_verbs_do_not_load_oras_until_they_run() -> None:
    import subprocess
    import sys

    code = ("import sys, reconciler.main as m; m.build_parser(); "
            "print(sorted(k for k in ('oras', 'reconciler.artifacts.registry') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
