"""Property-based tests (hypothesis): the YAML document loader, the schema + rules pipeline, the reference parser
and the archive extractor take any input and give a result or a located error from the project's error tree,
never another exception.  Bounded (max_examples) so that ``make test`` stays fast."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.artifacts.archive import extract
from reconciler.artifacts.reference import Reference
from reconciler.errors import Problem, ReconcilerError
from reconciler.fleet.document import parse
from reconciler.fleet.validate import validate
from reconciler.fleet.view import FleetView

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = ["apiVersion: fleet/v1", "kind: Group", "kind: Model", "kind: Device", "kind: Fleet", "metadata:",
          "  name: g", "spec:", "  models:", "  - name: m", "    version: '1.0'", "  members: [d1, *a]",
          "&a", "*a", "<<: *a", "x: &a [1, 2]", "{", "}", "[", "]", ": ", "- ", "  ", "\t", "---", "...",
          "!!binary aGk=", "!!python/object:os.system", "? ", "2024-01-01", "1.10", "~", "'", '"', "#",
          "  priority: 1", "  detectors:", "  - detector_id: det_x", "    model: m", "password: hunter2",
          "  config: {runtime: docker}", "  selector: {matchLabels: {a: b}}", "versions:", "  '1.0': {}"]
yamlish = st.lists(st.sampled_from(TOKENS) | st.text(max_size=12), max_size=40).map("\n".join)


@BOUNDED
@given(yamlish | st.text(max_size=400) | st.binary(max_size=400))
def test_loader_gives_a_document_or_located_problems(text: str | bytes) -> None:
    doc, problems = parse("groups/g.yaml", text)
    assert all(isinstance(p, Problem) and p.file == "groups/g.yaml" for p in problems)
    assert doc is not None or problems


class MemorySource:
    """A fleet held in a dict (path -> bytes), as the loader reads a directory or a git tree."""

    label = "memory"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def names(self, directory: str) -> list[str]:
        return sorted(p[len(directory) + 1:-5] for p in self.files
                      if p.startswith(directory + "/") and p.endswith(".yaml") and "/" not in p[len(directory) + 1:])

    def key(self, path: str) -> str | None:
        return f"{path}:{hash(self.files[path])}" if path in self.files else None


FLEET = b"apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: f}\nspec: {defaults: {runtime: process}}\n"
MODEL = (b"apiVersion: fleet/v1\nkind: Model\nmetadata: {name: m}\nspec:\n  versions:\n"
         b"    '1.0': {artifact: 127.0.0.1:5000/m@sha256:" + b"a" * 64 + b", command: [sleep, '1']}\n")
DEVICE = b"apiVersion: fleet/v1\nkind: Device\nmetadata: {name: d1}\nspec: {groups: [g]}\n"


@BOUNDED
@given(yamlish, st.sampled_from(["groups/g.yaml", "models/m.yaml", "devices/d1.yaml", "fleet.yaml"]))
def test_schema_and_rules_give_problems_never_an_exception(text: str, where: str) -> None:
    files = {"fleet.yaml": FLEET, "models/m.yaml": MODEL, "devices/d1.yaml": DEVICE,
             "groups/g.yaml": b"apiVersion: fleet/v1\nkind: Group\nmetadata: {name: g}\nspec: {models: []}\n"}
    files[where] = text.encode()
    problems = validate(FleetView(MemorySource(files)))
    assert all(isinstance(p, Problem) for p in problems)


@BOUNDED
@given(st.text(max_size=200) | st.from_regex(r"[a-z0-9.:\[\]-]{0,20}(/[a-z0-9._-]{0,10}){0,3}([:@][a-z0-9:]{0,70})?",
                                            fullmatch=True))
def test_reference_parser_gives_a_reference_or_a_project_error(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except ReconcilerError:
        return
    assert ref.registry and ref.repository


def _tar(members: list[tuple[str, bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind, data in members:
            info = tarfile.TarInfo(name or "x")
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.linkname = data.decode("latin-1") if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


names = st.text(alphabet="ab./-\\x", max_size=12)
kinds = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
                         tarfile.CHRTYPE])
members = st.lists(st.tuples(names, kinds, st.binary(max_size=64)), max_size=6)


@BOUNDED
@given(members, st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=4),
       st.sampled_from(["tar", "tar+gzip"]))
def test_extractor_gives_files_inside_the_directory_or_a_project_error(
        entries: list[tuple[str, bytes, bytes]], flips: list[tuple[int, int]], compression: str) -> None:
    import gzip

    raw = bytearray(_tar(entries))
    for at, value in flips:  # damage the archive here and there
        if at < len(raw):
            raw[at] = value
    data = gzip.compress(bytes(raw)) if compression == "tar+gzip" else bytes(raw)
    with tempfile.TemporaryDirectory() as tmp:
        archive, out = Path(tmp) / "layer", Path(tmp) / "out"
        archive.write_bytes(data)
        out.mkdir()
        try:
            result = extract(archive, out, compression=compression, max_bytes=4096, what="layer")
        except ReconcilerError:
            return
        real = out.resolve()
        for name in result.files:
            assert (out / name).resolve().is_relative_to(real)
        outside = [p for p in Path(tmp).rglob("*") if not (p == archive or p.is_relative_to(out))]
        assert outside == []
