"""The app a `credit-jobs run` line goes to (`entrypoints/cli/run_app.py`) is the whole CLI's `run` command: the same
Typer command object, so the same options, help and messages; and it takes the lines the operator's pods run."""

from __future__ import annotations

from typing import Any

import typer

from credit_jobs.entrypoints.cli import app as whole_cli
from credit_jobs.entrypoints.cli import main, run_app
from credit_operator.creditjob import parse_creditjob
from credit_operator.cronjob_manifest import ManifestDefaults, build_cronjob, build_job_from_cronjob


def _run_command(app: typer.Typer) -> Any:
    return typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]


def test_the_run_app_holds_the_whole_clis_run_command_and_nothing_else() -> None:
    assert [info.callback for info in run_app.app.registered_commands] == [
        info.callback for info in whole_cli.app.registered_commands if info.name == "run"
    ]
    assert run_app.app.registered_groups == []
    ours, whole = _run_command(run_app.app), _run_command(whole_cli.app)
    assert [(p.name, p.opts, p.type.name) for p in ours.params] == [(p.name, p.opts, p.type.name) for p in whole.params]


def test_the_operators_cronjob_and_run_now_jobs_are_run_lines_the_command_takes() -> None:
    """What the pods really run: the operator's rendered command and args, with every `run` option as a param."""
    params = {"batchSize": 5000, "dryRun": True, "grantFamily": "plan", "periodKey": "2026-11", "shard": "0/1"}
    job = parse_creditjob(
        {
            "metadata": {"name": "monthly", "namespace": "billing"},
            "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", "params": params},
        }
    )
    cronjob = build_cronjob(job, ManifestDefaults(image="img"))
    manual = build_job_from_cronjob(cronjob, name="monthly-m-1", trigger="manual", period_key="2026-10")
    for body in (cronjob["spec"]["jobTemplate"], manual):
        (container,) = body["spec"]["template"]["spec"]["containers"]
        command = [*container["command"], *container.get("args", [])]
        assert command[:2] == ["credit-jobs", "run"]
        ctx = _run_command(run_app.app).make_context("run", command[2:])
        assert ctx.params == {
            "usecase": "distribute-credits",
            "period_key": "2026-11",
            "dry_run": True,
            "shard": "0/1",
            "batch_size": 5000,
            "grant_family": "plan",
            "database_url": None,
            "verbose": False,
        }


def test_the_console_script_sends_a_run_line_to_the_run_app(monkeypatch: Any) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(run_app, "main", lambda args: seen.append(list(args)) or 7)
    assert main(["run", "expire-credits", "--dry-run"]) == 7
    assert seen == [["run", "expire-credits", "--dry-run"]]
