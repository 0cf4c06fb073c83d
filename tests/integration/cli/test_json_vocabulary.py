"""One JSON vocabulary for the CLI's `--json` and the HTTP API: the same run, balance and grants read
the same through both — camelCase names, ids as strings, ISO-8601 timestamps with their offset.

Seen: `credit-jobs runs show --json` said `run_id`, `period_key`, `started_at: "2026-12-07 00:30:39…"` and integer
grant ids, while the API said `jobRunId`, `periodKey`, ISO timestamps and string ids. Real CLI processes and the
real app (in process) against one database.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import cli_process
from tests.support.api import LEDGER_TOKEN, READ_TOKEN, api_client, bearer
from tests.support.ledger import add_policy, add_users, live_month

_ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
_CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def _cli_json(env: dict[str, str], *args: str) -> Any:
    done = cli_process.run([*args, "--json"], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _assert_vocabulary(document: Any) -> None:
    """Every name camelCase, every id a string, every timestamp ISO-8601 with an offset (counts' keys are data)."""
    if isinstance(document, list):
        for item in document:
            if isinstance(item, dict):
                _assert_vocabulary(item)
        return
    for name, item in document.items():
        assert _CAMEL.match(name), name
        if name.endswith("Id") and item is not None:
            assert isinstance(item, str), (name, item)
        if name.endswith("At") and item is not None:
            assert _ISO_WITH_OFFSET.match(item), (name, item)
        if isinstance(item, dict | list) and name != "stats":
            _assert_vocabulary(item)


def test_a_run_a_balance_and_grants_read_the_same_through_the_cli_and_the_api(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, database_url: str
) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    add_users(engine, [(1, "free", "active", False, False)])
    month = live_month(engine)
    env = cli_process.cli_env(database_url)
    assert cli_process.run(["run", "distribute-credits", "--period-key", month], env).returncode == 0
    assert (
        cli_process.run(["grant", "1", "40", "--idempotency-key", "gift-1", "--expires-in-days", "40"], env).returncode
        == 0
    )
    assert cli_process.run(["consume", "1", "30", "--request-id", "c1"], env).returncode == 0

    (cli_run,) = _cli_json(env, "runs", "list")
    cli_shown = _cli_json(env, "runs", "show", cli_run["jobRunId"])
    cli_balance = _cli_json(env, "balance", "1")
    cli_grants = _cli_json(env, "grants", "1")
    with api_client(monkeypatch, engine) as (client, _):
        api_runs = client.get("/api/v1/runs", headers=bearer(READ_TOKEN)).json()["data"]
        api_run = client.get(f"/api/v1/runs/{cli_run['jobRunId']}", headers=bearer(READ_TOKEN)).json()["data"]
        api_balance = client.get("/api/v1/users/1/balance", headers=bearer(LEDGER_TOKEN)).json()["data"]

    assert api_runs == [cli_run]
    assert api_run == cli_shown == cli_run
    for document in (cli_run, cli_balance, cli_grants):
        _assert_vocabulary(document)
    assert cli_run["periodKey"] == month
    assert cli_run["stats"]["granted"] == 1  # a run's counts keep their names (the logs' and the metrics')
    # The balance is a moment's view: equal but for the moment it was taken.
    assert {**api_balance, "asOf": None} == {**cli_balance, "asOf": None}
    assert [g["type"] for g in cli_balance["grants"]] == ["free_tier", "gift"]
    assert {g["grantId"] for g in cli_grants["grants"]} == {g["grantId"] for g in cli_balance["grants"]}
    assert {g["state"] for g in cli_grants["grants"]} == {"live"}
