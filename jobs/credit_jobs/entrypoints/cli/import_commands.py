"""The `credit-jobs import` command group: `import saas-template` moves a SaaS template database's live
credits into the ledger.

`register(app)` adds the group to the main Typer app. The command checks its input
before anything is written — the options (`domain.saas_template`), then the source schema's tables
(`usecases.import_saas_template.verify_source`): bad input exits 2 with one line and leaves no audit row — and then
runs the import through the run lifecycle (`lifecycle.run_lifecycle.execute_run`, trigger `import`: run id, guard,
audit row, logs, metrics). The template's tables are read in the ledger's own database, in the schema
`--source-schema` names (docs/adopting.md says how to reach a template in another database).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from credit_jobs.domain.contract import EXIT_CONFIG_ERROR, IMPORT_SAAS_TEMPLATE, Period, Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import format_key
from credit_jobs.domain.saas_template import parse_as_of, validate_source_schema
from credit_jobs.entrypoints.cli.options import DatabaseUrlOption
from credit_jobs.entrypoints.cli.support import engine_for, run_timeouts, say, state, warn

SHOWN = 5  # sample rows printed per finding (the audit row keeps 20)

import_app = typer.Typer(no_args_is_help=True, help="Move credits from another system into the ledger.")


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")


@import_app.command("saas-template")
def import_saas_template(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be imported; write nothing.")] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="T",
            help="Import the grants still unexpired at T (ISO 8601; no offset = UTC). Default: now.",
            show_default=False,
        ),
    ] = None,
    source_schema: Annotated[
        str,
        typer.Option("--source-schema", metavar="S", help="The schema of this database holding the template's tables."),
    ] = "public",
    grant_family: Annotated[
        str | None, typer.Option(help="The distributing job's grant family; default CREDITJOB_GRANT_FAMILY (plan).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Template grants per transaction.")] = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Import the template's live credits (unexpired credit_transaction grants with remaining_amount > 0) as ledger
    grants — type, expiry and month kept, so this month's distribution does not grant again — and reconcile balances
    against user_credit. A second import changes nothing."""
    from credit_jobs.entrypoints.cli.run_command import print_outcome, with_progress
    from credit_jobs.entrypoints.run_requests import run_request
    from credit_jobs.lifecycle.run_lifecycle import execute_run
    from credit_jobs.usecases.import_saas_template import (
        ImportScope,
        import_usecase,
        verify_source,
    )

    cli = state(ctx)
    settings = cli.settings
    # 1. The options, before anything is opened.
    schema = validate_source_schema(source_schema)
    cutoff = parse_as_of(as_of) if as_of is not None else None
    if cutoff is not None and cutoff > datetime.now(UTC):
        raise ConfigError(
            f"--as-of {cutoff.isoformat()} is in the future: grants still live now would be left out; omit --as-of "
            "(default: now) or give a past time"
        )
    request = run_request(
        settings,
        import_usecase(ImportScope(schema, cutoff)),
        job=IMPORT_SAAS_TEMPLATE,
        batch_size=batch_size,
        grant_family=grant_family,
        dry_run=dry_run,
        trigger=Trigger.IMPORT.value,
        period=Period.MONTHLY,
        pinned_key=format_key(cutoff, Period.MONTHLY) if cutoff is not None else None,
    )
    # 2. The source: the template's tables must be where --source-schema says (exit 2, no audit row otherwise).
    checked = engine_for(database_url, cli)
    try:
        verify_source(checked, schema)
    finally:
        checked.dispose()
    # 3. The run.
    timeouts = run_timeouts(settings)
    outcome = with_progress(
        "import saas-template: grants",
        lambda progress: execute_run(
            request, lambda: engine_for(database_url, cli, verify=False, timeouts=timeouts), progress=progress
        ),
    )
    if outcome.status == "skipped":  # a distribution of the cut-over month (or another import) is running
        warn(
            f"credit-jobs: error: import refused: {outcome.error}; nothing was imported — wait for that run to finish "
            "(`credit-jobs runs list`), then import"
        )
        return EXIT_CONFIG_ERROR
    print_outcome(outcome, request.job, request.shard)
    if outcome.stats is not None:
        print_findings(outcome.stats.details, dry_run=dry_run)
    return outcome.exit_code


def print_findings(details: dict[str, Any], *, dry_run: bool) -> None:
    """What a person must look at after an import: the months now held, and every mismatch, with a few samples."""
    held = details.get("would_hold_periods" if dry_run else "periods_held") or {}
    for key, count in held.items():
        say(
            f"month {key}: {count} imported grants {'would hold' if dry_run else 'hold'} it — distribute-credits "
            "will not grant those users that month again"
        )
    mismatches = details.get("balance_mismatches", 0)
    if mismatches:
        say(
            f"balances: {mismatches} of {details.get('reconciled_users', 0)} users have user_credit.current_credits "
            "different from their live grants (the ledger keeps the grants):"
        )
        for row in details.get("balance_mismatch_sample", [])[:SHOWN]:
            say(
                f"    user {row['user_id']}: live grants {row['live_grants']}, user_credit {row['user_credit']} "
                f"({row['user_credit_rows']} user_credit rows)"
            )
    duplicates = details.get("duplicate_user_credit_users", 0)
    if duplicates:
        sample = ", ".join(str(r["user_id"]) for r in details.get("duplicate_user_credit_sample", [])[:SHOWN])
        say(f"duplicate user_credit rows: {duplicates} users (e.g. {sample}); compared with each one's latest row")
    taken = details.get("period_already_granted", 0)
    if taken:
        sample = ", ".join(
            f"{r['user_id']} ({r['period_key']})" for r in details.get("period_already_granted_sample", [])[:SHOWN]
        )
        warn(
            f"credit-jobs: warning: {taken} template grants were not imported: the ledger already granted those users "
            f"that month (e.g. {sample}) — distribute-credits ran before the import"
        )
    for name, what in (
        ("unknown_types", "unknown types imported as adjustment"),
        ("unreadable_period_keys", "period keys that are no YYYYMM month, imported without a period"),
    ):
        if details.get(name):
            warn(f"credit-jobs: warning: {what}: {', '.join(map(str, details[name]))}")
