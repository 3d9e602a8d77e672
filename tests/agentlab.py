"""A small lab for agent tests: a real registry with published model artifacts, a bare fleet repository, a
work clone to commit to, and a device's agent configuration."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reconciler.main import main
from tests.fleetutil import ROOT, git

SERVE = ROOT / "examples/model-server/serve.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publish(registry_address: str, workdir: Path, repo: str, tag: str, weights: bytes,
            extra: dict[str, bytes] | None = None) -> str:
    """Push serve.py + weights.bin (+ ``extra`` files) as an artifact; returns the pinned reference."""
    src = workdir / f"src-{repo.replace('/', '-')}-{tag}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "serve.py").write_bytes(SERVE.read_bytes())
    (src / "weights.bin").write_bytes(weights)
    for name, data in (extra or {}).items():
        (src / name).write_bytes(data)
    files = [str(src / "serve.py"), str(src / "weights.bin"), *(str(src / n) for n in extra or {})]
    out = subprocess.run(
        [str(Path(__import__("sys").executable)), "-m", "reconciler", "publish", *files,
         "--to", f"{registry_address}/{repo}:{tag}"],
        check=True, capture_output=True, text=True, cwd=workdir)
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Lab:
    root: Path
    registry: str
    refs: dict[str, str]
    device: str = "dev1"
    port: int = field(default_factory=free_port)

    @property
    def server(self) -> Path:
        return self.root / "server.git"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def data_dir(self) -> Path:
        return self.root / f"data-{self.device}"

    def config_path(self, device: str | None = None, **extra: object) -> Path:
        device = device or self.device
        path = self.root / f"agent-{device}.yaml"
        doc = {"device": device, "repo": {"url": str(self.server)}, "dataDir": str(self.root / f"data-{device}"),
               "interval": 1, "jitter": 0, "runtimeOptions": {"restartBackoff": 0.2, "stopGrace": 2}}
        doc.update(extra)
        path.write_text(yaml.safe_dump(doc))
        return path

    def model_yaml(self, versions: dict[str, dict[str, object]]) -> str:
        out = {"apiVersion": "fleet/v1", "kind": "Model", "metadata": {"name": "counter"},
               "spec": {"versions": {}}}
        for v, extra in versions.items():
            entry: dict[str, object] = {
                "artifact": self.refs[v],
                "command": ["python3", "${MODEL_DIR}/serve.py", "--port", "${MODEL_PORT}"],
                "port": self.port, "health": {"path": "/healthz", "timeout": 10}}
            entry.update(extra)
            out["spec"]["versions"][v] = entry  # type: ignore[index]
        return yaml.safe_dump(out)

    def group_yaml(self, version: str | None, detectors: list[dict[str, object]] | None = None,
                   name: str = "all") -> str:
        spec: dict[str, object] = {"models": [{"name": "counter", "version": version}] if version else []}
        if detectors is not None:
            spec["detectors"] = detectors
        return yaml.safe_dump({"apiVersion": "fleet/v1", "kind": "Group", "metadata": {"name": name}, "spec": spec})

    def setup(self) -> None:
        self.work.mkdir(parents=True)
        files = {
            "fleet.yaml": textwrap.dedent("""\
                apiVersion: fleet/v1
                kind: Fleet
                metadata: {name: lab}
                spec:
                  defaults: {runtime: process}
                  status: {heartbeatInterval: 1h}
                """),
            "models/counter.yaml": self.model_yaml({v: {} for v in self.refs}),
            "groups/all.yaml": self.group_yaml("1.0", [{"detector_id": "det_a00000000000000000000000000", "model": "counter"}]),
            "devices/dev1.yaml": "apiVersion: fleet/v1\nkind: Device\nmetadata: {name: dev1}\nspec: {}\n",
            "devices/dev2.yaml": "apiVersion: fleet/v1\nkind: Device\nmetadata: {name: dev2}\nspec: {}\n",
        }
        for rel, text in files.items():
            p = self.work / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        git(self.work, "init", "-q", "-b", "main")
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", "initial fleet")
        subprocess.run(["git", "clone", "-q", "--bare", str(self.work), str(self.server)], check=True)
        git(self.work, "remote", "add", "origin", str(self.server))

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        for rel, text in files.items():
            p = self.work / rel
            if text is None:
                p.unlink()
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", message)
        git(self.work, "push", "-q", "origin", "main")
        return git(self.work, "rev-parse", "HEAD")

    def run(self, device: str | None = None) -> int:
        return main(["agent", "--config", str(self.config_path(device)), "--once"])

    def status(self, device: str | None = None) -> dict[str, object]:
        text = git(self.server, "show", f"refs/heads/status/{device or self.device}:status.yaml")
        doc = yaml.safe_load(text)
        assert isinstance(doc, dict)
        return doc

    def status_commits(self, device: str | None = None) -> int:
        return int(git(self.server, "rev-list", "--count", f"refs/heads/status/{device or self.device}"))

    def get(self, path: str, port: int | None = None) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port or self.port}{path}", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), ""
        except OSError:
            return 0, ""


@contextlib.contextmanager
def stop_workloads(*data_dirs: Path) -> Iterator[None]:
    try:
        yield
    finally:
        from reconciler.runtimes.process import ProcessRuntime

        for d in data_dirs:
            if not (d / "process").exists():
                continue
            rt = ProcessRuntime(d, {"stopGrace": 2})
            for entry in (d / "process").iterdir():
                device = entry.name.split("--")[0]
                for o in rt.observe(device):
                    rt.stop(o)


@contextlib.contextmanager
def counter_registry(workdir: Path, versions: tuple[str, ...], repeat: int) -> Iterator[tuple[str, dict[str, str]]]:
    """A real registry with ``models/counter`` published at ``versions``: (address, {version: pinned ref})."""
    from tests.services.registry import run_registry

    with run_registry(workdir) as reg:
        yield reg.address, {v: publish(reg.address, workdir, "models/counter", v, f"weights {v}".encode() * repeat)
                            for v in versions}


@contextlib.contextmanager
def running_lab(root: Path, artifacts: tuple[str, dict[str, str]], *more_data_dirs: Path) -> Iterator[Lab]:
    """A set-up ``Lab`` whose workloads (and those under ``more_data_dirs``) are stopped at the end."""
    lab = Lab(root, *artifacts)
    lab.setup()
    with stop_workloads(lab.data_dir, *more_data_dirs):
        yield lab
