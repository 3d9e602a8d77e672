"""The process runtime against real processes: supervisors, restarts, adoption, health, stop, reload."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import InvalidConfig, NotFound
from reconciler.model import HealthCheck, Observed, Resources, Workload
from reconciler.runtimes import get_runtime, health
from reconciler.runtimes.process import ProcessRuntime
from reconciler.runtimes.process_spec import cpu_affinity, expand
from reconciler.runtimes.supervisor import proc_start_ticks

PY = sys.executable
FAST = {"restartBackoff": 0.2, "restartBackoffMax": 0.8, "restartResetAfter": 0.5, "stopGrace": 0.5}


# -- helpers -------------------------------------------------------------------------------------------
def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    """A pid counts as alive unless it is gone or a zombie (an exited process nobody reaped yet)."""
    return proc_start_ticks(pid) is not None


def pids_under(root: Path) -> list[int]:
    """Every live process whose command line or cwd lies under ``root``: our supervisors and commands."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (str(root) in cmdline or cwd.startswith(str(root))) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def state_of(data_dir: Path, observed: Observed) -> dict[str, Any]:
    (path,) = [p for p in (data_dir / "process").iterdir() if f"--{observed.spec_hash}--" in p.name]
    doc: dict[str, Any] = json.loads((path / "state.json").read_text())
    return doc


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The agent's data dir.  At teardown every supervisor is stopped through the runtime, and whatever is
    still alive under tmp_path afterwards is killed and reported: a test must leave no process behind."""
    data = tmp_path / "data"
    yield data
    rt = ProcessRuntime(data, {"stopGrace": 0.5})
    for _path, spec in rt._entries():
        rt.stop(Observed(spec["model"], spec["version"], spec["specHash"], "", "running"))
    leftovers = pids_under(tmp_path)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running: {leftovers}"


@pytest.fixture
def make_workload(tmp_path: Path) -> Callable[..., Workload]:
    def make(model: str, command: tuple[str, ...], **fields: Any) -> Workload:
        model_dir = tmp_path / "models" / model
        model_dir.mkdir(parents=True, exist_ok=True)
        return Workload(
            device="edge-1",
            model=model,
            version=fields.pop("version", "1.0"),
            model_dir=str(model_dir),
            detectors_config=str(tmp_path / "detectors.yaml"),
            command=command,
            **fields,
        )

    return make


def py(code: str) -> tuple[str, ...]:
    return (PY, "-c", code)


SLEEPER = py("import time; time.sleep(300)")


# -- pure helpers --------------------------------------------------------------------------------------
def test_cpu_affinity_takes_ceil_of_cpus_within_allowed_cores() -> None:
    assert len(cpu_affinity(1.5, "a", allowed=[0, 1, 2, 3])) == 2
    assert len(cpu_affinity(0.1, "a", allowed=[0, 1, 2, 3])) == 1
    assert cpu_affinity(16, "a", allowed=[2, 5]) == [2, 5]
    assert set(cpu_affinity(2, "b", allowed=[4, 6, 8])) <= {4, 6, 8}


def test_expand_replaces_known_references_and_leaves_the_rest() -> None:
    env = {"MODEL_DIR": "/m"}
    assert expand("${MODEL_DIR}/weights.bin", env) == "/m/weights.bin"
    assert expand("${UNKNOWN} $MODEL_DIR", env) == "${UNKNOWN} $MODEL_DIR"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_http_check_reports_status_and_refused_connection() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        ok = health.http_check(f"{base}/ok", timeout=2)
        assert ok.healthy and "200" in ok.message
        bad = health.http_check(f"{base}/busy", timeout=0.5, probe=lambda: "exited with code 4")
        assert not bad.healthy
        assert "HTTP 503" in bad.message and "exited with code 4" in bad.message
    finally:
        server.shutdown()
        server.server_close()
    refused = health.http_check(f"http://127.0.0.1:{free_port()}/ok", timeout=0.5)
    assert not refused.healthy and "connection refused" in refused.message


def test_runtime_is_registered_under_process(tmp_path: Path) -> None:
    assert get_runtime("process", tmp_path, {}).name == "process"


def test_half_written_and_foreign_state_dirs_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "data" / "process"
    (root / ".tmp-edge-1--m--1--0123456789abcdef-aa").mkdir(parents=True)
    (root / ".tmp-edge-1--m--1--0123456789abcdef-aa" / "spec.json").write_text('{"device": "ed')
    (root / "not-ours").mkdir()
    (root / "not-ours" / "keep.txt").write_text("x")
    (root / "garbage--fedcba9876543210").mkdir()
    (root / "garbage--fedcba9876543210" / "spec.json").write_text("{not json")
    # A power cut after the rename and before the supervisor wrote its state: a spec, no state.
    cut = root / "edge-1--m--1--1111111111111111"
    cut.mkdir()
    spec = {"device": "edge-1", "model": "m", "version": "1", "specHash": "1111111111111111"}
    (cut / "spec.json").write_text(json.dumps(spec))
    rt = ProcessRuntime(tmp_path / "data", {})
    (observed,) = rt.observe("edge-1")
    assert (observed.model, observed.state) == ("m", "exited")
    assert "supervisor not running" in observed.message
    assert rt.observe("edge-2") == []
    rt.stop(observed)
    assert not cut.exists()
    assert (root / "not-ours" / "keep.txt").read_text() == "x"
    assert (root / "garbage--fedcba9876543210" / "spec.json").exists()


def test_missing_executable_is_a_clear_error(data_dir: Path, make_workload: Callable[..., Workload]) -> None:
    rt = ProcessRuntime(data_dir, FAST)
    with pytest.raises(NotFound, match="'no-such-model-server' not found"):
        rt.start(make_workload("m", ("no-such-model-server", "--port", "1")))
    with pytest.raises(NotFound, match=r"'\./serve\.sh' not found"):
        rt.start(make_workload("m", ("./serve.sh",)))
    with pytest.raises(InvalidConfig, match="no command"):
        rt.start(make_workload("m", ()))
    assert rt.observe("edge-1") == []


# -- real supervisors ----------------------------------------------------------------------------------
REPORT = """
import json, os, resource, sys, time
doc = {"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:],
       "cpus": sorted(os.sched_getaffinity(0)), "data_limit": resource.getrlimit(resource.RLIMIT_DATA)[0]}
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f)
os.rename(tmp, sys.argv[1])
print("line one"); print("line two", flush=True)
time.sleep(300)
"""


@pytest.mark.integration
def test_start_gives_the_command_its_env_cwd_and_resource_limits(
    data_dir: Path, make_workload: Callable[..., Workload], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_CRED_REGISTRY_PASSWORD", "s3cr3t-agent-only")
    monkeypatch.setenv("TZ", "UTC")
    w = make_workload(
        "detector",
        (PY, "-c", REPORT, "${MODEL_DIR}/report.json"),
        env=(("THRESHOLD", "0.7"),),
        resources=Resources(cpus=1, memory="512m", gpus=1),
    )
    rt = ProcessRuntime(data_dir, FAST)
    observed = rt.start(w)
    report_path = Path(w.model_dir) / "report.json"
    wait_for(report_path.exists, what="report.json")
    report = json.loads(report_path.read_text())
    env = report["env"]
    assert env["MODEL_NAME"] == "detector" and env["MODEL_VERSION"] == "1.0"
    assert env["MODEL_DIR"] == w.model_dir and env["DETECTORS_CONFIG"] == w.detectors_config
    assert env["THRESHOLD"] == "0.7" and env["TZ"] == "UTC"
    assert "RECONCILER_CRED_REGISTRY_PASSWORD" not in env
    assert set(env) <= {"MODEL_NAME", "MODEL_VERSION", "MODEL_DIR", "DETECTORS_CONFIG", "THRESHOLD",
                        "PATH", "LANG", "HOME", "TZ", "LC_CTYPE"}  # fmt: skip
    assert report["cwd"] == w.model_dir
    assert report["argv"] == [str(report_path)]
    assert len(report["cpus"]) == 1
    assert report["data_limit"] == 512 * 2**20
    assert observed.state == "running" and observed.restarts == 0
    assert "gpus hint ignored" in observed.message
    assert "s3cr3t" not in "".join(p.read_text() for p in (data_dir / "process").rglob("*.json"))

    (now,) = rt.observe("edge-1")
    assert now.state == "running" and now.handle == observed.handle
    assert now.memory_bytes is not None and now.memory_bytes > 1 << 20
    assert now.cpu_percent is not None and 0 <= now.cpu_percent <= 100
    assert wait_for(lambda: rt.logs(now, 2) == "line one\nline two", what="log tail")


@pytest.mark.integration
def test_http_health_is_ok_on_2xx_and_names_the_status_otherwise(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    port = free_port()
    w = make_workload(
        "web",
        (PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"),
        port=port,
        health=HealthCheck(path="/healthz", timeout=10),
    )
    Path(w.model_dir, "healthz").write_text("ok")
    rt = ProcessRuntime(data_dir, FAST)
    observed = rt.start(w)
    ok = rt.check_health(w, observed)
    assert ok.healthy, ok.message
    elsewhere = dataclasses.replace(w, health=HealthCheck(path="/missing", timeout=0.5))
    wrong = rt.check_health(elsewhere, observed)
    assert not wrong.healthy
    assert "HTTP 404" in wrong.message and f"127.0.0.1:{port}/missing" in wrong.message


@pytest.mark.integration
def test_alive_check_fails_for_a_command_that_exits_at_once(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    rt = ProcessRuntime(data_dir, FAST)
    quitter = make_workload("quitter", py("import sys; sys.exit(3)"), health=HealthCheck(alive_seconds=1))
    result = rt.check_health(quitter, rt.start(quitter))
    assert not result.healthy
    assert "exit code 3" in result.message or "exited with code 3" in result.message
    stayer = make_workload("stayer", SLEEPER, health=HealthCheck(alive_seconds=0.5))
    assert rt.check_health(stayer, rt.start(stayer)).healthy


CRASHER = """
import os, sys, time
log = os.path.join(os.environ["MODEL_DIR"], "runs.log")
with open(log, "a") as f:
    f.write(f"start {time.time()}\\n")
