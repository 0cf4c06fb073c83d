"""Admits a custom resource the way kube-apiserver would, offline: `default:` values, the structural schema
(jsonschema over the CRD's openAPIV3Schema) and its CEL `x-kubernetes-validations` rules (cel-python), with `self`
bound to each rule's node. Shared by the operator's CRD tests and the chart's tests of CreditJobs from values.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from typing import Any

import celpy
import jsonschema

_env = celpy.Environment()


@cache
def _program(rule: str) -> Any:
    return _env.program(_env.compile(rule))


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill `default:` values of absent properties of present objects, as the API server does."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    result = dict(value)
    for name, sub in (schema.get("properties") or {}).items():
        if name not in result and "default" in sub:
            result[name] = copy.deepcopy(sub["default"])
        if name in result:
            result[name] = apply_defaults(sub, result[name])
    return result


def _rules(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule, value
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                yield from _rules(sub, value[name], f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                yield from _rules(extra, item, f"{path}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _rules(schema["items"], item, f"{path}[{index}]")


def schema_errors(validator: jsonschema.protocols.Validator, obj: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}" for e in validator.iter_errors(obj)]


def cel_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """The message of every CEL rule that evaluates to false (or fails to evaluate) on the object."""
    errors = []
    for path, rule, value in _rules(schema, obj, ""):
        try:
            ok = bool(_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)}))
        except Exception as exc:  # an evaluation error rejects the object, as in kube-apiserver
            errors.append(f"{path or '.'}: {rule['rule']} failed to evaluate: {exc}")
            continue
        if not ok:
            errors.append(f"{path or '.'}: {rule.get('message', rule['rule'])}")
    return errors


def admission_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse `obj` (empty: accepted)."""
    stored = apply_defaults(schema, obj)
    return schema_errors(jsonschema.Draft202012Validator(schema), stored) + cel_errors(schema, stored)
