"""git's SSH ``allowed_signers`` file (ssh-keygen(1), ALLOWED SIGNERS), parsed strictly and located.

    principals [options] keytype base64-key [comment]
    options: cert-authority, namespaces="git,file", valid-after="YYYYMMDD[HHMM[SS]][Z]", valid-before=...

Times without ``Z`` are local time, as ssh-keygen reads them.  A ``cert-authority`` line parses, but
signatures made with certificates are refused (unsupported), so such a line vouches for nothing.
A line that does not parse is an error naming the file, the line and the field: a device never skips a
line it cannot read (ssh-keygen warns and skips; for a trust anchor a skipped line is a surprise).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.errors import InvalidConfig, Problem
from reconciler.trust.sshsig import BadSignature, PublicKey

MAX_BYTES = 1024 * 1024
_TIME = re.compile(r"^(\d{8})(\d{4})?(\d{2})?(Z)?$", re.IGNORECASE)
_OPTIONS = ("cert-authority", "namespaces", "valid-after", "valid-before")


@dataclass(frozen=True)
class Entry:
    principals: tuple[str, ...]
    key: PublicKey
    namespaces: tuple[str, ...] | None = None  # None: every namespace
    valid_after: float | None = None
    valid_before: float | None = None
    cert_authority: bool = False
    where: str = ""  # file:line, for messages


@dataclass(frozen=True)
class Match:
    """What the file says about one key at one time for one namespace."""

    principals: tuple[str, ...]  # empty unless the key is allowed
    problem: str = ""  # UnknownKey | ExpiredKey | KeyNotYetValid | NamespaceNotAllowed
    detail: str = ""


@dataclass(frozen=True)
class AllowedSigners:
    entries: tuple[Entry, ...] = ()

    def __add__(self, other: AllowedSigners) -> AllowedSigners:
        return AllowedSigners(self.entries + other.entries)

    def match(self, key: PublicKey, namespace: str, when: float) -> Match:
        principals: list[str] = []
        problem, detail = "UnknownKey", f"no allowed signer has key {key.fingerprint}"
        for e in self.entries:
            if e.key != key or e.cert_authority:
                continue
            if e.namespaces is not None and namespace not in e.namespaces:
                problem, detail = "NamespaceNotAllowed", f"{e.where}: key not allowed for namespace {namespace!r}"
                continue
            if e.valid_before is not None and when >= e.valid_before:
                problem, detail = "ExpiredKey", (f"{e.where}: key expired {_iso(e.valid_before)}, "
                                                 f"signed {_iso(when)}")
                continue
            if e.valid_after is not None and when < e.valid_after:
                problem, detail = "KeyNotYetValid", (f"{e.where}: key valid only after {_iso(e.valid_after)}, "
                                                     f"signed {_iso(when)}")
                continue
            principals.extend(p for p in e.principals if p not in principals)
        if principals:
            return Match(tuple(principals))
        return Match((), problem, detail)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_time(value: str) -> float | None:
    m = _TIME.match(value)
    if not m:
        return None
    day, hm, sec, utc = m.groups()
    text = day + (hm or "0000") + (sec or "00")
    try:
        parts = time.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return float(calendar.timegm(parts)) if utc else time.mktime(parts)


def _tokens(line: str) -> list[tuple[int, str]]:
    """Whitespace-separated tokens with their columns; double quotes group (and are kept)."""
    out: list[tuple[int, str]] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        start, quoted = i, False
        while i < n and (quoted or not line[i].isspace()):
            if line[i] == '"':
                quoted = not quoted
            i += 1
        if quoted:
            raise ValueError(f"{start + 1}:unterminated quote")
        out.append((start + 1, line[start:i]))
    return out


def _split_options(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def parse(data: bytes, label: str) -> AllowedSigners:
    """Every line checked; all problems reported together (InvalidConfig with located problems)."""
    if len(data) > MAX_BYTES:
        raise InvalidConfig(f"{label}: allowed signers file is {len(data)} bytes (limit {MAX_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidConfig(f"{label}: invalid allowed signers file",
                            [Problem(label, 1, 1, f"not UTF-8 text (byte {exc.start})")]) from None
    entries: list[Entry] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(_entry(raw, f"{label}:{number}"))
        except _LineError as exc:
            problems.append(Problem(label, number, exc.column, exc.message, exc.field))
    if problems:
        raise InvalidConfig(f"{label}: invalid allowed signers file", problems)
    return AllowedSigners(tuple(entries))


class _LineError(Exception):
    def __init__(self, column: int, message: str, field: str) -> None:
        super().__init__(message)
        self.column, self.message, self.field = column, message, field


def _entry(raw: str, where: str) -> Entry:
    try:
        tokens = _tokens(raw)
    except ValueError as exc:
        col, _, msg = str(exc).partition(":")
        raise _LineError(int(col), msg, "principals") from None
    if len(tokens) < 3:
        raise _LineError(1, "expected: principals [options] keytype base64-key [comment]", "principals")
    pcol, principals_text = tokens[0]
    principals = tuple(p.strip('"') for p in principals_text.strip('"').split(","))
    if not all(principals):
        raise _LineError(pcol, "empty principal", "principals")
    rest = tokens[1:]
    fields: dict[str, object] = {}
    if rest[0][1].startswith(("ssh-", "ecdsa-", "sk-")) and rest[0][1] not in _KEYTYPES:
        raise _LineError(rest[0][0], f"unsupported key type {rest[0][1]!r} (known: {', '.join(_KEYTYPES)})",
                         "keytype")
    if rest[0][1] not in _KEYTYPES:
        ocol, options = rest[0]
        fields = _options(options, ocol)
        rest = rest[1:]
    if len(rest) < 2:
        raise _LineError(rest[0][0] if rest else 1, "expected a key type and a base64 key", "key")
    (kcol, keytype), (bcol, b64) = rest[0], rest[1]
    if keytype not in _KEYTYPES:
        raise _LineError(kcol, f"unknown key type {keytype!r}", "keytype")
    try:
        key = PublicKey.from_openssh(keytype, b64, where)
    except BadSignature as exc:
        raise _LineError(bcol, str(exc).split(": ", 1)[-1], "key") from None
    return Entry(principals, key, where=where, **fields)  # type: ignore[arg-type]


_KEYTYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss")


def _options(text: str, col: int) -> dict[str, object]:
    fields: dict[str, object] = {}
    for option in _split_options(text):
        name, eq, value = option.partition("=")
        name = name.lower()
        if name not in _OPTIONS:
            raise _LineError(col, f"unknown option {name!r} (known: {', '.join(_OPTIONS)})", "options")
        if name == "cert-authority":
            if eq:
                raise _LineError(col, "cert-authority takes no value", "options")
            fields["cert_authority"] = True
            continue
        if not (len(value) >= 2 and value[0] == value[-1] == '"'):
            raise _LineError(col, f'{name} needs a quoted value, e.g. {name}="..."', name)
        value = value[1:-1]
        if name == "namespaces":
            fields["namespaces"] = tuple(v.strip() for v in value.split(",") if v.strip())
        else:
            t = parse_time(value)
            if t is None:
                raise _LineError(col, f"{name} {value!r} is not a time like 20250131 or 202501311200Z", name)
            fields[name.replace("-", "_")] = t
    return fields


def load(path: str, data: bytes) -> AllowedSigners:
    return parse(data, path)


def merge(sets: Sequence[AllowedSigners]) -> AllowedSigners:
    out = AllowedSigners()
    for s in sets:
        out = out + s
    return out
