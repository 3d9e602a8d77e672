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
        problems.extend(_translate(doc, error, schema))
    unique = {(p.line, p.column, p.message, p.field): p for p in problems}  # one rule, several keywords
    return sorted(unique.values(), key=lambda p: (p.line, p.column))


_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}
_RULES = ("const", "required", "dependentRequired")  # the keywords that carry an if/then rule's message


def _rule_message(schema: str, error: ValidationError) -> str | None:
    """The ``errorMessage`` (the ajv-errors / yaml-language-server keyword, which editors show too) of the
    innermost schema on the error's path: the sentence an if/then rule wants said, not "False is not True"."""
    root = bundled(schema)
    node: Any = root
    message = None
    for part in error.absolute_schema_path:
        if isinstance(node, dict) and part not in node and "$ref" in node:
            node = _local(root, str(node["$ref"]))  # jsonschema leaves the $ref step out of the path
            message = node.get("errorMessage", message) if isinstance(node, dict) else message
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and "errorMessage" in node:
            message = str(node["errorMessage"])
    return message


def _local(root: dict[str, Any], ref: str) -> Any:
    node: Any = root  # the bundled schema's references are all local: "#/$defs/name"
    for step in ref.removeprefix("#/").split("/"):
        node = node[step]
    return node


def _translate(doc: Document, error: ValidationError, schema: str) -> list[Problem]:
    where: Path_ = tuple(error.absolute_path)
    v = error.validator
    instance = error.instance
    if v in _RULES:
        rule = _rule_message(schema, error)
        if rule is not None:
            return [doc.problem(where, rule)]
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
        if "boolean" in names and isinstance(instance, str) and instance.lower() in _YAML11_BOOLS:
            hint = f" (YAML 1.2 reads {instance} as a string: write true or false)"
        return [doc.problem(where, f"expected {want}, got {_show(instance)}{hint}")]
    if v == "enum":
        return [doc.problem(where, f"{_show(instance)} is not one of {', '.join(map(str, error.validator_value))}")]
    if v == "const":
        return [doc.problem(where, f"must be {error.validator_value!r}, got {_show(instance)}")]
    if v == "anyOf":  # a size or a duration: a number, or a string of a pattern; explain the alternative that fits
        fitting = [e for e in error.context or () if e.validator != "type"]
        if fitting:
            return _translate(doc, fitting[0], schema)
    if v == "pattern" and isinstance(instance, str):
        if "kmgt" in str(error.validator_value):
            return [doc.problem(where, f"malformed size {instance!r}: use a number with k, m, g or t, or Ki, Mi, Gi, "
                                       "Ti (e.g. 100m, 100Mi, 2Gi)")]
        if "smhd" in str(error.validator_value):
            return [doc.problem(where, f"malformed duration {instance!r}: use seconds or a number with s, m, h or d")]
        if "det_" in str(error.validator_value):
            return [doc.problem(where, f"invalid detector_id {instance!r}: Groundlight ids are det_ followed by 27 "
                                       "letters or digits (e.g. det_2UOxalD1gegjk4TnyLbtGggiJ8p)")]
        if "a-z0-9" in str(error.validator_value):
            return [doc.problem(where, f"invalid name {instance!r}: use lower-case letters, digits, '-', '_', '.'"
                                       " (at most 63, starting and ending with a letter or digit)")]
        return [doc.problem(where, f"invalid value {instance!r}")]
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most",
                    "exclusiveMaximum": "less than"}[str(v)]
        return [doc.problem(where, f"must be {relation} {error.validator_value}, got {_show(instance)}")]
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

