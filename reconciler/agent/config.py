"""The agent's own configuration: a YAML file local to the device (never in the fleet repo), checked against
``schemas/agent-config.schema.json``, with environment variables taking precedence."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import InvalidConfig, NotFound
from reconciler.fleet.document import Document, parse
from reconciler.fleet.schema import check
from reconciler.git.location import is_url, is_working_tree, local_path

ENV = {
    "RECONCILER_DEVICE": ("device",),
    "RECONCILER_REPO_URL": ("repo", "url"),
    "RECONCILER_REPO_BRANCH": ("repo", "branch"),
    "RECONCILER_REPO_PATH": ("repo", "path"),
    "RECONCILER_SSH_KEY": ("repo", "sshKey"),
    "RECONCILER_KNOWN_HOSTS": ("repo", "knownHosts"),
    "RECONCILER_TOKEN_FILE": ("repo", "tokenFile"),
    "RECONCILER_DATA_DIR": ("dataDir",),
    "RECONCILER_INTERVAL": ("interval",),
    "RECONCILER_JITTER": ("jitter",),
    "RECONCILER_DOCKER_HOST": ("dockerHost",),
    "RECONCILER_LOG_FORMAT": ("logFormat",),
}
_NUMBERS = {"interval", "jitter"}
DEFAULT_DATA_DIR = "/var/lib/reconciler"
DEFAULT_FULL_FETCH_EVERY = 10


@dataclass(frozen=True)
class RepoAccess:
    """A repository other than the fleet repo the agent talks to (``statusRepo``), and how."""

    url: str
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    token_file: Path | None = None
    username: str = "git"


@dataclass(frozen=True)
class Beacon:
    """``repo.beacon``: where the fleet branch's tip is announced, and how often to fetch regardless."""

    url: str
    full_fetch_every: int = DEFAULT_FULL_FETCH_EVERY
    timeout: float = 5.0


