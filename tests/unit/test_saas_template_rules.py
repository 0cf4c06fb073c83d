"""The pure rules of `credit-jobs import saas-template` (credit_jobs.domain.saas_template): type and period-key
mapping, the import key, and the command's input checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import Period, format_key
from credit_jobs.domain.saas_template import (
    import_key,
    ledger_grant_type,
    ledger_period_key,
    parse_as_of,
    plan_import,
    validate_source_schema,
)


@pytest.mark.parametrize(
    ("template", "ledger"),
    [
        ("MONTHLY_REFRESH", "free_tier"),
        ("SUBSCRIPTION_RENEWAL", "subscription"),
        ("LIFETIME_MONTHLY", "lifetime_monthly"),
        ("REGISTER_GIFT", "gift"),
        ("PURCHASE_PACKAGE", "purchase"),
        ("TRANSFER_IN", "adjustment"),
        ("SOMETHING_CUSTOM", "adjustment"),
    ],
)
def test_each_template_grant_type_maps_to_a_ledger_grant_type(template: str, ledger: str) -> None:
    assert ledger_grant_type(template) == ledger


def test_the_monthly_types_map_to_the_periodic_types_distribution_writes() -> None:
    from credit_jobs.adapters.tables import PERIODIC_GRANT_TYPES

    plan = plan_import(["MONTHLY_REFRESH", "SUBSCRIPTION_RENEWAL", "LIFETIME_MONTHLY", "REGISTER_GIFT"], [])
    periodic = {ledger for ledger, is_periodic in plan.types.values() if is_periodic}
    assert periodic == set(PERIODIC_GRANT_TYPES)
    assert plan.types["REGISTER_GIFT"] == ("gift", False)


@pytest.mark.parametrize(
    ("template", "ledger"), [(202611, "2026-11"), (202601, "2026-01"), (202612, "2026-12"), (197001, "1970-01")]
)
def test_a_template_period_key_is_this_projects_monthly_key(template: int, ledger: str) -> None:
    assert ledger_period_key(template) == ledger


def test_the_mapped_key_is_the_key_distribution_computes_for_that_month() -> None:
    for year in (1999, 2026, 2099):
        for month in range(1, 13):
            moment = datetime(year, month, 15, tzinfo=UTC)
            assert ledger_period_key(year * 100 + month) == format_key(moment, Period.MONTHLY)


@pytest.mark.parametrize("template", [0, -1])
def test_zero_means_not_periodic(template: int) -> None:
    assert ledger_period_key(template) is None


@pytest.mark.parametrize("template", [202613, 202600, 2026, 99, 196912, 1_000_001])
def test_a_number_that_is_no_month_is_refused(template: int) -> None:
    with pytest.raises(ValueError, match="YYYYMM"):
        ledger_period_key(template)


def test_the_plan_lists_unknown_types_and_unreadable_keys_without_dropping_them() -> None:
    plan = plan_import(["REGISTER_GIFT", "BONUS", "BONUS"], [0, 202611, 202613, 202611])
    assert plan.types == {"BONUS": ("adjustment", False), "REGISTER_GIFT": ("gift", False)}
    assert plan.unknown_types == ["BONUS"]
    assert plan.period_keys == {202611: "2026-11"}
    assert plan.unreadable_period_keys == [202613]


def test_the_import_key_names_the_source_row() -> None:
    assert import_key("ct_9f2a") == "saas-template:ct_9f2a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
        ("2026-11-29T10:00:00", datetime(2026, 11, 29, 10, tzinfo=UTC)),
        ("2026-11-29T10:00:00Z", datetime(2026, 11, 29, 10, tzinfo=UTC)),
        ("2026-11-29T18:00:00+08:00", datetime(2026, 11, 29, 10, tzinfo=UTC)),
    ],
)
def test_as_of_is_read_as_utc_unless_it_says_otherwise(text: str, expected: datetime) -> None:
    parsed = parse_as_of(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-13-01", "\uff12\uff10\uff12\uff16-11-29", "2026-11-29T25:00", "29/11/2026"]
)
def test_a_malformed_as_of_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ConfigError, match="2026-11-29T10:00:00Z"):
        parse_as_of(text)


@pytest.mark.parametrize("name", ["public", "saas_template", "Mixed Case", "x" * 63])
def test_schema_names_are_taken_as_stored(name: str) -> None:
    assert validate_source_schema(name) == name


@pytest.mark.parametrize("name", ["", " public", "pub\nlic", "x" * 64, "é" * 32])
def test_a_schema_name_postgresql_cannot_hold_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="--source-schema"):
        validate_source_schema(name)