runs = sum(1 for line in open(log) if line.startswith("start"))
if runs == 5:
    time.sleep(0.7)  # longer than restartResetAfter: the next delay starts from the beginning again
with open(log, "a") as f:
    f.write(f"exit {time.time()}\\n")
sys.exit(7)
"""


@pytest.mark.integration
def test_crashing_command_is_restarted_with_doubling_capped_backoff_that_resets(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    rt = ProcessRuntime(data_dir, FAST)
    w = make_workload("crasher", py(CRASHER))
    rt.start(w)
    runs = Path(w.model_dir) / "runs.log"
    wait_for(lambda: runs.exists() and runs.read_text().count("start") >= 6, timeout=15, what="6 starts")
    events = [(kind, float(t)) for kind, t in (line.split() for line in runs.read_text().splitlines())]
    starts = [t for kind, t in events if kind == "start"]
    exits = [t for kind, t in events if kind == "exit"]
    delays = [starts[i + 1] - exits[i] for i in range(5)]
    # restartBackoff 0.2, doubled, capped at 0.8: 0.2 0.4 0.8 0.8; after a 0.7s run (> 0.5) back to 0.2.
    # Load only adds latency (interpreter start-up), so the lower bounds are tight; the upper ones stay below
    # what a missing cap (1.6) or a missing reset (0.8) would give.
    for got, want in zip(delays, [0.2, 0.4, 0.8, 0.8, 0.2], strict=True):
        assert want - 0.02 <= got <= want + 0.5, delays
    (observed,) = rt.observe("edge-1")
    assert observed.restarts >= 5
    assert "exited with code 7" in rt.logs(observed, 50)


@pytest.mark.integration
def test_workload_outlives_the_agent_and_the_next_agent_adopts_it(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    w = make_workload("adopted", SLEEPER)
    # The first agent is a separate process that starts the workload and exits, like `agent --once`.
    script = (
        "import sys, pickle; from reconciler.runtimes.process import ProcessRuntime;"
        "w = pickle.loads(bytes.fromhex(sys.argv[2]));"
        "print(ProcessRuntime(sys.argv[1], {}).start(w).handle)"
    )
    agent = subprocess.run(
        [PY, "-c", script, str(data_dir), pickle.dumps(w).hex()], capture_output=True, text=True, check=True
    )
    handle = agent.stdout.strip()
    rt = ProcessRuntime(data_dir, FAST)
    (observed,) = rt.observe("edge-1")
    assert observed.state == "running" and observed.handle == handle
    child = state_of(data_dir, observed)["childPid"]
    again = rt.start(w)  # the loop asking for what already runs gets the same workload, not a second one
    assert again.handle == handle and again.restarts == 0
    assert state_of(data_dir, again)["childPid"] == child
    supervisors = [p for p in pids_under(data_dir) if b"reconciler.runtimes.supervisor" in _cmdline(p)]
    assert supervisors == [int(handle)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.integration
def test_stale_state_dir_whose_pid_was_reused_is_not_adopted_and_the_process_is_untouched(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    rt = ProcessRuntime(data_dir, FAST)
    w = make_workload("stale", SLEEPER)
    observed = rt.start(w)
    state = state_of(data_dir, observed)
    # Power cut: supervisor and command die without a word.
    os.kill(state["supervisorPid"], signal.SIGKILL)
    os.killpg(state["childPid"], signal.SIGKILL)
    wait_for(lambda: not alive(state["childPid"]) and not alive(state["supervisorPid"]), what="the kill")
    # After the reboot an unrelated process holds the recorded pids (even with the recorded start time).
    stranger = subprocess.Popen(["sleep", "60"], process_group=0)
    try:
        state_file = next((data_dir / "process").glob(f"*{observed.spec_hash}*")) / "state.json"
        state.update(supervisorPid=stranger.pid, supervisorStart=proc_start_ticks(stranger.pid),
                     childPid=stranger.pid)  # fmt: skip
        state_file.write_text(json.dumps(state))
        (seen,) = rt.observe("edge-1")
        assert seen.state == "exited" and "supervisor not running" in seen.message
        assert seen.memory_bytes is None
        with pytest.raises(NotFound):
            rt.reload(seen)
        restarted = rt.start(w)  # replaces the stale dir cleanly
        assert restarted.state == "running" and restarted.handle != str(stranger.pid)
        rt.stop(restarted)
        assert stranger.poll() is None, "an unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


FAMILY = """
import os, signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
helper = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300"])
with open("pids", "w") as f:
    f.write(f"{os.getpid()} {helper.pid}")