@dataclass(frozen=True)
class AgentConfig:
    path: Path | None
    device: str
    repo_url: str
    data_dir: Path
    branch: str = "main"
    repo_path: str = ""
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    token_file: Path | None = None
    username: str = "git"
    credentials: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    interval: float | None = None
    jitter: float | None = None
    docker_host: str | None = None
    git_timeout: float = 60.0
    pull_timeout: float = 600.0
    pull_min_rate: float = 1024.0  # bytes/s after pull_grace, else the download is cut and resumed
    pull_grace: float = 30.0
    runtime_options: Mapping[str, Any] = field(default_factory=dict)
    pass_timeout: float = 1800.0  # a pass running longer is hung: the watchdog stops, /healthz fails
    log_format: str = "text"
    api_listen: tuple[str, ...] | None = None  # None: the default socket DATA_DIR/agent.sock; (): no API
    allowed_signers: Path | None = None  # trust.allowedSigners: once set, nothing unsigned is applied
    model_keys: Mapping[str, Path] = field(default_factory=dict)  # trust.modelKeys
    status_repo: RepoAccess | None = None  # None: status branches go to the fleet repo
    mirrors: tuple[str, ...] = ()  # read-only fleet repo mirrors, tried before repo_url
    beacon: Beacon | None = None
    offline_watch: Path | None = None  # a directory (a mount point) where bundles to apply appear

    def local_repo_path(self) -> Path | None:
        """The fleet repository's directory when it is on this machine (watched for changes)."""
        return local_path(self.repo_url)


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    label = str(path) if path else "(environment)"
    doc = Document(label, data, {})
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise NotFound(f"{path}: cannot read the agent configuration: {exc.strerror}") from None
        parsed, problems = parse(label, raw)
        if parsed is None or problems:
            raise InvalidConfig(f"{label}: invalid agent configuration", problems)
        if not isinstance(parsed.data, dict):
            raise InvalidConfig(f"{label}: invalid agent configuration",
                                [parsed.problem((), "expected a mapping of settings")])
        doc = parsed
        data = doc.data
    from_env: dict[str, str] = {}
    for var, where in ENV.items():
        value = environ.get(var)
        if not value:
            continue
        node = data
        for part in where[:-1]:
            node = node.setdefault(part, {})
        node[where[-1]] = float(value) if where[-1] in _NUMBERS and _is_number(value) else value
        from_env[".".join(where)] = var
    problems = check(Document(label, data, doc.positions), "agent-config")
    if problems:
        # A value taken from the environment is not on any line of the file: name the variable instead.
        problems = [dataclasses.replace(p, file=f"${from_env[p.field]}", line=0, column=0)
                    if p.field in from_env else p for p in problems]
        raise InvalidConfig(f"{label}: invalid agent configuration", problems)
    base = path.parent if path else Path.cwd()

    def p(value: str | None) -> Path | None:
        return (base / Path(value).expanduser()) if value else None

    def location(url: str) -> str:
        return url if is_url(url) else str(base / Path(url).expanduser())

    repo = data["repo"]
    url = location(repo["url"])
    status = data.get("statusRepo")
    status_repo = None if status is None else RepoAccess(
        url=location(status["url"]), ssh_key=p(status.get("sshKey") or repo.get("sshKey")),
        known_hosts=p(status.get("knownHosts") or repo.get("knownHosts")),
        token_file=p(status.get("tokenFile") or repo.get("tokenFile")),
        username=status.get("username") or repo.get("username", "git"))
    beacon = repo.get("beacon")
    if isinstance(beacon, str):
        beacon = {"url": beacon}
    local = local_path(url)
    if local is not None and is_working_tree(local):
        raise InvalidConfig(f"{label}: invalid agent configuration", [doc.problem(
            ("repo", "url"), f"{local} is a git working tree: the agent pushes status/{data['device']} to its "
                             "repository, which libgit2 (the agent's git) cannot do into a non-bare one; point "
                             f"repo.url at a bare clone (git clone --bare {local} {local}.git) that the working "
                             "tree pushes to")])
    timeouts = data.get("timeouts") or {}
    return AgentConfig(
        path=path, device=data["device"], repo_url=url, data_dir=p(data.get("dataDir")) or Path(DEFAULT_DATA_DIR),
        branch=repo.get("branch", "main"), repo_path=repo.get("path", "").strip("/"),
        ssh_key=p(repo.get("sshKey")), known_hosts=p(repo.get("knownHosts")), token_file=p(repo.get("tokenFile")),
        username=repo.get("username", "git"),
        credentials={k: {kk: str(p(vv)) if kk.endswith("File") else vv for kk, vv in v.items()}
                     for k, v in (data.get("credentials") or {}).items()},
        interval=data.get("interval"), jitter=data.get("jitter"), docker_host=data.get("dockerHost"),
        git_timeout=float(timeouts.get("git", 60.0)), pull_timeout=float(timeouts.get("pull", 600.0)),
        pull_min_rate=float(timeouts.get("pullMinRate", 1024.0)), pull_grace=float(timeouts.get("pullGrace", 30.0)),
        runtime_options=dict(data.get("runtimeOptions") or {}),
        pass_timeout=float(timeouts.get("pass", 1800.0)), log_format=data.get("logFormat", "text"),
        api_listen=_listen(data.get("api"), base),
        allowed_signers=p((data.get("trust") or {}).get("allowedSigners")),
        model_keys={k: base / Path(v).expanduser() for k, v in ((data.get("trust") or {}).get("modelKeys") or {}).items()},
        status_repo=status_repo, mirrors=tuple(location(m) for m in repo.get("mirrors") or ()),
        beacon=None if beacon is None else Beacon(
            beacon["url"], int(beacon.get("fullFetchEvery", DEFAULT_FULL_FETCH_EVERY)),
            float(beacon.get("timeout", 5.0))),
        offline_watch=p((data.get("offline") or {}).get("watch")),
    )


def _listen(api: Mapping[str, Any] | None, base: Path) -> tuple[str, ...] | None:
    """``api.listen`` entries: a unix socket path (relative to the config file) or ``HOST:PORT``."""
    if api is None or "listen" not in api:
        return None
    return tuple(e if not e.startswith(("/", ".")) and ":" in e else str(base / e) for e in api["listen"])


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
