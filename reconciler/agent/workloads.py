"""From a device's desired state to the workloads its runtime starts: every setting that validates reaches them.

    storage      filesystem: STORAGE_DRIVER=filesystem, STORAGE_PATH (created by the agent; bind-mounted
                 read-write at the same place by docker); s3: STORAGE_DRIVER=s3, S3_REGION, S3_BUCKET,
                 S3_PREFIX (from ``path``), AWS_REGION, AWS_ENDPOINT_URL (with ``endpoint``), and the
                 credential named by ``credentialsRef`` as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, added by
                 the runtime at start (never in the workload, the agent state, a log or the status).
                 No storage block: filesystem under DATA_DIR/storage (the Modzy seed's own advice).
    inferenceLog LOCAL_INFERENCE_STORAGE (bytes) and INFERENCE_LOG_PAGE_SIZE (rows), as Wallaroo's edge
                 LOCAL_INFERENCE_STORAGE and PLATEAU_PAGE_SIZE.
    port         MODEL_PORT, and MODEL_ADDRESS from ``publishAddress`` (default 127.0.0.1): docker publishes the
                 port on that address; a process is told where to listen.

Pure apart from ``prepare``, which creates the storage directories, and ``check_credentials``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.credentials import CredentialStore
from reconciler.errors import InvalidConfig, NotFound, Stalled
from reconciler.model import DesiredState, Workload
from reconciler.quantities import parse_size

DEFAULT_PUBLISH_ADDRESS = "127.0.0.1"


def storage_path(config: Mapping[str, Any], data_dir: Path) -> Path | None:
    """The filesystem storage directory (a relative path is taken under the data dir), or None for s3."""
    storage = config.get("storage") or {"driver": "filesystem"}
    if storage.get("driver") != "filesystem":
        return None
    path = (storage.get("filesystem") or {}).get("path") or "storage"
    return data_dir / path if not os.path.isabs(path) else Path(path)


def settings_env(config: Mapping[str, Any], data_dir: Path) -> dict[str, str]:
    """The environment that storage and inferenceLog settings give every workload of the device."""
    env: dict[str, str] = {}
    storage = config.get("storage") or {"driver": "filesystem"}
    if storage.get("driver") == "s3":
        s3 = storage.get("s3") or {}
        env.update(STORAGE_DRIVER="s3", S3_REGION=str(s3.get("region", "")), AWS_REGION=str(s3.get("region", "")),
                   S3_BUCKET=str(s3.get("bucket", "")), S3_PREFIX=str(s3.get("path", "")))
        if s3.get("endpoint"):
            env["AWS_ENDPOINT_URL"] = str(s3["endpoint"])
    else:
        env.update(STORAGE_DRIVER="filesystem", STORAGE_PATH=str(storage_path(config, data_dir)))
    log = config.get("inferenceLog") or {}
    if "localInferenceStorage" in log:
        env["LOCAL_INFERENCE_STORAGE"] = str(parse_size(log["localInferenceStorage"]))
        env["INFERENCE_LOG_PAGE_SIZE"] = str(int(log["pageSize"]))
    return env


def storage_credentials(config: Mapping[str, Any]) -> str | None:
    storage = config.get("storage") or {}
    if storage.get("driver") != "s3":
        return None
    ref = (storage.get("s3") or {}).get("credentialsRef")
    return str(ref) if ref else None


def build(desired: DesiredState, device: str, data_dir: Path, detectors_path: str) -> dict[str, Workload]:
    """One workload per model of ``desired``; the version's own env wins over the settings' variables."""
    runtime = str(desired.config.get("runtime", "process"))
    base_env = settings_env(desired.config, data_dir)
    address = str(desired.config.get("publishAddress") or DEFAULT_PUBLISH_ADDRESS)
    store = storage_path(desired.config, data_dir)
    creds = storage_credentials(desired.config)
    out: dict[str, Workload] = {}
    for m in desired.models:
        model_dir = data_dir / "models" / m.name / m.version if m.artifact else data_dir / "empty"
        env = dict(base_env)
        if m.port is not None:
            env.update(MODEL_PORT=str(m.port), MODEL_ADDRESS=address)
        env.update(dict(m.env))
        out[m.name] = Workload(
            device=device, model=m.name, version=m.version, model_dir=str(model_dir),
            detectors_config=detectors_path, command=m.command, image=m.image if runtime == "docker" else None,
            env=tuple(sorted(env.items())), port=m.port, health=m.health, resources=m.resources, reload=m.reload,
            registry=desired.registries.get(m.registry) if m.registry else None,
            publish_address=address, storage_dir=str(store) if store else None, storage_credentials=creds)
    return out


def check_credentials(desired: DesiredState, credentials: CredentialStore) -> None:
    """A storage credential the device does not hold fails the pass before anything is touched."""
    ref = storage_credentials(desired.config)
    if ref is None:
        return
    try:
        credential = credentials.resolve(ref)
    except NotFound as exc:
        raise NotFound(f"storage.s3.credentialsRef: {exc}") from None
    if credential is None or not credential.username or not (credential.password or credential.token):
        raise InvalidConfig(f"storage.s3.credentialsRef: credential {ref!r} needs a username (the access key id) "
                            "and a password or passwordFile (the secret access key)")


def prepare(workloads: Mapping[str, Workload]) -> None:
    """Create every filesystem storage directory, writable by the workload (which runs as this agent's user
    under the process runtime, and gets it bind-mounted under docker)."""
    for path in {w.storage_dir for w in workloads.values() if w.storage_dir}:
        assert path is not None
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(PermissionError):
                os.chmod(path, os.stat(path).st_mode | 0o700)
        except OSError as exc:
            raise Stalled(f"storage.filesystem.path {path}: cannot create it: {exc.strerror}") from None
