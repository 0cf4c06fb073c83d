"""The ledger commands of `credit-jobs`: `check` (the invariants), `consume`, `grant`, `void` (one request each,
idempotent) and `balance` / `grants` (one user's ledger). Registered on the app by `cli/app.py` through
`register(app)`.

Numbers are taken as text and parsed by the domain's ASCII-only parsers; every bad input is refused (exit 2)
before the database is touched. The usecases and Rich are imported by the command bodies.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer

from credit_jobs.domain.contract import DISTRIBUTE_CREDITS
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY, validate_grant_family
from credit_jobs.domain.limits import MAX_CREDITS, MAX_EXPIRY_DAYS, MAX_REQUEST_ID_LENGTH
from credit_jobs.domain.period_keys import Period, period_start
from credit_jobs.domain.period_ranges import check_jobs_period
from credit_jobs.domain.requests import (
    ONE_OFF_TYPES,
    parse_amount,
    parse_expires_in_days,
    parse_grant_id,
    parse_user_id,
    validate_request_id,
)
from credit_jobs.entrypoints.cli.options import DatabaseUrlOption, JsonOption
from credit_jobs.entrypoints.cli.support import (
    CliState,
    engine_for,
    human_time,
    jobs_period,
    plural,
    print_fitted_table,
    print_tab_separated,
    rich_out,
    say,
    state,
)
from credit_jobs.entrypoints.json_vocabulary import ledger_json, record, value

if TYPE_CHECKING:
    from credit_jobs.adapters.ledger_views import UserLedger
    from credit_jobs.entrypoints.settings import Settings
    from credit_jobs.usecases.check_invariants import CheckReport


def register(app: typer.Typer) -> None:
    """Add check, consume, grant, void, balance and grants to the jobs CLI (in this order: the help lists them so)."""
    app.command("check")(check)
    app.command("consume", context_settings=_NUMBERS_AS_TEXT)(consume)
    app.command("grant", context_settings=_NUMBERS_AS_TEXT)(grant)
    app.command("void", context_settings=_NUMBERS_AS_TEXT)(void)
    app.command("balance")(balance)
    app.command("grants")(grants)


# --- check --------------------------------------------------------------------------------------------------------


def _validate_period_key(key: str, settings: Settings) -> None:
    """A key of the job's period (CREDITJOB_PERIOD, else distribute-credits' monthly default): coverage of a daily
    key for a monthly job would report a period nobody distributes."""
    for period in Period:
        try:
            period_start(key, period, ZoneInfo("UTC"))
        except ConfigError:
            continue
        check_jobs_period(key, period, *jobs_period(settings, DISTRIBUTE_CREDITS), option="--period-key")
        return
    shown = key if len(key) <= 80 else key[:80] + "…"
    raise ConfigError(
        f"--period-key {shown!r} is not a period key: use e.g. 2026-11 (monthly), 2026-W48, 2026-11-28 or an hourly key"
    )


def check(
    ctx: typer.Context,
    json_output: JsonOption = False,
    period_key: Annotated[
        str | None,
        typer.Option(help="Also print this period's coverage: eligible users now without the period's grant."),
    ] = None,
    job: Annotated[
        str | None, typer.Option(help="With --period-key: also count this job's runs of the period.")
    ] = None,
    grant_family: Annotated[
        str | None, typer.Option(help=f"With --period-key: the grant family (default: {DEFAULT_GRANT_FAMILY}).")
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Check the ledger invariants; exit 1 listing violating rows."""
    from credit_jobs.usecases.check_invariants import check_invariants

    family = validate_grant_family(grant_family, source="--grant-family") if grant_family else DEFAULT_GRANT_FAMILY
    if period_key is not None:
        _validate_period_key(period_key, state(ctx).settings)
    engine = engine_for(database_url, state(ctx))
    report = check_invariants(engine, period_key=period_key, grant_family=family, job=job)
    if json_output:
        _print_report_json(report)
    else:
        _print_report(report, job)
    return 0 if report.ok else 1


def _print_report_json(report: CheckReport) -> None:
    coverage = report.coverage
    rich_out().print_json(
        json.dumps(
            {
                "ok": report.ok,
                "counts": report.counts,
                "violations": {k: [record(r) for r in v] for k, v in report.violations.items()},
                **({"coverage": record(dataclasses.asdict(coverage))} if coverage else {}),
            }
        )
    )


