"""JSON Schema validation of fleet documents, with errors located in the YAML file."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema_rs

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

from reconciler.errors import Problem
from reconciler.fleet.document import Document, Path_

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
KINDS = {"Fleet": "fleet", "Group": "group", "Device": "device", "Model": "model", "Rollout": "rollout"}


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


@cache
def bundled(name: str) -> dict[str, Any]:
    """The kind's schema made self-contained: the shared definitions copied in, references made local."""
    common = json.loads(schema_path("common").read_text())["$defs"]
    text = schema_path(name).read_text().replace('"common.schema.json#/$defs/', '"#/$defs/')
    schema: dict[str, Any] = json.loads(text)
    schema["$defs"] = {**common, **schema.get("$defs", {})}
    return schema


@cache
def validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # only needed to explain a failure: keep start-up fast

    return Draft202012Validator(bundled(name))


@cache
def _fast(name: str) -> Any:
    # jsonschema-rs answers "valid?" about fifty times faster; jsonschema then explains the rare failures
    # with every error located, so a 10,000-device fleet validates in seconds.
    return jsonschema_rs.Draft202012Validator(bundled(name))


_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "empty"}


def check(doc: Document, schema: str) -> list[Problem]:
    """Every schema violation of ``doc``, one located problem each (the deepest, most specific ones)."""
    try:
        if _fast(schema).is_valid(doc.data):
            return []
    except ValueError:  # a value JSON has no type for (a YAML !!binary, !!set...): jsonschema explains it
        pass
    problems: list[Problem] = []
    for error in validator(schema).iter_errors(doc.data):
        problems.extend(_translate(doc, error))
    problems.sort(key=lambda p: (p.line, p.column))
    return problems


def _translate(doc: Document, error: ValidationError) -> list[Problem]:
    where: Path_ = tuple(error.absolute_path)
    v = error.validator
    instance = error.instance
    if v == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)
        if error.schema.get("additionalProperties") is False:
            known = ", ".join(sorted(allowed))
            return [doc.problem((*where, k), f"unknown field {k!r} (known: {known})") for k in extra]
    if v == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        return [doc.problem(where, f"missing required field {missing!r}")]
    if v == "type":
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        want = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        hint = " (quote it)" if "string" in names and isinstance(instance, int | float | bool) else ""
        return [doc.problem(where, f"expected {want}, got {_show(instance)}{hint}")]
    if v == "enum":
        return [doc.problem(where, f"{_show(instance)} is not one of {', '.join(map(str, error.validator_value))}")]
    if v == "const":
        return [doc.problem(where, f"must be {error.validator_value!r}, got {_show(instance)}")]
    if v == "pattern" and isinstance(instance, str):
        if "a-z0-9" in str(error.validator_value):
            return [doc.problem(where, f"invalid name {instance!r}: use lower-case letters, digits, '-', '_', '.'"
                                       " (at most 63, starting and ending with a letter or digit)")]
        return [doc.problem(where, f"invalid value {instance!r}")]
    if v == "propertyNames":
        return [doc.problem(where, f"invalid key {instance!r}")]
    return [doc.problem(where, error.message)]


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)

