"""The CreditJob CRD as the API server would apply it: defaults, the structural schema (jsonschema) and the CEL
`x-kubernetes-validations` (cel-python). Used by the CRD, example and planner tests; no server involved.

A stand-in for what kube-apiserver does on create, to the extent these libraries allow: defaulting walks
`default:` values, jsonschema checks types/enums/bounds, celpy evaluates each rule with `self` bound to its node.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support import crd_admission

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


def schema_errors(obj: dict[str, Any]) -> list[str]:
    return crd_admission.schema_errors(_schema_validator(), obj)


@lru_cache(maxsize=1)
def _schema_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(open_api_schema())


def cel_errors(obj: dict[str, Any]) -> list[str]:
    """The message of every CEL rule that evaluates to false (or fails to evaluate) on the object."""
    return crd_admission.cel_errors(open_api_schema(), obj)


def admit(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Default, then validate: (the stored object, every error). An empty error list means accepted."""
    stored = crd_admission.apply_defaults(open_api_schema(), obj)
    return stored, schema_errors(stored) + cel_errors(stored)


def example_manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, dict(yaml.safe_load(path.read_text()))) for path in sorted(EXAMPLES.glob("*.yaml"))]
