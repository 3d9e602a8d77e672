"""A signed fleet for agent trust tests: a work clone whose commits the real git CLI signs, a bare server repo
(file:// or gitolite), and one device whose model needs no artifact (process runtime, no registry)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler.main import main
from tests.trust.signing import Key, run_git, signed_commit

FLEET = "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: trusted}\nspec:\n  defaults: {runtime: process}\n"


def model_yaml(*versions: str) -> str:
    return yaml.safe_dump({"apiVersion": "fleet/v1", "kind": "Model", "metadata": {"name": "counter"}, "spec": {
        "versions": {v: {"command": ["python3", "-c", "import time; time.sleep(600)"], "env": {"V": v},
                         "health": {"aliveSeconds": 0.2}} for v in versions}}})


def group_yaml(version: str) -> str:
    return yaml.safe_dump({"apiVersion": "fleet/v1", "kind": "Group", "metadata": {"name": "all"},
                           "spec": {"models": [{"name": "counter", "version": version}]}})


@dataclass
class FleetLab:
    root: Path
    url: str  # where the device fetches (file:// path or ssh URL)
    device: str = "dev1"
    extra: dict[str, object] | None = None  # agent config keys to set (e.g. repo with sshKey)
    push_env: dict[str, str] | None = None  # e.g. GIT_SSH_COMMAND for a gitolite server

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def anchor(self) -> Path:
        return self.root / "allowed_signers"

    def init(self, key: Key | None, push: bool = True) -> str:
        self.work.mkdir(parents=True)
        run_git(self.work, "init", "-q", "-b", "main")
        sha = self.commit({"fleet.yaml": FLEET, "models/counter.yaml": model_yaml("1.0", "2.0", "3.0"),
                           "groups/all.yaml": group_yaml("1.0"),
                           f"devices/{self.device}.yaml": f"apiVersion: fleet/v1\nkind: Device\nmetadata: "
                                                          f"{{name: {self.device}}}\nspec: {{}}\n"},
                          "initial fleet", key, push=False)
        if push:
            run_git(self.work, "remote", "add", "origin", self.url)
            run_git(self.work, "push", "-q", "origin", "main", env=self.push_env)
        return sha

    def commit(self, files: dict[str, str | None], message: str, key: Key | None, push: bool = True,
               force: bool = False) -> str:
        sha = signed_commit(self.work, files, message, key)
        if push:
            run_git(self.work, "push", "-q", *(["--force"] if force else []), "origin", "main", env=self.push_env)
        return sha

    def trust(self, lines: list[str]) -> None:
        self.anchor.write_text("\n".join(lines) + "\n")

    def config(self) -> Path:
        path = self.root / "agent.yaml"
        doc: dict[str, object] = {"device": self.device, "repo": {"url": self.url}, "dataDir": str(self.data_dir),
                                  "interval": 1, "jitter": 0, "trust": {"allowedSigners": str(self.anchor)},
                                  "runtimeOptions": {"restartBackoff": 0.2, "stopGrace": 2}}
        doc.update(self.extra or {})
        path.write_text(yaml.safe_dump(doc))
        return path

    def run(self) -> int:
        return main(["agent", "--config", str(self.config()), "--once"])

    def status(self) -> dict[str, object]:
        mirror = self.data_dir / "fleet.git"
        text = run_git(mirror, "show", f"refs/heads/status/{self.device}:status.yaml").stdout
        doc = yaml.safe_load(text)
        assert isinstance(doc, dict)
        return doc

    def condition(self, ctype: str) -> dict[str, str]:
        conditions = self.status()["conditions"]
        assert isinstance(conditions, list)
        return dict(next(c for c in conditions if c["type"] == ctype))

    def running(self) -> str | None:
        models = self.status()["models"]
        assert isinstance(models, list)
        running = [m for m in models if m["state"] == "running"]
        return str(running[0]["version"]) if running else None
