"""A real Docker engine for tests: Debian's ``dockerd`` started in a temp dir, as root.

Isolation from any other dockerd on the machine (a system one, or another test session's):
- its own ``--data-root``, ``--exec-root``, ``--pidfile``, socket and config file (an empty daemon.json);
- its own Linux bridge (unique name, random 10.x.y.0/24 subnet) passed as ``--bridge``, never ``docker0``;
- ``--iptables=false --ip-masq=false --ip-forward=false``: the global iptables chains and sysctls stay
  untouched.  Ports published on 127.0.0.1 still work: the userland proxy (``docker-proxy``, on by
  default) listens on the host address and connects to the container over the bridge, which is local
  traffic and needs neither NAT nor forwarding.  Containers get no route out of the host (none is needed).

``run_dockerd`` and the image helpers are free of pytest, so that ``bench/`` and the demo can use them; the
session fixtures ``dockerd`` and ``busybox_image`` wrap them (dockerd takes a few seconds to start).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"
# Applets linked into the test image's /bin (busybox-static provides all of them).
APPLETS = ("sh", "httpd", "sleep", "cat", "echo", "ls", "wget", "env", "kill", "true", "false", "mkdir")


@dataclass(frozen=True)
class DockerDaemon:
    host: str  # unix:///.../docker.sock, usable as DOCKER_HOST or as DockerRuntime's "dockerHost"
    data_root: Path
    exec_root: Path
    bridge: str
    subnet: str
    pid: int
    log: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        """Run the docker CLI against this daemon; returns stdout."""
        proc = subprocess.run(["docker", *args], env=self.env, input=input, capture_output=True, timeout=120)
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")[-2000:]
            raise RuntimeError(f"docker {' '.join(args)} failed: {err}")
        return proc.stdout.decode(errors="replace")


def _ping(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(4096).rstrip().endswith(b"OK")
    except OSError:
        return False


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that overlaps no address or route on this host."""
    used = []
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    out += subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for word in out.split():
        with contextlib.suppress(ValueError):
            if "/" in word or word.count(".") == 3:
                used.append(ipaddress.ip_network(word, strict=False))
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free 10.x.y.0/24 subnet for a test docker bridge")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _unmount_under(*roots: Path) -> None:
    """dockerd normally unmounts its overlays at exit; after a SIGKILL it cannot, and rm -rf would fail."""
    prefixes = tuple(str(r) + "/" for r in roots)
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted(points, key=len, reverse=True):
        if point.startswith(prefixes):
            subprocess.run(["umount", "-l", point], capture_output=True)


@contextmanager
def run_dockerd(workdir: Path, *, start_timeout: float = 60.0) -> Iterator[DockerDaemon]:
    """Start a private dockerd (root required); on exit remove its containers, stop it, delete its bridge."""
    binary = shutil.which("dockerd")
    if binary is None:
        raise RuntimeError("dockerd is not installed (run scripts/install-system-deps.sh: Debian docker.io)")
    if os.geteuid() != 0:
        raise RuntimeError("dockerd needs root")
    workdir.mkdir(parents=True, exist_ok=True)
    data_root = workdir / "data"
    # Unix socket paths are limited to 108 bytes and containerd nests sockets deep under the exec root.
    exec_root = Path(tempfile.mkdtemp(prefix="rcdk-", dir="/tmp"))
    sock = exec_root / "docker.sock"
    config = workdir / "daemon.json"
    config.write_text("{}\n")
    log = workdir / "dockerd.log"
    bridge = "rcbr" + secrets.token_hex(4)
    subnet = _free_subnet()
    gateway = next(subnet.hosts())
    _ip("link", "add", "name", bridge, "type", "bridge")
    proc: subprocess.Popen[bytes] | None = None
    try:
        _ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        args = [
            binary,
            f"--data-root={data_root}",
            f"--exec-root={exec_root / 'exec'}",
            f"--pidfile={exec_root / 'docker.pid'}",
            f"--host=unix://{sock}",
            f"--config-file={config}",
            f"--bridge={bridge}",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--log-level=warn",
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        deadline = time.monotonic() + start_timeout
        while not _ping(sock):
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"dockerd did not answer within {start_timeout:g}s: {tail}")
            time.sleep(0.1)
        yield DockerDaemon(f"unix://{sock}", data_root, exec_root, bridge, str(subnet), proc.pid, log)
    finally:
        if proc is not None:
            _stop(proc, sock)
        _unmount_under(data_root, exec_root)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", bridge)
        shutil.rmtree(exec_root, ignore_errors=True)
        shutil.rmtree(data_root, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes], sock: Path) -> None:
    if proc.poll() is None and _ping(sock):
        env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
        ids = subprocess.run(["docker", "ps", "-aq"], env=env, capture_output=True, text=True, timeout=30)
        if ids.stdout.split():
            subprocess.run(["docker", "rm", "-f", "-v", *ids.stdout.split()], env=env, capture_output=True,
                           timeout=60)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # The whole session: dockerd, its containerd and shims, so nothing outlives the tests.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def build_busybox_image(daemon: DockerDaemon, workdir: Path, tag: str, changes: Sequence[str] = ()) -> str:
    """``docker import`` a rootfs holding Debian's static busybox and applet links; returns the image id.

    ``changes`` are Dockerfile instructions applied at import (``CMD [...]``, ``HEALTHCHECK ...``).
    """
    rootfs = workdir / "rootfs"
    if not rootfs.exists():
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        (rootfs / "www").mkdir()
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], check=True, capture_output=True).stdout
    flags = [arg for change in changes for arg in ("--change", change)]
    return daemon.docker("import", *flags, "-", tag, input=tar).strip()


def push_image(daemon: DockerDaemon, image: str, target: str) -> str:
    """Tag ``image`` as ``target`` (``127.0.0.1:PORT/repo:tag``), push it, and return ``repo@sha256:...``.

    dockerd allows plain HTTP (and unverified TLS) for registries on 127.0.0.0/8 without configuration.
    The caller logs in first (``docker login``) when the registry wants credentials.
    """
    daemon.docker("tag", image, target)
    daemon.docker("push", target)
    fmt = "{{range .RepoDigests}}{{println .}}{{end}}"
    digests = daemon.docker("image", "inspect", target, "--format", fmt)
    repo = target.rsplit(":", 1)[0]
    for line in digests.split():
        if line.startswith(repo + "@"):
            return line
    raise RuntimeError(f"no digest recorded for {target} after push: {digests!r}")


try:
    import pytest
except ImportError:  # pragma: no cover - run_dockerd is usable without pytest
    pass
else:

    @pytest.fixture(scope="session")
    def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
        with run_dockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
            yield daemon

    @pytest.fixture(scope="session")
    def busybox_image(dockerd: DockerDaemon, tmp_path_factory: pytest.TempPathFactory) -> str:
        """A local busybox image (``reconciler-test/busybox:1``); returns its tag."""
        tag = "reconciler-test/busybox:1"
        build_busybox_image(dockerd, tmp_path_factory.mktemp("busybox-image"), tag)
        return tag
