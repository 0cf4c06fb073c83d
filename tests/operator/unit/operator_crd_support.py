"""The CreditJob CRD as the API server would apply it: defaults, the structural schema (jsonschema) and the CEL
`x-kubernetes-validations` (cel-python). Used by the CRD, example and planner tests; no server involved.

A stand-in for what kube-apiserver does on create, to the extent these libraries allow: defaulting walks
`default:` values, jsonschema checks types/enums/bounds, celpy evaluates each rule with `self` bound to its node.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "charts" / "credit-jobs" / "crds" / "creditjobs.yaml"
EXAMPLES = ROOT / "examples"


@lru_cache(maxsize=1)
def _parsed_crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


def load_crd() -> dict[str, Any]:
    return copy.deepcopy(_parsed_crd())  # a copy: callers may modify it


def crd_version() -> dict[str, Any]:
    (version,) = load_crd()["spec"]["versions"]
    return dict(version)


def open_api_schema() -> dict[str, Any]:
    return dict(crd_version()["schema"]["openAPIV3Schema"])


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill `default:` values the way the API server does (absent properties of present objects)."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    result = dict(value)
    for name, sub in (schema.get("properties") or {}).items():
        if name not in result and "default" in sub:
            result[name] = copy.deepcopy(sub["default"])
        if name in result:
            result[name] = apply_defaults(sub, result[name])
    return result


def schema_errors(obj: dict[str, Any]) -> list[str]:
    validator = _schema_validator()
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


_env = celpy.Environment()


@cache
def _program(rule: str) -> Any:
    return _env.program(_env.compile(rule))


@lru_cache(maxsize=1)
def _schema_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(open_api_schema())


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


def cel_errors(obj: dict[str, Any]) -> list[str]:
    """The message of every CEL rule that evaluates to false (or fails to evaluate) on the object."""
    errors = []
    for path, rule, value in _rules(open_api_schema(), obj, ""):
        program = _program(rule["rule"])
        try:
            ok = bool(program.evaluate({"self": celpy.json_to_cel(value)}))
        except Exception as exc:  # an evaluation error rejects the object, as in kube-apiserver
            errors.append(f"{path or '.'}: {rule['rule']} failed to evaluate: {exc}")
            continue
        if not ok:
            errors.append(f"{path or '.'}: {rule.get('message', rule['rule'])}")
    return errors


def admit(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Default, then validate: (the stored object, every error). An empty error list means accepted."""
    stored = apply_defaults(open_api_schema(), obj)
    return stored, schema_errors(stored) + cel_errors(stored)


def example_manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, dict(yaml.safe_load(path.read_text()))) for path in sorted(EXAMPLES.glob("*.yaml"))]
