"""How `credit-jobs run` (`cli.runs_commands.run`) runs a usecase once: the run lifecycle, the progress bar and the
outcome line, which `cli.ops_commands` (rollback, backfill) reuse.

Every CronJob run imports it (the start-up rule: `cli/__init__.py`); Rich only for a terminal's progress bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from credit_jobs.domain.contract import TRIGGERS, Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import parse_period
from credit_jobs.domain.sharding import Shard, parse_shard, shard_from_env
from credit_jobs.entrypoints.cli.support import CliState, engine_for, rich_err, run_timeouts, say, warn

if TYPE_CHECKING:
    import sqlalchemy as sa

    from credit_jobs.lifecycle.run_lifecycle import Progress, RunOutcome, RunRequest


def run_usecase(cli: CliState, usecase: str, options: RunOptions, database_url: str | None) -> int:
    """Run `usecase` once inside the run lifecycle; print its outcome line; return its exit code. A bad option or
    setting raises ConfigError (exit 2) before anything connects."""
    from credit_jobs.lifecycle.run_lifecycle import execute_run

    request = run_request(cli, usecase, options)
    timeouts = run_timeouts(cli.settings)  # out of range: ConfigError before anything connects

    def engine_factory() -> sa.Engine:
        return engine_for(database_url, cli, verify=False, timeouts=timeouts)

    label = f"{request.usecase.name}: {WALKED.get(request.usecase.name, 'items')}"
    outcome = with_progress(label, lambda progress: execute_run(request, engine_factory, progress=progress))
    print_outcome(outcome, request.job, request.shard)
    return outcome.exit_code


@dataclass(frozen=True)
class RunOptions:
    """The `run` options that override the container's environment (None: not given)."""

    period_key: str | None
    dry_run: bool
    shard: str | None
    batch_size: int | None
    grant_family: str | None


def run_request(cli: CliState, usecase: str, options: RunOptions) -> RunRequest:
    """The run's request: the options, else the container's environment (docs/contract.md), checked here."""
    from credit_jobs.entrypoints.run_requests import run_request as run_request_from
    from credit_jobs.entrypoints.settings import bind_settings
    from credit_jobs.usecases.registry import get_usecase

    settings = cli.settings
    spec = bind_settings(get_usecase(usecase), settings)  # purge-retention: its retention
    request = run_request_from(
        settings,
        spec,
        job=settings.creditjob_name or spec.name,
        batch_size=options.batch_size,
        grant_family=options.grant_family,
        dry_run=options.dry_run,
        trigger=settings.creditjob_trigger
        or (Trigger.SCHEDULE.value if settings.creditjob_schedule else Trigger.CLI.value),
        period=parse_period(settings.creditjob_period) if settings.creditjob_period else None,
        schedule=settings.creditjob_schedule,
        time_zone=settings.creditjob_time_zone,
        pinned_key=options.period_key or settings.creditjob_period_key,
        shard=(
            parse_shard(options.shard)
            if options.shard
            else shard_from_env(settings.job_completion_index, settings.creditjob_shards)
        ),
        requested_by=settings.creditjob_requested_by,
    )
    if request.trigger not in TRIGGERS:
        raise ConfigError(f"CREDITJOB_TRIGGER={request.trigger!r} is not one of {', '.join(TRIGGERS)}")
    return request


# What each usecase's progress counts, for the progress bar's label.
WALKED = {"distribute-credits": "users", "expire-credits": "grants", "cleanup-storage": "files"}


def with_progress(label: str, call: Callable[[Progress | None], RunOutcome]) -> RunOutcome:
    if not sys.stderr.isatty():
        return call(None)  # plain progress lines come from the lifecycle's log
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=rich_err(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return call(advance)


RUN_ALWAYS = ("granted", "already_granted", "skipped")
DRY_RUN_ALWAYS = ("would_grant",)  # a dry run states only what would change
# expire-credits' headline counts: stated whenever it reports them, zeros included (nothing due says so)
EXPIRE_ALWAYS = ("expired_grants", "would_expire_grants", "would_expire_credits")


def print_outcome(outcome: RunOutcome, job: str, shard: Shard) -> None:
    if outcome.status in ("succeeded", "skipped"):
        _print_success(outcome, shard)
        return
    failed_items = outcome.stats.details.get("failed_items") if outcome.stats else None
    named = ""
    if failed_items:  # name the first failed item, so the one line says where to look
        ids = ", ".join(f"{k}={v}" for k, v in failed_items[0].items() if k != "reason")
        named = f"; first failed item: {ids} (all in `credit-jobs runs show {outcome.run_id} --json`)"
    # A run id only once its audit row exists: a run that failed before it started (bad period key, database
    # unreachable) has none, and naming its id would send a person to `runs show` for nothing.
    what = f"run {outcome.run_id} failed" if outcome.recorded else f"{job} did not start"
    warn(f"credit-jobs: error: {what}: {outcome.error}{named}")


def _print_success(outcome: RunOutcome, shard: Shard) -> None:
    counts = outcome.stats.as_dict() if outcome.stats else {}
    # distribute-credits (it counts users_seen): what was granted, what already was and what was skipped are
    # always stated, zeros included (a no-op rerun says granted=0); expire-credits' too; others only when not zero.
    always: tuple[str, ...] = (DRY_RUN_ALWAYS if outcome.dry_run else RUN_ALWAYS) if "users_seen" in counts else ()
    always += tuple(key for key in EXPIRE_ALWAYS if key in counts)
    ordered = {**{k: counts.get(k, 0) for k in always}, **counts}
    summary = ", ".join(
        f"{k}={v}" for k, v in ordered.items() if isinstance(v, int) and not isinstance(v, bool) and (v or k in always)
    )
    notes = [note for note in ("dry run, nothing written" if outcome.dry_run else None, outcome.error) if note]
    reason = f" ({'; '.join(notes)})" if notes else ""
    say(
        f"run {outcome.run_id} {outcome.status}{reason}: period {outcome.period_key}"
        + (f"; {summary}" if summary else "")
    )
    if outcome.status == "succeeded" and counts.get("users_seen") == 0:
        warn(
            "credit-jobs: warning: the eligibility source had no users (credit_eligibility"
            + (f", shard {shard.label}" if shard.count > 1 else "")
            + "): nothing was granted — check that your application feeds it"
        )
