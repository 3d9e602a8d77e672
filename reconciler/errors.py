"""The exception tree.  Every error a user can see derives from ``ReconcilerError``.

    ReconcilerError                 user-facing; the CLI prints it and exits 1
    ├── UsageError                  bad command line (exit 2)
    ├── Stalled                     terminal: retrying the same input cannot help
    │   ├── InvalidConfig           fleet repo, agent config or status file fails validation (has .problems)
    │   ├── NotFound                unknown device, model, revision, tag or blob
    │   ├── AuthError               the server refused our credentials (401/403)
    │   ├── IntegrityError          bytes do not match their digest, unsafe archive, tampered file
    │   │   └── Untrusted           a commit or model not signed by an allowed signer (trust/)
    │   ├── NonFastForward          fetched tip is not a descendant of the last applied commit
    │   ├── PushRejected            the git server refused a ref update
    │   └── RuntimeUnavailable      the configured runtime cannot run here (e.g. no Docker daemon)
    ├── Waiting                     retry after ``retry_after`` seconds (e.g. lock held, disk budget)
    │   ├── LockHeld
    │   └── DiskFull                ENOSPC / EDQUOT while writing: names the path
    └── Transient                   retry with backoff: network errors, timeouts, 5xx
        ├── DeadlineExceeded
        ├── DaemonUnreachable       no Docker daemon answers (stopped, restarting): it may come back
        └── Unexpected              any other exception out of one agent pass (a bug): logged with its
                                    traceback, reported, and the loop backs off and goes on

Third-party exceptions are translated into these at the adapter boundary (git, registry, runtimes).
Messages never contain secrets: adapters build them from names and references, never from credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located finding, printed as ``file:line:column: error: message (field.path)``."""

    file: str
    line: int
    column: int
    message: str
    field: str = ""
    severity: str = "error"

    def format(self) -> str:
        suffix = f" ({self.field})" if self.field else ""
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file  # line 0: not in a file
        return f"{where}: {self.severity}: {self.message}{suffix}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "message": self.message,
            "field": self.field,
        }


class ReconcilerError(Exception):
    """Base of every error shown to a user."""

    exit_code = 1
    reason = "Error"  # CamelCase, for status conditions


class UsageError(ReconcilerError):
    exit_code = 2


class Stalled(ReconcilerError):
    """Terminal: the same input will fail the same way."""

    reason = "Stalled"


class InvalidConfig(Stalled):
    reason = "ValidationFailed"

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.problems = tuple(problems)
        lines = [message, *(p.format() for p in self.problems)]
        super().__init__("\n".join(lines))
        self.summary = message


class NotFound(Stalled):
    reason = "NotFound"


class AuthError(Stalled):
    reason = "AuthenticationFailed"


class IntegrityError(Stalled):
    reason = "IntegrityCheckFailed"


class Untrusted(IntegrityError):
    reason = "VerificationFailed"


class NonFastForward(Stalled):
    reason = "NonFastForward"


class PushRejected(Stalled):
    reason = "PushRejected"


class RuntimeUnavailable(Stalled):
    reason = "RuntimeUnavailable"


class Waiting(ReconcilerError):
    reason = "Waiting"

    def __init__(self, message: str, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LockHeld(Waiting):
    reason = "LockHeld"


class DiskFull(Waiting):
    reason = "DiskFull"

    def __init__(self, message: str, retry_after: float = 60.0) -> None:
        super().__init__(message, retry_after)


class Transient(ReconcilerError):
    """Retry with bounded exponential backoff."""

    reason = "TransientError"


class DeadlineExceeded(Transient):
    reason = "DeadlineExceeded"


class DaemonUnreachable(Transient):
    reason = "DaemonUnreachable"


class Unexpected(Transient):
    reason = "InternalError"
