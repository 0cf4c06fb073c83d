"""Spec checks the schema cannot do: each bad spec with the one-line message the user will see."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.schedule import Schedule
from credit_operator.creditjob import parse_creditjob, parse_spec
from credit_operator.spec_checks import check_spec, shortest_gap

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def problems(name: str = "cj", **spec: Any) -> list[str]:
    body = {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", **spec},
    }
    return check_spec(parse_creditjob(body), NOW)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"schedule": "@hourly", "period": "hourly", "startingDeadlineSeconds": 600, "activeDeadlineSeconds": 1800},
        {"schedule": "10 0 * * *", "timeZone": "Asia/Shanghai", "period": "daily"},
        {"schedule": "0 0 29 2 *", "period": "monthly"},  # leap years only: fires, gap of four years
        {"params": {"batchSize": 1, "dryRun": True, "bucket": "b", "ratio": 0.5}},
    ],
)
def test_good_specs_have_no_problems(spec: dict[str, Any]) -> None:
    assert problems(**spec) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"timeZone": "Mars/Olympus"}, "spec.timeZone: unknown time zone 'Mars/Olympus'"),
        ({"schedule": "0 0 30 2 *"}, "spec.schedule: schedule '0 0 30 2 *' never fires (no such date)"),
        ({"schedule": "0 0 31 4,6,9,11 *"}, "never fires"),
        ({"schedule": "0 0 1 *"}, "must have five fields"),
        ({"schedule": "61 0 * * *"}, "is not a valid cron expression"),
        (
            {"schedule": "@hourly", "startingDeadlineSeconds": 3600, "activeDeadlineSeconds": 1800},
            "spec.startingDeadlineSeconds + spec.activeDeadlineSeconds = 5400s must be shorter than the shortest "
            "gap between two fires of '@hourly' (3600s)",
        ),
        (
            {"schedule": "0 9 * * 1-5", "startingDeadlineSeconds": 86400, "activeDeadlineSeconds": 1},
            "(86400s)",  # weekdays: Monday→Tuesday is the shortest gap, not Friday→Monday
        ),
        ({"usecase": "grant-everything"}, "spec.usecase: 'grant-everything' is not one of"),
        ({"period": "yearly"}, "spec.period: 'yearly' is not one of"),
        ({"concurrencyPolicy": "Never"}, "spec.concurrencyPolicy: 'Never' is not one of"),
        ({"parallelism": 0}, "spec.parallelism: 0 is outside 1..64"),
        ({"catchUp": {"maxPeriods": 99}}, "spec.catchUp.maxPeriods: 99 is outside 0..24"),
        ({"startingDeadlineSeconds": 1}, "spec.startingDeadlineSeconds: 1 is outside"),
        ({"params": {"batch_size": 1}}, "spec.params.batch_size: keys must be camelCase"),
        ({"params": {"nested": {"a": 1}}}, "spec.params.nested: values must be a string, number or boolean"),
    ],
)
def test_bad_specs_are_explained(spec: dict[str, Any], message: str) -> None:
    found = problems(**spec)
    assert any(message in p for p in found), found


def test_a_name_too_long_for_the_cronjob_is_a_problem() -> None:
    assert problems(name="x" * 53) == ["metadata.name is 53 characters; at most 52 fit a CronJob name"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"backoffLimit": "3"}, "spec.backoffLimit has the wrong type"),
        ({"parallelism": True}, "spec.parallelism must be an integer"),
        ({"schedule": ""}, "spec.schedule is required"),
        ({"catchUp": 3}, "spec.catchUp has the wrong type"),
        # resources as Kubernetes types them: maps of quantities (the manifest builder used to raise on these)
        ({"resources": {"requests": "lots"}}, "spec.resources.requests has the wrong type: got 'lots'"),
        ({"resources": {"limits": ["1"]}}, r"spec.resources.limits has the wrong type: got \['1'\]"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu must be a quantity"),
        ({"resources": {"limits": {"memory": True}}}, "spec.resources.limits.memory must be a quantity"),
        ({"resources": {"limits": {"memory": {"Mi": 512}}}}, "spec.resources.limits.memory must be a quantity"),
        ({"resources": "big"}, "spec.resources has the wrong type"),
    ],
)
def test_specs_of_the_wrong_shape_cannot_be_parsed(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec({"usecase": "distribute-credits", "schedule": "0 0 1 * *", **spec})


@pytest.mark.parametrize(
    ("schedule", "zone", "seconds"),
    [
        ("* * * * *", "UTC", 60),
        ("@daily", "UTC", 86400),
        ("0 0 1 * *", "UTC", 28 * 86400),  # February
        # Kubernetes' semantics: the 02:30 the spring-forward skips does not fire at 03:30 (it used to, with croniter),
        # and the gap is measured between periods (monthly here): a day.
        ("30 2 * * *", "America/New_York", 86400),
    ],
)
def test_shortest_gap_between_fires(schedule: str, zone: str, seconds: float) -> None:
    gap = shortest_gap(Schedule.parse(schedule, zone), NOW)
    assert gap is not None
    assert gap.total_seconds() <= seconds
    assert gap.total_seconds() >= seconds - 3600


def test_a_spec_with_several_wrong_types_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(
            {
                "usecase": "distribute-credits",
                "schedule": "0 0 1 * *",
                "backoffLimit": "3",
                "suspend": "yes",
                "catchUp": {"maxPeriods": "2"},
                "params": [],
            }
        )
    assert getattr(caught.value, "problems", None) == [
        "spec.suspend has the wrong type: got 'yes'",
        "spec.backoffLimit has the wrong type: got '3'",
        "spec.params has the wrong type: got []",
        "spec.catchUp.maxPeriods has the wrong type: got '2'",
    ]
    assert str(caught.value) == "; ".join(caught.value.problems)  # type: ignore[attr-defined]


def test_missing_required_fields_and_wrong_types_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec({"usecase": "distribute-credits", "parallelism": True})
    assert caught.value.problems == [  # type: ignore[attr-defined]
        "spec.schedule is required",
        "spec.parallelism must be an integer, got True",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"timeZone": "Asia"}, "spec.timeZone: unknown time zone 'Asia'"),  # a tzdata directory
        ({"schedule": "0 0 L * *"}, "the day-of-month field 'L' is not accepted by Kubernetes CronJobs"),
        ({"schedule": "0 0 1W * *"}, "the day-of-month field '1W'"),
        ({"schedule": "0 0 * * 5L"}, "the day-of-week field '5L'"),
        ({"schedule": "0 0 * * 1#2"}, "the day-of-week field '1#2'"),
        ({"schedule": "H 0 * * *"}, "the minute field 'H'"),
        ({"schedule": "@fortnightly"}, "is not one of @annually"),
    ],
)
def test_what_the_cronjob_api_refuses_is_an_invalid_spec(spec: dict[str, Any], message: str) -> None:
    (problem,) = problems(**spec)
    assert message in problem


@pytest.mark.parametrize(
    ("schedule", "period"),
    [
        ("0 0 ? * *", "daily"),
        ("0 0 1 JAN-DEC *", "monthly"),
        ("0 9 * * MON-FRI", "daily"),
        ("*/15 * * * sun", "hourly"),
        ("0 0 1 */3 *", "monthly"),
        ("@monthly", "monthly"),
    ],
)
def test_what_the_cronjob_api_accepts_is_valid(schedule: str, period: str) -> None:
    assert problems(schedule=schedule, period=period, startingDeadlineSeconds=60, activeDeadlineSeconds=300) == []


@pytest.mark.parametrize("quantity", ["100m", "256Mi", "2", 2, "1.5", "1e3", "0.5Gi", "+1k", ".5"])
def test_resource_quantities_kubernetes_accepts_are_accepted(quantity: Any) -> None:
    spec = parse_spec(
        {"usecase": "distribute-credits", "schedule": "0 0 1 * *", "resources": {"limits": {"memory": quantity}}}
    )
    assert spec.resources["limits"]["memory"] == quantity
