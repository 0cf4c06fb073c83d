"""The fast `run` parser (`entrypoints/cli/run_line.py`) and the Typer `run` command are one command: the same options,
and every line the fast parser takes is one Typer takes, with the same values.

Typer's own parser is the reference: each line is parsed by the Typer command (`make_context`, no run) and by
`run_line.parse`. The lines the parser leaves to Typer (help, usage errors) are run by Typer itself — what
`cli.main` does — so their messages need no test here; tests/integration/cli/test_fast_start.py runs both paths as
processes and compares exit codes and messages.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import typer

from credit_jobs.entrypoints.cli import run_line
from credit_jobs.entrypoints.cli.app import app
from credit_operator.creditjob import parse_creditjob
from credit_operator.cronjob_manifest import ManifestDefaults, build_cronjob, build_job_from_cronjob

_ROOT = typer.main.get_command(app)
_RUN = _ROOT.commands[run_line.COMMAND]  # type: ignore[attr-defined]


def _typer_params(args: list[str]) -> dict[str, Any] | None:
    """What the Typer `run` command would be called with, or None when it refuses the line (a usage error)."""
    try:
        ctx = _RUN.make_context(run_line.COMMAND, list(args[1:]))
    except (typer.Exit, typer.Abort, typer.BadParameter, typer.core._click.exceptions.ClickException):
        return None
    return dict(ctx.params)


def _shim_params(args: list[str]) -> dict[str, Any] | None:
    line = run_line.parse(args)
    if line is None:
        return None
    return {
        "usecase": line.usecase,
        "database_url": line.database_url,
        "verbose": line.verbose,
        **dataclasses.asdict(line.options),
    }


def test_the_fast_parser_has_exactly_the_typer_commands_options() -> None:
    options = {opt: param.name for param in _RUN.params if param.param_type_name == "option" for opt in param.opts}
    flags = {opt: param.name for param in _RUN.params if getattr(param, "is_flag", False) for opt in param.opts}
    arguments = [param.name for param in _RUN.params if param.param_type_name == "argument"]
    assert options == {**run_line.OPTIONS, **run_line.FLAGS}
    assert flags == run_line.FLAGS
    assert arguments == ["usecase"]
    assert all(not param.secondary_opts and param.envvar is None for param in _RUN.params)  # no --no-x, no env


# What CronJob containers and people type: the fast parser must take every one of these.
CRONJOB_LINES = [
    ["run", "distribute-credits"],
    ["run", "expire-credits", "--dry-run"],
    ["run", "distribute-credits", "--shard", "1/4", "--batch-size", "5000", "--grant-family", "plan"],
    ["run", "--period-key=2026-11", "distribute-credits", "--database-url", "postgresql://u@h/db"],
    ["run", "purge-retention", "--batch-size=007", "--period-key", ""],
    ["run", "no-such-usecase"],  # parsed; refused later by the usecase registry, on both paths alike
    ["run", "expire-credits", "--batch-size", "0"],  # parsed; refused by the batch-size check, on both paths
]


@pytest.mark.parametrize("args", CRONJOB_LINES, ids=" ".join)
def test_a_plain_run_line_takes_the_fast_path_with_typers_values(args: list[str]) -> None:
    assert _shim_params(args) is not None
    assert _shim_params(args) == _typer_params(args)


def test_the_operators_cronjob_and_run_now_jobs_take_the_fast_path() -> None:
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
        assert command[0] == "credit-jobs"
        assert _shim_params(command[1:]) == _typer_params(command[1:])
        assert _shim_params(command[1:]) is not None


# Lines left to Typer: its help, and its usage errors with their messages.
TYPER_LINES = [
    ["run"],
    ["run", "--help"],
    ["run", "expire-credits", "--help"],
    ["--version"],
    ["run", "expire-credits", "--bogus"],
    ["run", "expire-credits", "--dry"],  # Typer suggests --dry-run
    ["run", "expire-credits", "--batch-size"],
    ["run", "expire-credits", "--batch-size", "ten"],
    ["run", "expire-credits", "--batch-size", "5_000"],  # Typer (pydantic) reads 5000: left to it
    ["run", "expire-credits", "--dry-run=yes"],
    ["run", "expire-credits", "--dry-run", "--dry-run"],
    ["run", "expire-credits", "--shard", "1/2", "--shard", "0/2"],
    ["run", "expire-credits", "distribute-credits"],
    ["run", "expire-credits", "--", "x"],
    ["run", "expire-credits", "--period-key", "-1"],
    ["run", "expire-\udcff"],
    ["runs", "list"],
    ["--database-url", "x", "run", "expire-credits"],
]


@pytest.mark.parametrize("args", TYPER_LINES, ids=" ".join)
def test_anything_unusual_is_left_to_typer(args: list[str]) -> None:
    assert run_line.parse(args) is None


def test_a_shell_completion_request_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(run_line.COMPLETION_VARIABLE, "bash_complete")
    assert run_line.parse(["run", "expire-credits"]) is None


_TOKENS = [
    "expire-credits",
    "distribute-credits",
    "--dry-run",
    "--dry-run=1",
    "--period-key",
    "--period-key=2026-11",
    "--shard",
    "--shard=0/2",
    "--batch-size",
    "--batch-size=12",
    "--grant-family",
    "--database-url",
    "--help",
    "--",
    "-",
    "12",
    "0/3",
    "",
    "-5",
    " 7",
    "x=y",
]


def test_every_line_the_fast_parser_takes_typer_takes_with_the_same_values() -> None:
    """Random lines from the options, their values and near misses: the fast parser may leave a line to Typer,
    but never takes one Typer refuses or reads differently."""
    rng = random.Random(9)
    taken = 0
    for _ in range(3000):
        args = ["run", *rng.choices(_TOKENS, k=rng.randint(0, 6))]
        shim = _shim_params(args)
        if shim is not None:
            taken += 1
            assert shim == _typer_params(args), args
    assert taken > 100  # the sample does exercise the fast path
