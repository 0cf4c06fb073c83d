"""docs/crd-reference.md and docs/operator.md stay in sync with the CRD and the operator's settings and metrics."""

from __future__ import annotations

import json
import re
from typing import Any

from operator_crd_support import ROOT, open_api_schema

from credit_operator import metrics
from credit_operator.settings import OperatorSettings

CRD_DOC = (ROOT / "docs" / "crd-reference.md").read_text()
OPERATOR_DOC = (ROOT / "docs" / "operator.md").read_text()


def _fields(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, sub in (node.get("properties") or {}).items():
        found.append((f"{path}.{name}", sub))
        found += _fields(sub, f"{path}.{name}")
    return found


def _row(field: str) -> str:
    match = re.search(rf"^\| `{re.escape(field)}` \|(.*)$", CRD_DOC, re.MULTILINE)
    assert match, f"{field} is missing from docs/crd-reference.md"
    return match.group(1)


def test_every_spec_field_is_documented_with_its_type_and_default() -> None:
    for field, node in _fields(open_api_schema()["properties"]["spec"], "spec"):
        cells = [c.strip() for c in _row(field).split("|")]
        assert cells[0] == node.get("type", "int-or-string"), field
        if "default" in node:
            assert cells[1] == f"`{json.dumps(node['default'])}`", field


def test_every_status_field_is_documented() -> None:
    for field, _ in _fields(open_api_schema()["properties"]["status"], "status"):
        if field.count(".") == 1:
            _row(field)


def test_every_operator_setting_and_metric_is_documented() -> None:
    for name in OperatorSettings.model_fields:
        env = {"pushgateway_url": "PUSHGATEWAY_URL", "log_format": "LOG_FORMAT"}.get(name, f"CREDITJOBS_{name.upper()}")
        assert f"`{env}`" in OPERATOR_DOC, env
    for name in metrics.exported_metric_names():
        if not name.endswith(("_bucket", "_sum", "_count")):
            assert f"`{name}`" in OPERATOR_DOC, name
