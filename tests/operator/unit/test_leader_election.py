"""The leader-election state machine (`leader_election.plan`) and the operator's log field mapping: pure, no I/O."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from credit_operator.leader_election import (
    Action,
    LeaseRecord,
    Timing,
    format_micro_time,
    identity_for,
    not_renewed,
    parse_micro_time,
    plan,
    released_spec,
)
from credit_operator.logs import _kopf_reference, fields

NOW = datetime(2026, 11, 29, 6, 0, 0, tzinfo=UTC)
T = Timing()


def held(holder: str | None, renewed_ago: float, duration: float = 15, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, NOW - timedelta(seconds=renewed_ago), duration, transitions, None, "41")


def test_no_lease_is_created_with_this_candidate_as_holder() -> None:
    p = plan(None, "a_1", NOW, T)
    assert p.action is Action.CREATE
    assert p.spec == {
        "holderIdentity": "a_1",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-29T06:00:00.000000Z",
        "renewTime": "2026-11-29T06:00:00.000000Z",
        "leaseTransitions": 0,
    }


def test_the_holder_renews_without_touching_acquire_time_or_transitions() -> None:
    p = plan(held("a_1", 2), "a_1", NOW, T)
    assert p.action is Action.RENEW
    assert p.spec == {"holderIdentity": "a_1", "leaseDurationSeconds": 15, "renewTime": format_micro_time(NOW)}


@pytest.mark.parametrize("renewed_ago", [0.0, 2.0, 14.9])
def test_another_holders_valid_claim_makes_a_standby(renewed_ago: float) -> None:
    p = plan(held("b_2", renewed_ago), "a_1", NOW, T, unchanged_for=renewed_ago)
    assert p.action is Action.WAIT
    assert p.holder == "b_2"
    assert p.expires == NOW + timedelta(seconds=15 - renewed_ago)


@pytest.mark.parametrize("renewed_ago", [15.0, 60.0])
def test_an_expired_claim_is_taken_and_counted_as_a_transition(renewed_ago: float) -> None:
    p = plan(held("b_2", renewed_ago), "a_1", NOW, T, unchanged_for=renewed_ago)
    assert p.action is Action.TAKE
    assert p.spec is not None
    assert (p.spec["holderIdentity"], p.spec["leaseTransitions"], p.holder) == ("a_1", 4, "b_2")


@pytest.mark.parametrize("skew", [-20.0, 20.0, -3600.0])
def test_expiry_is_what_this_candidate_watched_not_the_holders_renew_time_against_its_clock(skew: float) -> None:
    """A renewTime that looks 20 s old (or new, or an hour off) to this candidate's clock decides nothing: a claim the
    candidate has watched change within the lease duration is valid; one unchanged for the duration has expired."""
    record = held("b_2", renewed_ago=-skew)
    assert plan(record, "a_1", NOW, T, unchanged_for=1.0).action is Action.WAIT
    assert plan(record, "a_1", NOW, T).action is Action.WAIT  # first read: wait a whole lease duration
    assert plan(record, "a_1", NOW, T, unchanged_for=15.0).action is Action.TAKE


def test_a_released_lease_is_taken_at_once() -> None:
    record = LeaseRecord.from_lease({"spec": released_spec(NOW), "metadata": {"resourceVersion": "9"}})
    assert record.holder is None
    assert record.expires() is None
    p = plan(record, "a_1", NOW, T)
    assert p.action is Action.TAKE
    assert p.spec is not None
    assert p.spec["leaseTransitions"] == 0


def test_a_dead_predecessor_of_the_same_pod_is_replaced_at_once_but_not_another_pod() -> None:
    me = identity_for("op-0", "new")
    assert plan(held(identity_for("op-0", "old"), 1), me, NOW, T, predecessor_of="op-0").action is Action.TAKE
    assert plan(held(identity_for("op-1", "old"), 1), me, NOW, T, predecessor_of="op-0").action is Action.WAIT
    # Without a known pod name (a host name is shared by local runs) nobody is presumed dead.
    assert plan(held(identity_for("op-0", "old"), 1), me, NOW, T).action is Action.WAIT
    # A pod whose name merely starts alike is another pod.
    assert plan(held(identity_for("op-00", "x"), 1), me, NOW, T, predecessor_of="op-0").action is Action.WAIT


def test_unreadable_lease_fields_count_as_no_claim() -> None:
    record = LeaseRecord.from_lease({"spec": {"holderIdentity": "b", "renewTime": "yesterday"}})
    assert record.renew_time is None
    assert plan(record, "a", NOW, T).action is Action.TAKE
    assert parse_micro_time("2026-11-29T06:00:00.5Z") == NOW + timedelta(seconds=0.5)


def test_lease_timing_must_leave_room_for_renewals() -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        Timing(lease_duration=10, renew_deadline=10, retry_period=2)


def test_settings_refuse_inconsistent_lease_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    from credit_operator.settings import OperatorSettings

    monkeypatch.setenv("CREDITJOBS_LEASE_RENEW_DEADLINE_SECONDS", "20")
    with pytest.raises(ValueError, match="CREDITJOBS_LEASE_RENEW_DEADLINE_SECONDS < CREDITJOBS_LEASE_DURATION"):
        OperatorSettings()


def test_log_fields_and_kopfs_object_reference_use_the_shared_names() -> None:
    assert fields("billing", "monthly", "CronJobCreated", "created CronJob monthly") == {
        "creditjob": "monthly",
        "namespace": "billing",
        "reason": "CronJobCreated",
        "decision": "created CronJob monthly",
    }
    kopf_line = {"event": "Handler failed", "k8s_ref": {"kind": "CreditJob", "name": "m", "namespace": "b"}}
    assert _kopf_reference(logging.getLogger(), "warning", kopf_line) == {
        "event": "Handler failed",
        "creditjob": "m",
        "namespace": "b",
    }
    job_line = {"event": "x", "k8s_ref": {"kind": "Job", "name": "m-1", "namespace": "b"}, "k8s_skip": False}
    assert _kopf_reference(None, "info", job_line) == {"event": "x", "object": "Job/m-1", "namespace": "b"}


def test_a_leader_that_gets_no_answer_says_so_instead_of_none() -> None:
    """Seen: "could not renew … for 10s: None" when every renewal was still waiting for the API server."""
    assert not_renewed("Lease ns/op", 10, None) == (
        "could not renew the Lease ns/op for 10s: no answer from the API server (the renewal request is still waiting)"
    )
    assert not_renewed("Lease ns/op", 10, RuntimeError("409")).endswith("for 10s: 409")
