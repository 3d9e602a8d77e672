"""A lazily loaded view of one fleet revision: each document is read, parsed and schema-checked on first use.

Loading one device touches fleet.yaml, groups/, the models that device runs and its own file, never the other
device files.  Parsed documents are cached by content key (git blob id), so comparing two revisions parses an
unchanged file once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.errors import Problem
from reconciler.fleet import rules
from reconciler.fleet.document import Document, Limits, capped, parse
from reconciler.fleet.schema import check
from reconciler.fleet.source import Source, UnsafeFile, doc_path

FLEET_FILE = "fleet.yaml"
DIRS = {"Group": "groups", "Device": "devices", "Model": "models", "Rollout": "rollouts"}


@dataclass
class ParseCache:
    """Parsed and checked documents by content key; shared between views of several revisions."""

    entries: dict[str, tuple[Document | None, tuple[Problem, ...]]] = field(default_factory=dict)
    limit: int = 100_000

    def get(self, key: str) -> tuple[Document | None, tuple[Problem, ...]] | None:
        return self.entries.get(key)

    def put(self, key: str, value: tuple[Document | None, tuple[Problem, ...]]) -> None:
        if len(self.entries) >= self.limit:
            self.entries.clear()
        self.entries[key] = value


class FleetView:
    def __init__(self, source: Source, cache: ParseCache | None = None,
                 limits: Limits | None = None) -> None:
        self.source = source
        self.limits = limits or Limits()
        self.cache = cache if cache is not None else ParseCache()
        self._docs: dict[str, Document | None] = {}
        self._problems: dict[str, tuple[Problem, ...]] = {}
        self._groups: dict[str, Document] | None = None
        self._names_cache: dict[str, list[str]] = {}

    # -- loading -------------------------------------------------------------------------------------------
    def _load(self, path: str, kind: str, name: str | None) -> Document | None:
        """The document at ``path`` if it exists and is valid; its problems are recorded either way."""
        if path in self._docs:
            return self._docs[path]
        key = self.source.key(path)
        if key is None:
            self._docs[path] = None
            return None
        cached = self.cache.get(key)
        if cached is None:
            doc, found = self._check(path, kind, name)
            cached = doc, tuple(capped(list(found), self.limits.max_problems))
            self.cache.put(key, cached)
        doc, problems = cached
        self._docs[path] = doc
        self._problems[path] = problems
        return self._docs[path]

    def _check(self, path: str, kind: str, name: str | None) -> tuple[Document | None, tuple[Problem, ...]]:
        """Parse and check one file.  The document is returned only when its structure is sound (it parsed
        and matches the schema), so cross-document rules can still run on it when other rules fail."""
        try:
            raw = self.source.read(path)
        except UnsafeFile as exc:
            return None, (Problem(path, 0, 0, str(exc)),)
        if raw is None:
            return None, ()
        doc, problems = parse(path, raw, self.limits)
        if doc is None:
            return None, tuple(problems)
        problems.extend(rules.secret_rules(doc))
        if not isinstance(doc.data, dict):
            return None, (*problems, doc.problem((), f"expected a {kind} document (a mapping), got {type(doc.data).__name__}"))
        if doc.kind != kind:
            problems.append(doc.problem(("kind",), f"expected kind {kind!r} in {path}, got {doc.kind!r}"))
            return None, tuple(problems)
        schema_problems = check(doc, kind.lower())
        if schema_problems:
            return None, (*problems, *schema_problems)
        if name is not None and doc.name is not None and doc.name != name:
            problems.append(doc.problem(("metadata", "name"),
                                        f"metadata.name {doc.name!r} differs from the file name {name!r}"))
        problems.extend(rules.document_rules(doc))
        return doc, tuple(problems)

    def exists(self, kind: str, name: str) -> bool:
        return self.source.key(doc_path(DIRS[kind], name, self.source)) is not None

    def fleet(self) -> Document | None:
        return self._load(FLEET_FILE, "Fleet", None)

    def group(self, name: str) -> Document | None:
        return self._load(doc_path("groups", name, self.source), "Group", name)

    def model(self, name: str) -> Document | None:
        return self._load(doc_path("models", name, self.source), "Model", name)

    def device(self, name: str) -> Document | None:
        return self._load(doc_path("devices", name, self.source), "Device", name)

    def rollout(self, name: str) -> Document | None:
        return self._load(doc_path("rollouts", name, self.source), "Rollout", name)

    def rollouts(self) -> dict[str, Document]:
        """Every valid rollouts/<name>.yaml (a handful: loaded whole, by every device too)."""
        loaded = {n: self.rollout(n) for n in self._names("rollouts")}
        return {n: d for n, d in loaded.items() if d is not None}

    def groups(self) -> dict[str, Document]:
        if self._groups is None:
            loaded = {n: self.group(n) for n in self.source.names("groups")}
            self._groups = {n: d for n, d in loaded.items() if d is not None}
        return self._groups

    def _names(self, directory: str) -> list[str]:
        if directory not in self._names_cache:
            self._names_cache[directory] = self.source.names(directory)
        return self._names_cache[directory]

    def device_names(self) -> list[str]:
        return self._names("devices")

    def model_names(self) -> list[str]:
        return self._names("models")

    def group_names(self) -> list[str]:
        return self._names("groups")

    def raw(self, directory: str, name: str) -> bytes | None:
        """The unparsed bytes of a document (for cheap prefilters)."""
        return self.source.read(doc_path(directory, name, self.source))

    def is_broken(self, kind: str, name: str) -> bool:
        """The file exists but failed to load (so references to it are not 'unknown')."""
        path = doc_path(DIRS[kind], name, self.source)
        return bool(self._problems.get(path))

    def problems(self) -> list[Problem]:
        """Problems of every document loaded so far, plus a missing fleet.yaml."""
        out = [p for ps in self._problems.values() for p in ps]
        if self.source.key(FLEET_FILE) is None:
            out.append(Problem(FLEET_FILE, 1, 1, "missing: a fleet repository needs fleet.yaml (kind: Fleet) at its root"))
        return out
