"""`credit-jobs schedule`: the next fire times of a schedule with the period key each run would get, and DST notes.
No database. Registered on the app by `cli/app.py` through `register(app)`; `schedule_rows` is what it prints.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import islice
from typing import Annotated, Any

import typer

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.schedule import Schedule
from credit_jobs.entrypoints.cli.options import JsonOption
from credit_jobs.entrypoints.json_vocabulary import record

MAX_SCHEDULE_COUNT = 1000


def register(app: typer.Typer) -> None:
    """Add `schedule` to the jobs CLI."""
    app.command("schedule")(schedule_command)


def _parse_from(value: str | None, schedule: Schedule) -> datetime:
    """--from: ISO 8601; without an offset it is read as wall-clock time in the schedule's zone; default now."""
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--from {value!r} is not an ISO 8601 time: use e.g. 2026-11-01T00:00:00+00:00") from None
    return moment.replace(tzinfo=schedule.tz) if moment.tzinfo is None else moment


def schedule_rows(schedule: Schedule, start: datetime, count: int) -> list[dict[str, Any]]:
    """The next `count` fire times after `start` with their period keys and DST notes (what `schedule` prints)."""
    rows: list[dict[str, Any]] = []
    previous = start
    for fire in islice(schedule.fires_after(start), count):
        local = schedule.local(fire)
        notes = [
            f"no fire at {wall:%Y-%m-%dT%H:%M}: skipped by the DST change"
            for wall in schedule.skipped_walls(previous, fire)
        ]
        if schedule.repeats(fire):
            offset = local.isoformat()[-6:]
            notes.append(f"fires twice: {local:%H:%M} happens twice at the DST change; this is the UTC{offset} one")
        rows.append(
            {
                "fire_time": local.isoformat(),
                "fire_time_utc": fire.isoformat().replace("+00:00", "Z"),
                "period_key": schedule.period_key_of(fire),
                "notes": notes,
            }
        )
        previous = fire
    return rows


def schedule_command(
    expression: Annotated[str, typer.Argument(metavar="SCHEDULE", help="Five-field cron expression or @macro.")],
    time_zone: Annotated[str, typer.Option("--time-zone", help="IANA time zone of the schedule.")] = "UTC",
    period: Annotated[str, typer.Option(help="monthly, weekly, daily or hourly: the period keys shown.")] = "monthly",
    from_time: Annotated[
        str | None, typer.Option("--from", help="ISO 8601 start (default now; no offset: in --time-zone).")
    ] = None,
    count: Annotated[int, typer.Option(help=f"How many fire times (1..{MAX_SCHEDULE_COUNT}).")] = 10,
    json_output: JsonOption = False,
) -> int:
    """The next fire times of a schedule with the period key each run would get, and DST notes. No database."""
    if not 1 <= count <= MAX_SCHEDULE_COUNT:
        raise ConfigError(f"--count {count} is outside 1..{MAX_SCHEDULE_COUNT}")
    parsed = Schedule.parse(expression, time_zone, period)
    rows = schedule_rows(parsed, _parse_from(from_time, parsed), count)
    if json_output:
        typer.echo(json.dumps([record(row) for row in rows]))
        return 0
    for row in rows:
        notes = f"  ({'; '.join(row['notes'])})" if row["notes"] else ""
        typer.echo(f"{row['fire_time']}  {row['period_key']}{notes}")
    return 0