def _print_report(report: CheckReport, job: str | None) -> None:
    from credit_jobs.usecases.check_invariants import CHECKS

    out = rich_out()
    for name, (description, _) in CHECKS.items():
        rows = report.violations.get(name, [])
        mark = "[green]ok[/]" if not rows else f"[red]{len(rows)} violating rows[/]"
        out.print(f"invariant {description}: {mark}", soft_wrap=True)
        for row in rows:
            out.print(f"    {value(row)}", highlight=False)
    coverage = report.coverage
    if coverage:
        runs = ", ".join(f"{status}={n}" for status, n in coverage.runs.items()) or "none"
        say(
            f"coverage of period {coverage.period_key} (grant family {coverage.grant_family}): "
            f"{coverage.eligible} users eligible now, {coverage.missing} without the period's grant"
            + (f" (sample: {', '.join(map(str, coverage.missing_sample))})" if coverage.missing else "")
            + (f"; runs of {job}: {runs}" if job else "")
            + (
                f"; {len(coverage.stuck_runs)} runs stuck in running with no live holder: "
                + ", ".join(coverage.stuck_runs)
                if coverage.stuck_runs
                else ""
            )
        )


# --- consume, grant, void -----------------------------------------------------------------------------------------

# consume, grant and void take their numbers as text and parse them with the domain's ASCII-only parsers (Typer's
# int accepts `1_000`, `" 1 "` and any Unicode digit); unknown "options" are kept as arguments so that the natural
# spelling of a negative amount (`consume 42 -10`) is refused by the amount check, not as "No such option: -1".
_NUMBERS_AS_TEXT: dict[str, Any] = {"ignore_unknown_options": True}
RequestIdOption = Annotated[
    str | None,
    typer.Option(help=f"Idempotency: a repeated id applies once (printable, at most {MAX_REQUEST_ID_LENGTH} chars)."),
]


