"""`credit-jobs demo`: the whole flow on one database — seed, distribute, consume some, expire, check —
ending in a summary table. Uses the same run lifecycle as a CronJob container, so the demo exercises the product.
"""

from __future__ import annotations

import random

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from credit_jobs.adapters import database, demo_database
from credit_jobs.domain.errors import InsufficientCredits
from credit_jobs.lifecycle.run_lifecycle import RunOutcome, RunRequest, execute_run
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.demo_data import seed_demo_data
from credit_jobs.usecases.registry import get_usecase

CONSUMERS = 25


def run_demo(engine: sa.Engine, url: str, *, users: int, seed: int, console: Console) -> int:
    seeded = seed_demo_data(engine, users, seed=seed)
    present = demo_database.eligible_users(engine)  # the title states the data, not only what was asked for
    shown = f"{present} users" if present == users else f"{present} users in this database, {users} seeded"
    table = Table("step", "result", title=f"credit-jobs demo ({shown}, seed {seed})")
    table.add_row(
        "seed",
        f"{seeded.users} users, {seeded.policies} plans + '{seeded.misconfigured_plan}' "
        "(no policy), gifts expiring ±2 days",
    )

    def factory() -> sa.Engine:
        return database.create_engine(url)

    distributed = execute_run(RunRequest(usecase=get_usecase("distribute-credits"), job="demo-distribute"), factory)
    table.add_row(
        "distribute-credits",
        _describe(distributed, ("granted", "already_granted", "banned", "inactive", "unconfigured_plan_users")),
    )
    unconfigured = distributed.stats.as_dict().get("unconfigured_plan_users", 0) if distributed.stats else 0
    if unconfigured:
        table.add_row(
            "  (on purpose)",
            f"{unconfigured} users on plan '{seeded.misconfigured_plan}' got nothing: the plan has no "
            "plan_credit_policies row — a real run logs this as the distribute.unconfigured_plans warning",
        )
    rerun = execute_run(RunRequest(usecase=get_usecase("distribute-credits"), job="demo-distribute"), factory)
    table.add_row("distribute-credits (rerun)", _describe(rerun, ("granted", "already_granted")))

    rng = random.Random(seed)
    taken = refused = 0
    for user_id in rng.sample(range(1, users + 1), min(CONSUMERS, users)):
        try:
            consume(engine, str(user_id), rng.choice([10, 80, 400, 5000]), request_id=f"demo-{seed}-{user_id}")
            taken += 1
        except InsufficientCredits:
            refused += 1
    table.add_row("consume", f"{taken} consumptions, {refused} refused for insufficient credits")

    expired = execute_run(RunRequest(usecase=get_usecase("expire-credits"), job="demo-expire"), factory)
    table.add_row("expire-credits", _describe(expired, ("expired_grants",), credits="expired"))

    report = check_invariants(engine)
    table.add_row("check", "all invariants hold" if report.ok else f"VIOLATED: {', '.join(report.violations)}")
    balance = demo_database.total_balance(engine)
    table.add_row("total balance", f"{balance} credits over {report.counts['credit_accounts']} accounts")
    console.print(table)
    ok = report.ok and all(o.exit_code == 0 for o in (distributed, rerun, expired))
    return 0 if ok else 1


def _describe(outcome: RunOutcome, fields: tuple[str, ...], credits: str = "granted") -> str:
    if outcome.stats is None:
        return f"{outcome.status}: {outcome.error}"
    stats = outcome.stats.as_dict()
    parts = [f"{name.replace('_', ' ')} {stats.get(name, 0)}" for name in fields]
    parts.append(f"credits {credits} {outcome.stats.credits.get(credits, 0)}")
    return f"{outcome.status} (period {outcome.period_key}): " + ", ".join(parts)
