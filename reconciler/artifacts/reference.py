"""OCI references: ``host[:port]/repo/path[:tag][@sha256:<hex>]``, parsed and formatted."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from reconciler.errors import InvalidConfig

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse a reference that names its registry host (no implicit Docker Hub)."""
        rest = text.strip()
        if not rest or any(c.isspace() for c in rest):
            raise InvalidConfig(f"invalid OCI reference {text!r}: empty or contains whitespace")
        digest: str | None = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.match(digest):
                raise InvalidConfig(f"invalid OCI reference {text!r}: digest must be sha256:<64 hex digits>")
        host, sep, path = rest.partition("/")
        if not sep or not path:
            raise InvalidConfig(f"invalid OCI reference {text!r}: expected REGISTRY/REPO[:TAG][@DIGEST]")
        if not _HOST.match(host) or not ("." in host or ":" in host or host == "localhost"):
            raise InvalidConfig(
                f"invalid OCI reference {text!r}: {host!r} is not a registry host (write host[:port]/repo)"
            )
        tag: str | None = None
        last_slash = path.rfind("/")
        colon = path.rfind(":")
        if colon > last_slash:
            path, tag = path[:colon], path[colon + 1 :]
            if not _TAG.match(tag):
                raise InvalidConfig(f"invalid OCI reference {text!r}: bad tag {tag!r}")
        for component in path.split("/"):
            if not _COMPONENT.match(component):
                raise InvalidConfig(f"invalid OCI reference {text!r}: bad repository component {component!r}")
        return cls(host, path, tag, digest)

    @property
    def host(self) -> str:
        return self.registry.rsplit(":", 1)[0] if self.registry.count(":") == 1 else self.registry

    @property
    def port(self) -> int | None:
        if self.registry.count(":") == 1:
            return int(self.registry.rsplit(":", 1)[1])
        return None

    @property
    def name(self) -> str:
        """``host/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag (``latest`` by default)."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> Reference:
        return replace(self, tag=None, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