def consume(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user whose credits to spend.", show_default=False)],
    amount: Annotated[str, typer.Argument(help=f"Credits to spend (1..{MAX_CREDITS}).", show_default=False)],
    request_id: RequestIdOption = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Spend credits, soonest-expiring first (exit 1 if the user has too few). Without --request-id a fresh id is
    generated and printed: pass your own to make a retry safe."""
    from credit_jobs.usecases.consume import consume as consume_credits

    user, credits = parse_user_id(user_id), parse_amount(amount)
    if request_id is not None:
        validate_request_id(request_id)
    result = consume_credits(engine_for(database_url, state(ctx)), user, credits, request_id=request_id)
    verb = "already consumed" if result.replayed else "consumed"
    say(f"{verb} {credits} credits of user {user} (request {result.request_id})")
    return 0


def grant(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user to credit.", show_default=False)],
    amount: Annotated[str, typer.Argument(help=f"Credits to grant (1..{MAX_CREDITS}).", show_default=False)],
    idempotency_key: Annotated[str, typer.Option(help="A retried grant with the same key is given once.")],
    grant_type: Annotated[str, typer.Option("--type", help=f"One of: {', '.join(ONE_OFF_TYPES)}.")] = "gift",
    expires_in_days: Annotated[
        str | None, typer.Option(help=f"Expire after this many days (1..{MAX_EXPIRY_DAYS}); default: never.")
    ] = None,
    allow_unknown_user: Annotated[
        bool, typer.Option("--allow-unknown-user", help="Grant even if credit_eligibility does not have the user.")
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """A one-off grant: gift, purchase or manual adjustment. Refused (exit 2) for a user the eligibility source does
    not know, unless --allow-unknown-user."""
    from credit_jobs.domain.errors import UnknownUser
    from credit_jobs.usecases.grant import grant as grant_credits

    user, credits, days = parse_user_id(user_id), parse_amount(amount), parse_expires_in_days(expires_in_days)
    validate_request_id(idempotency_key, "idempotency key")
    if grant_type not in ONE_OFF_TYPES:  # bad input first, before the database is asked about the user
        raise ConfigError(f"grant type {grant_type!r} is not a one-off type: use one of {', '.join(ONE_OFF_TYPES)}")
    try:
        result = grant_credits(
            engine_for(database_url, state(ctx)),
            user,
            credits,
            grant_type=grant_type,
            idempotency_key=idempotency_key,
            expires_in_days=days,
            allow_unknown_user=allow_unknown_user,
        )
    except UnknownUser:
        raise UnknownUser(user, "pass --allow-unknown-user to grant anyway") from None
    verb = "granted" if result.created else "already granted (same idempotency key)"
    say(f"{verb}: grant {result.grant_id}, {credits} credits to user {user}")
    return 0


def void(
    ctx: typer.Context,
    grant_id: Annotated[str, typer.Argument(help="The grant to cancel (what is left of it).", show_default=False)],
    request_id: Annotated[str, typer.Option(help="Why, and idempotency: a repeated id voids once.")],
    database_url: DatabaseUrlOption = None,
) -> int:
    """Cancel the remaining credits of one grant (refund, mistake) with a void entry."""
    from credit_jobs.usecases.void_grant import void_grant

    grant_number = parse_grant_id(grant_id)
    validate_request_id(request_id)
    result = void_grant(engine_for(database_url, state(ctx)), grant_number, request_id=request_id)
    verb = "already voided" if result.replayed else "voided"
    rich_out().print(f"{verb} {result.voided} credits of grant {grant_number} (user {result.user_id})", highlight=False)
    return 0


# --- balance, grants ----------------------------------------------------------------------------------------------

GRANT_HEADERS = ("grant id", "type", "period", "remaining", "of", "expires", "state")
# In a narrow terminal, columns go in this order (the grant id, what `void` takes, never): README, Output.
GRANT_COLUMNS_DROPPED_FIRST = ("of", "period", "type", "state", "expires", "remaining")


def _ledger_of(user_id: str, database_url: str | None, cli: CliState, *, all_grants: bool) -> UserLedger:
    from credit_jobs.adapters import ledger_views

    user = parse_user_id(user_id)
    ledger = ledger_views.user_ledger(engine_for(database_url, cli), user, all_grants=all_grants)
    if not ledger.known and not ledger.has_account:
        raise ConfigError(f"no user {user}: not in credit_eligibility and no credit account; check the user id")
    return ledger


def _grant_rows(ledger: UserLedger) -> list[tuple[str, ...]]:
    return [
        (
            str(g["grant_id"]),
            g["grant_type"],
            g["period_key"] or "-",
            str(g["remaining"]),
            str(g["amount"]),
            human_time(g["expires_at"]) if g["expires_at"] else "never",
            g["state"],
        )
        for g in ledger.grants
    ]


def _print_grants(ledger: UserLedger) -> None:
    rows = _grant_rows(ledger)
    if not rows:
        return
    out = rich_out()
    if not out.is_terminal:
        print_tab_separated([GRANT_HEADERS, *rows])
        return
    print_fitted_table(GRANT_HEADERS, rows, GRANT_COLUMNS_DROPPED_FIRST)


def _ledger_json(ledger: UserLedger) -> str:
    return json.dumps(ledger_json(ledger))


def balance(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user.", show_default=False)],
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """A user's spendable credits and live grants (type, period, remaining, expiry), soonest-expiring first."""
    ledger = _ledger_of(user_id, database_url, state(ctx), all_grants=False)
    if json_output:
        typer.echo(_ledger_json(ledger))
        return 0
    past_expiry = ledger.balance - ledger.spendable
    say(
        f"user {ledger.user_id}: {plural(ledger.spendable, 'credit')} spendable in "
        f"{plural(len(ledger.grants), 'live grant')}"
        + (f" ({past_expiry} more past expiry, removed by the next expire-credits run)" if past_expiry > 0 else "")
        + ("" if ledger.known else "; not in credit_eligibility")
    )
    _print_grants(ledger)
    return 0


def grants(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user.", show_default=False)],
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Every grant of a user, newest first: live, used up, voided, expired or rolled back."""
    ledger = _ledger_of(user_id, database_url, state(ctx), all_grants=True)
    if json_output:
        typer.echo(_ledger_json(ledger))
        return 0
    say(f"user {ledger.user_id}: {plural(len(ledger.grants), 'grant')}")
    _print_grants(ledger)
    return 0
