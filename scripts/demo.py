"""make demo: the whole loop on one machine, on the embedded defaults (process runtime), in a temp dir.

A local OCI registry (Debian's docker-registry) gets the example models; a bare git repository gets the example
fleet (fleet-config/); two simulated devices run `reconciler agent --once`; `reconciler status` shows them; a
commit changes model versions (`reconciler plan` shows its effect first); the agents run again; `status` and
`history` show what changed, and who asked for it.  Everything started is stopped at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEVICES = ("cam-north-01", "cam-south-01")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def run(*args: str, cwd: Path | None = None, check: bool = True, show: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    if show:
        print(f"{DIM}$ {shown}{RESET}", flush=True)
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env)
    if show:
        out = (result.stdout + result.stderr).rstrip()
        if out:
            print(out, flush=True)
    if check and result.returncode not in (0,):
        raise SystemExit(f"demo: command failed ({result.returncode}): {shown}\n{result.stderr}")
    return result


def reconciler(*args: str, check: bool = True, cwd: Path | None = None,
               show: bool = True) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "reconciler", *args, check=check, cwd=cwd, show=show)


def ensure_registry() -> None:
    if shutil.which("docker-registry"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing Debian's docker-registry (the local OCI registry for the demo)")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "docker-registry"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        return
    raise SystemExit("demo: needs Debian's docker-registry; run: sudo apt-get install -y docker-registry")


def free_port_base() -> int:
    """A port offset whose model ports (8101..8103 + offset) are free, so the demo never collides."""
    for offset in range(20000, 40000, 500):
        ok = True
        for port in (8101 + offset, 8102 + offset, 8103 + offset, 9101 + offset, 9102 + offset, 9103 + offset):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    ok = False
        if ok:
            return offset
    return 20000


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Dana Operator", "GIT_AUTHOR_EMAIL": "dana@acme.example",
           "GIT_COMMITTER_NAME": "Dana Operator", "GIT_COMMITTER_EMAIL": "dana@acme.example"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def publish_models(registry: str, work: Path) -> dict[tuple[str, str], str]:
    import yaml

    pinned = {}
    for path in sorted((ROOT / "fleet-config/models").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        name = doc["metadata"]["name"]
        for version in doc["spec"]["versions"]:
            src = work / "artifacts" / name / version
            src.mkdir(parents=True)
            shutil.copy(ROOT / "examples/model-server/serve.py", src / "serve.py")
            (src / "weights.bin").write_bytes(f"{name} {version} weights\n".encode() * 4096)
            out = reconciler("publish", str(src / "serve.py"), str(src / "weights.bin"),
                             "--to", f"{registry}/models/{name}:{version}",
                             "--annotation", f"org.opencontainers.image.version={version}", show=False)
            pinned[(name, version)] = out.stdout.strip().splitlines()[-1]
            print(f"  published {name} {version} -> {pinned[(name, version)]}")
    return pinned


def make_fleet(work: Path, registry: str, pinned: dict[tuple[str, str], str], offset: int) -> Path:
    fleet = work / "fleet"
    shutil.copytree(ROOT / "fleet-config", fleet)
    host, port = registry.split(":")
    fy = fleet / "fleet.yaml"
    text = fy.read_text().replace("host: registry.acme.example", f"host: {host}").replace("port: 5000", f"port: {port}")
    text = text.replace("path: /var/lib/edge-models/jobs", f"path: {work / 'jobs'}")  # job data stays in the temp dir
    fy.write_text(re.sub(r"\n\s*credentialsRef: acme-registry[^\n]*", "", text))  # the demo registry is open
    for path in (fleet / "models").glob("*.yaml"):
        name = path.stem
        lines, version = [], None
        for line in path.read_text().splitlines():
            m = re.match(r'\s+"([^"]+)":$', line)
            if m:
                version = m.group(1)
            if line.strip().startswith("artifact:") and version:
                digest = pinned[(name, version)].split("@")[1]
                line = re.sub(r"@sha256:[0-9a-f]{64}", f"@{digest}", line)
            lines.append(line)
        path.write_text("\n".join(lines) + "\n")
    for i, device in enumerate(DEVICES):
        dev = fleet / "devices" / f"{device}.yaml"
        dev.write_text(dev.read_text().replace("  groups: []\n", f"  groups: []\n  config:\n    portOffset: {offset + 1000 * i}\n"))
    git(fleet, "init", "-q", "-b", "main")
    git(fleet, "add", "-A")
    git(fleet, "commit", "-qm", "Initial fleet: ACME stores")
    bare = work / "fleet.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(fleet), str(bare)], check=True)
    shutil.copy(ROOT / "hooks/pre-receive", bare / "hooks/pre-receive")
    git(fleet, "remote", "add", "origin", str(bare))
    return fleet


def agent_config(work: Path, device: str, bare: Path) -> Path:
    path = work / f"agent-{device}.yaml"
    # the pilot group stores results in S3: its credential is held on the device (a made-up one: the demo's
    # models never call S3), never in the fleet repo
    secret = work / "s3-secret"
    secret.write_text("demo-secret-key\n")
    secret.chmod(0o600)
    path.write_text(f"device: {device}\nrepo:\n  url: {bare}\ndataDir: {work / ('data-' + device)}\n"
                    "interval: 60\njitter: 10\n"
                    f"credentials:\n  acme-pilot-s3: {{username: AKIDEMOEXAMPLE, passwordFile: {secret}}}\n")
    return path


def run_agents(work: Path, bare: Path) -> None:
    for device in DEVICES:
        reconciler("agent", "--config", str(agent_config(work, device, bare)), "--once", "--log-level", "WARNING",
                   check=False)


def stop_everything(work: Path) -> None:
    from reconciler.runtimes.process import ProcessRuntime

    for device in DEVICES:
        data = work / f"data-{device}"
        if (data / "process").exists():
            rt = ProcessRuntime(data, {"stopGrace": 3})
            for o in rt.observe(device):
                rt.stop(o)


def main() -> int:
    started = time.monotonic()
    ensure_registry()
    from tests.services.registry import run_registry

    work = Path(tempfile.mkdtemp(prefix="reconciler-demo-"))
    # the demo's own bin dir first, so the pre-receive hook finds this reconciler
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    try:
        with run_registry(work / "registry") as reg:
            say(f"a local OCI registry is up at {reg.address}; publishing the example models with ORAS")
            pinned = publish_models(reg.address, work)

            say("the fleet repository: fleet-config/ with this registry and these digests, as a bare git repo")
            fleet = make_fleet(work, reg.address, pinned, free_port_base())
            bare = work / "fleet.git"
            reconciler("validate", str(fleet))

            say(f"two devices run `reconciler agent --once` (process runtime): {', '.join(DEVICES)}")
            run_agents(work, bare)
            say("what the fleet runs, read from the status branches")
            reconciler("status", "--repo", str(bare), check=False)

            say("an operator upgrades people-counter for every store and rolls the pilot's shelf-detector back")
            for rel, old, new in (("groups/all.yaml", 'version: "1.0.0"', 'version: "1.1.0"'),
                                  ("groups/pilot.yaml", 'version: "2.0.0"', 'version: "1.0.0"')):
                p = fleet / rel
                p.write_text(p.read_text().replace(old, new, 1))
            git(fleet, "commit", "-qam", "people-counter 1.1.0 everywhere; pilot back to shelf-detector 1.0.0")
            reconciler("plan", "HEAD~1", "HEAD", "--repo", str(fleet))
            git(fleet, "push", "-q", "origin", "main")

            say("an invalid change is refused by the server's pre-receive hook")
            p = fleet / "groups/pilot.yaml"
            p.write_text(p.read_text().replace('version: "1.0.0"', 'version: "7.0"', 1))
            git(fleet, "commit", "-qam", "typo")
            push = subprocess.run(["git", "push", "origin", "main"], cwd=fleet, capture_output=True, text=True)
            print("\n".join(line for line in push.stderr.splitlines() if "error" in line or "refused" in line))
            git(fleet, "reset", "-q", "--hard", "HEAD~1")

            say("the devices pick the change up")
            run_agents(work, bare)
            reconciler("status", "--repo", str(bare), check=False)
            say("history: what ran on cam-north-01, and who asked for it")
            reconciler("history", "--device", "cam-north-01", "--repo", str(bare), check=False)
    finally:
        stop_everything(work)
        shutil.rmtree(work, ignore_errors=True)
    say(f"done in {time.monotonic() - started:.0f}s; everything started was stopped and {work} removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