time.sleep(300)
"""


@pytest.mark.integration
def test_stop_takes_down_the_whole_process_group_and_is_idempotent(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    rt = ProcessRuntime(data_dir, FAST)
    w = make_workload("family", py(FAMILY))
    observed = rt.start(w)
    pids_file = Path(w.model_dir) / "pids"
    wait_for(lambda: pids_file.exists() and " " in pids_file.read_text(), what="pids file")
    child, helper = map(int, pids_file.read_text().split())
    supervisor = int(observed.handle)
    assert all(alive(p) for p in (supervisor, child, helper))
    started = time.monotonic()
    rt.stop(observed)
    assert time.monotonic() - started < 5
    assert not any(alive(p) for p in (supervisor, child, helper))
    assert rt.observe("edge-1") == []
    assert list((data_dir / "process").iterdir()) == []
    rt.stop(observed)  # already gone: not an error


RELOADABLE = """
import os, signal, time
def on_hup(signum, frame):
    open("reloaded", "a").write("hup\\n")
signal.signal(signal.SIGHUP, on_hup)
open("ready", "w").close()
while True:
    time.sleep(1)
"""


@pytest.mark.integration
def test_reload_delivers_sighup_to_the_command_without_restarting_it(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    rt = ProcessRuntime(data_dir, FAST)
    w = make_workload("reloadable", py(RELOADABLE))
    observed = rt.start(w)
    wait_for(Path(w.model_dir, "ready").exists, what="ready marker")
    rt.reload(observed)
    marker = Path(w.model_dir, "reloaded")
    wait_for(lambda: marker.exists() and marker.read_text() == "hup\n", what="reload marker")
    (now,) = rt.observe("edge-1")
    assert now.state == "running" and now.restarts == 0 and now.started_at == observed.started_at


@pytest.mark.integration
def test_two_versions_run_side_by_side_and_the_output_log_is_capped(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    rt = ProcessRuntime(data_dir, {**FAST, "logMaxBytes": 8192})
    chatty = "import time\nfor i in range(2000): print(f'line {i:05d}', flush=True)\ntime.sleep(300)"
    old = rt.start(make_workload("m", py(chatty), version="1.0"))
    new = rt.start(make_workload("m", SLEEPER, version="2.0"))
    assert {o.version for o in rt.observe("edge-1") if o.state == "running"} == {"1.0", "2.0"}
    assert wait_for(lambda: rt.logs(old, 1) == "line 01999", what="last line")
    size = sum(p.stat().st_size for p in (data_dir / "process").glob(f"*{old.spec_hash}*/output.log*"))
    assert 4096 <= size <= 8192
    rt.stop(old)
    assert [o.version for o in rt.observe("edge-1")] == ["2.0"]
    assert rt.observe("edge-1")[0].handle == new.handle


@pytest.mark.integration
def test_supervisor_whose_state_dir_was_deleted_stops_its_command(
    data_dir: Path, make_workload: Callable[..., Workload]
) -> None:
    rt = ProcessRuntime(data_dir, FAST)
    observed = rt.start(make_workload("deleted", SLEEPER))
    state = state_of(data_dir, observed)
    shutil.rmtree(next((data_dir / "process").glob(f"*{observed.spec_hash}*")))
    wait_for(lambda: not alive(state["supervisorPid"]) and not alive(state["childPid"]), what="both to exit")
    assert rt.observe("edge-1") == []
