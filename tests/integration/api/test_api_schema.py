"""Schemathesis over the served OpenAPI of a real `credit-jobs api` process on a real PostgreSQL: no 5xx.

Every operation of the served `/openapi.json` gets generated requests (schemathesis' phases: the schema's examples,
boundary values, then Hypothesis fuzzing of valid and invalid inputs, with a fixed seed and a bounded number of
examples) sent with a credential holding every scope and limits the fuzzer cannot reach, so requests get to the
routes rather than stop at 401, 403 or 429. Checks: no server error, and every answer's status, content type and
body are the documented ones (errors: the `{success: false, error, code, retryable}` envelope). The server's own
log must hold no `api.internal_error` line afterwards: a 500 a check did not see still fails the test.

Hypothesis seldom generates the values that break services like this one, so a sweep sends them through every
parameter and body field of the served OpenAPI as well. It found what the fuzzer at this budget did not (pinned in
test_api_ledger.py): a NUL in the `job` filter answered 503 "database unavailable", and a NUL or over-long
namespace was queued as a local run. Last, what a 5xx is: a value that gets past the API's checks into PostgreSQL
is our bug (500, logged, counted as `result="error"`), never "database unavailable"; an unreachable database is 503.
"""

from __future__ import annotations

import functools
import itertools
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from credit_jobs.adapters import database, run_audit
from tests.support import cli_process
from tests.support.api import READ_TOKEN, TOKENS, api_client, bearer, metrics_text, served_api
from tests.support.ledger import add_policy, add_users

FUZZ_TOKEN = "fuzz-token-0123456789abcdef0123456789"
FUZZ_ENV = {
    "CREDITJOBS_API_TOKENS": f"{TOKENS}\nfuzz:read,runs,ledger:{FUZZ_TOKEN}",
    "CREDITJOBS_API_RATE_LIMIT_GLOBAL": "100000/second",
    "CREDITJOBS_API_RATE_LIMIT_CLIENT": "100000/second",
}
MAX_EXAMPLES = 60  # per operation and phase: the whole test stays well under two minutes on 2 busy cores


