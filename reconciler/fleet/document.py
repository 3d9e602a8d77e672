"""One YAML document with the position of every field, so that errors can name file, line and column."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.errors import Problem

try:  # the C loader is several times faster; fall back when libyaml is missing
    _Base: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the platform's PyYAML build
    _Base = yaml.SafeLoader

class Loader(_Base):  # type: ignore[misc]
    """Safe loading with the YAML 1.2 core schema, as editors and check-jsonschema read the files: ``yes``,
    ``no``, ``on`` and ``off`` stay strings, ``2024-01-01`` stays a string (no timestamps), ``012`` is twelve,
    ``1_000`` and ``1:30`` are strings.  Only the resolver changes (merge keys still work); the one YAML loader
    of the project: fleet files, status files, the agent configuration and the views all read through it."""


# The core schema's implicit tags (https://yaml.org/spec/1.2.2/#1032-tag-resolution), by first character.
_CORE = (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+.0123456789"),
)
Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in _CORE:
    Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _core_int(loader: Any, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)  # "012" is 12 in YAML 1.2, not octal


Loader.add_constructor("tag:yaml.org,2002:int", _core_int)
Loader.add_constructor("tag:yaml.org,2002:timestamp", _Base.construct_yaml_str)  # explicit !!timestamp

Path_ = tuple[str | int, ...]

MAX_FILE_BYTES = 1024 * 1024  # a fleet file larger than this is refused unread (configurable: Limits)
MAX_ALIAS_NODES = 100_000  # nodes that aliases may add on top of those written in the file
MAX_DEPTH = 200  # nesting levels (libyaml stops at 1000; building Python objects needs a frame per level)
MAX_PROBLEMS = 50  # problems shown per file, then "... and N more"


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one untrusted YAML file may cause: its size, what its aliases expand to, its
    nesting, and how many problems it may print."""

    max_bytes: int = MAX_FILE_BYTES
    max_alias_nodes: int = MAX_ALIAS_NODES
    max_depth: int = MAX_DEPTH
    max_problems: int = MAX_PROBLEMS


class _Refused(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node


@dataclass(frozen=True)
class Document:
    """A parsed file: ``data`` is plain Python, ``positions`` maps a field path to its 1-based (line, column)."""

    path: str
    data: Any
    positions: Mapping[Path_, tuple[int, int]] = field(default_factory=dict)

    def pos(self, where: Path_) -> tuple[int, int]:
        """Position of ``where``, or of its nearest ancestor that has one."""
        p = tuple(where)
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), (1, 1))

    def problem(self, where: Path_, message: str) -> Problem:
        line, col = self.pos(where)
        return Problem(self.path, line, col, message, dotted(where))

    @property
    def kind(self) -> str | None:
        return self.data.get("kind") if isinstance(self.data, dict) else None

    @property
    def name(self) -> str | None:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        return meta.get("name") if isinstance(meta, dict) else None

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.data.get("spec") if isinstance(self.data, dict) else None
        return spec if isinstance(spec, dict) else {}

    @property
    def labels(self) -> dict[str, str]:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        labels = meta.get("labels") if isinstance(meta, dict) else None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def dotted(where: Path_) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(path: str, text: bytes | str, limits: Limits = Limits()) -> tuple[Document | None, list[Problem]]:
    """Parse one YAML document.  Malformed YAML, several documents or duplicate keys become located problems,
    and so does a file over the ``limits`` (checked before any Python object is built)."""
    if len(text) > limits.max_bytes:
        return None, [Problem(path, 1, 1, f"the file has {len(text)} bytes, over the cap of {limits.max_bytes} "
                                          "bytes per fleet file: split it")]
    loader = Loader(text)
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(path, 1, 1, "the file is empty: expected one YAML document")]
        try:
            _check_shape(node, limits)
        except _Refused as refused:
            mark = refused.node.start_mark
            return None, [Problem(path, mark.line + 1, mark.column + 1, str(refused))]
        positions: dict[Path_, tuple[int, int]] = {(): (node.start_mark.line + 1, node.start_mark.column + 1)}
        data = _build(loader, node, (), positions, path, problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = f"malformed YAML: {exc.problem or exc.context}"
        if "but found another document" in str(exc.problem or ""):
            msg = "several YAML documents in one file: put one document per file"
        return None, [Problem(path, line, col, msg)]
    except yaml.YAMLError as exc:
        return None, [Problem(path, 1, 1, f"malformed YAML: {exc}")]
    finally:
        loader.dispose()
    return Document(path, data, positions), problems


def _check_shape(root: yaml.Node, limits: Limits) -> None:
    """Refuse a node graph whose aliases expand past the cap (a "billion laughs" file), that refers to
    itself, or that nests too deep, before anything is built from it.  Linear in the nodes written."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    extra = 0

    def visit(node: yaml.Node, depth: int) -> int:
        nonlocal extra
        key = id(node)
        if key in sizes:  # an alias: everything under it is built once more
            extra += sizes[key]
            if extra > limits.max_alias_nodes:
                raise _Refused(node, f"aliases expand this document past {limits.max_alias_nodes} nodes: "
                                     "refused (write the values out, or use fewer nested aliases)")
            return sizes[key]
        if key in on_path:
            raise _Refused(node, "an alias refers to a node that contains it: recursive structures are refused")
        if depth > limits.max_depth:
            raise _Refused(node, f"nested deeper than {limits.max_depth} levels: refused")
        total = 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            on_path.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            for child in children:
                total += visit(child, depth + 1)
            on_path.discard(key)
        sizes[key] = total
        return total

    visit(root, 0)


def _build(
    loader: Any, node: yaml.Node, where: Path_, positions: dict[Path_, tuple[int, int]],
    path: str, problems: list[Problem],
) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # merge keys (<<)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                        "a mapping key must be a plain scalar", dotted(where)))
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = key_node.value  # keep "1.10" as written, not the float 1.1
            if not isinstance(key, str):
                problems.append(Problem(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                        "a mapping key must be a plain scalar", dotted(where)))
                continue
            child = (*where, key)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in out:
                problems.append(Problem(path, line, col, f"duplicate key {key!r}", dotted(child)))
            positions[child] = (line, col)
            out[key] = _build(loader, value_node, child, positions, path, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*where, i)
            positions[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_build(loader, item, child, positions, path, problems))
        return items
    return loader.construct_object(node, deep=True)


def capped(problems: list[Problem], limit: int = MAX_PROBLEMS) -> list[Problem]:
    """At most ``limit`` problems per file, in order, each file's overflow said in one line."""
    shown: dict[str, int] = {}
    out: list[Problem] = []
    for p in problems:
        shown[p.file] = shown.get(p.file, 0) + 1
        if shown[p.file] <= limit:
            out.append(p)
    for file, count in shown.items():
        if count > limit:
            out.append(Problem(file, 0, 0, f"... and {count - limit} more problems in this file"))
    return out