@pytest.fixture
def served_log(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    # schemathesis 4's lazy loader renames the test node through `_nodeid`, which pytest 9 no longer has: give it
    # one (it only changes how the subtests are named).
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    return tmp_path / "api.log"


@pytest.fixture
def served_base(database_url: str, served_log: Path) -> Iterator[str]:
    engine = sa.create_engine(database_url)
    try:  # two known users, so generated ids sometimes reach the ledger rather than 404
        add_policy(engine, "pro", "free_tier", 100, None)
        add_users(engine, [(1, "pro", "active", False, False), ("a", "pro", "active", False, False)])
    finally:
        engine.dispose()
    with served_api(database_url, served_log, **FUZZ_ENV) as base:
        yield base


@pytest.fixture
def api_schema(served_base: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{served_base}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error(case: schemathesis.Case, served_log: Path) -> None:
    case.call_and_validate(
        headers=bearer(FUZZ_TOKEN),
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        timeout=30,
    )
    logged = cli_process.log_lines(served_log.read_text())
    assert [line for line in logged if line.get("event") == "api.internal_error"] == []


# --- the edges Hypothesis seldom reaches ------------------------------------------------------------------------

# Values that broke services of this kind before (docs: NUL, which PostgreSQL text cannot hold; non-ASCII digits,
# which `int()` and `\d` accept; 2^63; strings past the btree row limit; invalid UTF-8), swept through every
# parameter of every operation of the served OpenAPI while the others stay valid. Bytes are sent percent-encoded
# as they are (not as UTF-8 of a str), so invalid UTF-8 reaches the server.
EDGE_TEXT: tuple[str | bytes, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u0662\u0660\u0662\u0666-\uff11\uff11",  # Arabic-Indic and full-width digits
    "9223372036854775808",
    "-1",
    "x" * 3000,
    "\u202eevil",
    "\u00e9",
    " padded ",
    "%",
    "..",
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
    b"\xff\xfe",
)
EDGE_JSON: tuple[Any, ...] = (
    *(v for v in EDGE_TEXT if isinstance(v, str)),
    "\ud800",  # a lone surrogate, valid as a JSON escape
    2**63,
    -(2**63) - 1,
    10**40,
    0,
    1.5,
    True,
    None,
    [],
    {},
)
EDGE_BODIES: tuple[bytes, ...] = (b"null", b"[]", b'"x"', b"{", b"\xff", b"[" * 100_000 + b"]" * 100_000)
VALID_PATH = {
    "user": "1",
    "namespace": "default",
    "name": "expire-credits",
    "run_id": str(uuid.UUID(int=0)),
    "token": "20261207T060000Z-0a1b2c3d",
}
VALID_BODY = {"ConsumeBody": {"amount": 1}, "GrantBody": {"amount": 1}, "RunBody": {}}


def _quoted(value: str | bytes) -> str:
    return urllib.parse.quote(value, safe="")


Request = tuple[str, str, str, dict[str, str | bytes], bytes | None]  # what, method, url, headers, body


def _requests(openapi: dict[str, Any]) -> Iterator[Request]:
    """Every edge value in every parameter and body field of every operation, the other inputs valid."""
    for template, operations in openapi["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            body_ref = json.dumps(operation.get("requestBody", {}))
            valid_body = next((body for name, body in VALID_BODY.items() if f"/{name}" in body_ref), None)
            valid_json = json.dumps(valid_body).encode() if valid_body is not None else None
            path = {p["name"]: _quoted(VALID_PATH[p["name"]]) for p in parameters if p["in"] == "path"}
            sweep = functools.partial(_request, method, template)
            for parameter in parameters:
                name, where = parameter["name"], parameter["in"]
                for value in EDGE_TEXT:
                    what = f"{where} {name}={value!r:.40}"
                    if where == "path":
                        yield sweep(what, {**path, name: _quoted(value)}, "", {}, valid_json)
                    elif where == "query":
                        yield sweep(what, path, f"?{name}={_quoted(value)}", {}, valid_json)
                    else:
                        raw = value.encode("utf-8") if isinstance(value, str) else value
                        yield sweep(what, path, "", {name: raw}, valid_json)
            if valid_body is None:
                continue
            for field in valid_body or {"periodKey": None}:  # RunBody's only field is optional
                for value in EDGE_JSON:
                    body = json.dumps({**valid_body, field: value}).encode()
                    yield sweep(f"body {field}={value!r:.40}", path, "", {}, body)
            for raw_body in EDGE_BODIES:
                yield sweep(f"body {raw_body[:20]!r}", path, "", {}, raw_body)


_keys = itertools.count()


def _request(
    method: str,
    template: str,
    what: str,
    path: dict[str, str],
    query: str,
    headers: dict[str, str | bytes],
    body: bytes | None,
) -> Request:
    url = template
    for name, value in path.items():
        url = url.replace("{" + name + "}", value)
    headers = {"Idempotency-Key": f"edge-{next(_keys)}", "Content-Type": "application/json", **headers}
    return f"{method.upper()} {template} {what}", method, url + query, headers, body


def test_edge_values_in_every_parameter_never_answer_a_server_error(served_base: str, served_log: Path) -> None:
    server_errors = []
    with httpx.Client(base_url=served_base, headers=bearer(FUZZ_TOKEN), timeout=30) as client:
        openapi = client.get("/openapi.json").json()
        swept = set()
        for what, method, url, headers, body in _requests(openapi):
            try:
                response = client.request(method, url, headers=headers, content=body)
            except httpx.LocalProtocolError:  # a header value no HTTP client can send (e.g. surrounding spaces)
                continue
            swept.add(" ".join(what.split()[:2]))
            if response.status_code >= 500:
                server_errors.append(f"{what}: {response.status_code} {response.text[:200]}")
    with_inputs = {
        f"{method.upper()} {path}"
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
        if operation.get("parameters") or operation.get("requestBody")
    }
    assert swept == with_inputs  # every operation with inputs was swept, none skipped
    assert server_errors == []
    logged = cli_process.log_lines(served_log.read_text())
    assert [line for line in logged if line.get("event") == "api.internal_error"] == []


# --- what a 5xx is ----------------------------------------------------------------------------------------------


def _divide_by_zero(engine: sa.Engine, **_: Any) -> list[dict[str, Any]]:
    """A real PostgreSQL DataError (SQLSTATE 22012), as a value past the API's checks would raise."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1 / 0"))
    return []


def test_a_data_error_is_an_internal_error_logged_and_counted_not_an_outage(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run_audit, "list_runs", _divide_by_zero)
    with api_client(monkeypatch, engine) as (client, state):
        response = client.get("/api/v1/runs", headers=bearer(READ_TOKEN))
        metrics = metrics_text(state)
    assert response.status_code == 500, response.text
    assert response.json() == {
        "success": False,
        "error": "internal error (logged)",
        "code": "internal_error",
        "retryable": True,
    }
    assert 'creditjobs_api_requests_total{result="error",route="/api/v1/runs"} 1.0' in metrics
    logged = cli_process.log_lines(capsys.readouterr().err)
    (error,) = [line for line in logged if line["event"] == "api.internal_error"]
    assert error["error"].startswith("DataError: (psycopg.errors.DivisionByZero) division by zero")
    assert READ_TOKEN not in error["traceback"]


def test_an_unreachable_database_is_503_database_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nowhere = database.create_engine(f"postgresql+psycopg:///nowhere?host={tmp_path}&connect_timeout=2")
    try:
        with api_client(monkeypatch, nowhere) as (client, state):
            response = client.get("/api/v1/runs", headers=bearer(READ_TOKEN))
            metrics = metrics_text(state)
    finally:
        nowhere.dispose()
    assert response.status_code == 503, response.text
    assert (response.json()["code"], response.json()["retryable"]) == ("database_unavailable", True)
    assert 'creditjobs_api_requests_total{result="error",route="/api/v1/runs"} 1.0' in metrics
