"""Leader election on a `coordination.k8s.io/v1` Lease: exactly one operator replica acts at a time.

A holder that could not renew within the renew deadline stops, well before its lease expires for the others: two
replicas never act at once. `plan()` is the pure state machine (record + clock → what to write, or wait) of
client-go's protocol; `LeaseElector` runs it against the API.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from credit_operator.kube import KubeApi

log = logging.getLogger("credit_operator.leader_election")

# RFC 3339 with microseconds: the Lease API's MicroTime.
MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class Timing:
    """controller-runtime's defaults: 15 s lease, 10 s renew deadline, 2 s retry."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "lease timing must satisfy 0 < retry < renew deadline < lease duration "
                f"(got {self.retry_period}, {self.renew_deadline}, {self.lease_duration})"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says (None fields: not set)."""

    holder: str | None
    renew_time: datetime | None
    duration_seconds: float | None
    transitions: int = 0
    acquire_time: datetime | None = None
    resource_version: str | None = None

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or None,
            renew_time=parse_micro_time(spec.get("renewTime")),
            duration_seconds=spec.get("leaseDurationSeconds"),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquire_time=parse_micro_time(spec.get("acquireTime")),
            resource_version=(lease.get("metadata") or {}).get("resourceVersion"),
        )

    def expires(self) -> datetime | None:
        """When the holder's claim ends; None when nobody holds it."""
        if not self.holder or self.renew_time is None or not self.duration_seconds:
            return None
        return self.renew_time + timedelta(seconds=float(self.duration_seconds))


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet
    TAKE = "take"  # free, released or expired: become the holder
    RENEW = "renew"  # ours: extend it
    WAIT = "wait"  # another holder's claim is still valid


@dataclass(frozen=True)
class Plan:
    action: Action
    spec: dict[str, Any] | None = None  # the Lease spec to write (CREATE / TAKE / RENEW)
    holder: str | None = None  # the current holder (WAIT), the previous one (TAKE)
    expires: datetime | None = None  # when the current holder's claim ends (WAIT), ended or would have (TAKE)


def format_micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(MICRO_TIME)


def parse_micro_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None  # an unreadable time counts as "no claim"


def identity_for(pod_name: str, suffix: str) -> str:
    """A candidate's identity: its pod's name and a per-process suffix (a restarted container is a new candidate)."""
    return f"{pod_name}{IDENTITY_SEPARATOR}{suffix}"


IDENTITY_SEPARATOR = "_"


def plan(
    record: LeaseRecord | None,
    me: str,
    now: datetime,
    timing: Timing,
    predecessor_of: str | None = None,
    unchanged_for: float = 0.0,
) -> Plan:
    """Decide what candidate `me` does with the Lease as read at `now` (pure: the caller does the I/O). `now` only
    stamps what this candidate writes.

    The same protocol as controller-runtime / client-go: a candidate takes the Lease when it is free, released or
    expired, and the holder renews it every retry period.

    `unchanged_for`: how long this candidate has seen the record exactly as it is now, on its monotonic clock (0: just
    read it for the first time). Another holder's claim expires once it stayed unchanged for its
    `leaseDurationSeconds` — as client-go measures it, from when the candidate *observed* the last change; never the
    holder's `renewTime` against this candidate's wall clock (replicas' clocks may be seconds apart). A healthy
    holder changes the record every retry period, so no clock skew between replicas makes its claim look expired;
    a candidate that has only just started waits one full lease duration.

    `predecessor_of`: this candidate's pod name when it is known to be unique (the downward API's, not a host
    name). A holder `<that pod>_<other suffix>` is then an earlier process of this very pod — a container runs
    once at a time, so it is dead — and its lease is taken at once instead of after it expires (a restart after a
    SIGKILL or an OOM kill acts within seconds).
    """
    duration = round(timing.lease_duration)
    stamp = format_micro_time(now)
    if record is None:
        spec = {
            "holderIdentity": me,
            "leaseDurationSeconds": duration,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": 0,
        }
        return Plan(Action.CREATE, spec=spec)
    if record.holder == me:
        return Plan(Action.RENEW, spec={"holderIdentity": me, "leaseDurationSeconds": duration, "renewTime": stamp})
    claim = record.duration_seconds if record.expires() is not None else None  # None: released or unreadable
    expires = None if claim is None else now + timedelta(seconds=float(claim) - unchanged_for)
    dead_predecessor = bool(
        predecessor_of and record.holder and record.holder.startswith(predecessor_of + IDENTITY_SEPARATOR)
    )
    if claim is not None and unchanged_for < float(claim) and not dead_predecessor:
        return Plan(Action.WAIT, holder=record.holder, expires=expires)
    spec = {
        "holderIdentity": me,
        "leaseDurationSeconds": duration,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": record.transitions + (1 if record.holder else 0),
    }
    return Plan(Action.TAKE, spec=spec, holder=record.holder, expires=expires)


def released_spec(now: datetime) -> dict[str, Any]:
    """What a holder writes on a clean stop (as client-go's ReleaseOnCancel): no holder, so nobody waits."""
    return {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": format_micro_time(now)}


class LeaseUnavailable(Exception):
    """The Lease cannot be read or written at all (RBAC, no such API): the operator cannot take part."""


class LeaseElector:
    """Runs `plan()` against one Lease through KubeApi (blocking calls; used from threads).

    Why not `kubernetes.leaderelection`: it replaces the lease with PUT through the typed models, polls with sleeps
    it cannot be woken from, never releases on shutdown, and calls back from its own thread with no way to report a
    lost lease other than a callback that must end the process anyway.
    """

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        predecessor_of: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or Timing()
        self.clock = clock
        self.last: Plan | None = None
        self.predecessor_of = predecessor_of
        self.monotonic = monotonic
        # The record as last seen and since when (monotonic): what a claim's expiry is measured from (see plan()).
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self.stop_renewing = threading.Event()  # set once Kopf has stopped: keep_leading returns
        # keep_leading's state, shared with its renewal thread (plain assignments: atomic under the GIL).
        self._renewed_at = 0.0
        self._lost: str | None = None
        self._error: Exception | None = None

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this candidate holds the lease afterwards. ApiError from a transient failure
        propagates; LeaseUnavailable when access itself is refused or the API does not exist.

        A GET, then a create or a merge patch carrying the record's resourceVersion, which the API server turns into
        a conditional update: two candidates cannot both win.
        """
        from credit_operator.kube import ApiError

        try:
            lease = self.api.get_lease(self.namespace, self.name)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise LeaseUnavailable(f"cannot read the {self.where}: {exc}") from exc
            raise
        record = None if lease is None else LeaseRecord.from_lease(lease)
        decision = plan(
            record, self.identity, self.clock(), self.timing, self.predecessor_of, self._unchanged_for(record)
        )
        self.last = decision
        if decision.action is Action.WAIT:
            return False
        assert decision.spec is not None
        try:
            if decision.action is Action.CREATE:
                self.api.create_lease(self.namespace, self.name, decision.spec)
            else:
                self.api.patch_lease(
                    self.namespace, self.name, decision.spec, record.resource_version if record else None
                )
        except ApiError as exc:
            if exc.status == 409 or (exc.status == 404 and decision.action is not Action.CREATE):
                return False  # another candidate wrote (or deleted) first: this round is lost, the next one decides
            if exc.status in (401, 403, 404):  # 404 on a write: no Lease API or no such namespace
                raise LeaseUnavailable(f"cannot write the {self.where}: {exc}") from exc
            raise
        return True

    def _unchanged_for(self, record: LeaseRecord | None) -> float:
        """Seconds (monotonic) this candidate has seen `record` as it is; 0 when it just changed (or was first read)."""
        seen = None if record is None else (record.holder, record.renew_time, record.duration_seconds)
        now = self.monotonic()
        if seen != self._observed:
            self._observed, self._observed_at = seen, now
        return now - self._observed_at

    def release(self) -> None:
        """Give the lease up (clean stop) if this candidate still holds it; best effort. A standby then takes over
        at its next poll instead of after the lease duration."""
        from credit_operator.kube import ApiError

        try:
            lease = self.api.get_lease(self.namespace, self.name)
            if lease is None or LeaseRecord.from_lease(lease).holder != self.identity:
                return
            version = (lease.get("metadata") or {}).get("resourceVersion")
            self.api.patch_lease(self.namespace, self.name, released_spec(self.clock()), version)
            log.info("released the %s", self.where)
        except ApiError as exc:
            log.warning("cannot release the %s (the others take over when it expires): %s", self.where, exc)

    def keep_leading(self, on_lost: Callable[[str], None]) -> None:
        """Renew every retry period until `stop_renewing` is set; call `on_lost(why)` when the lease was lost or
        not renewed within the renew deadline (the caller ends the process: it must not act any longer). Runs in a
        thread of its own while Kopf runs.

        So a holder that could not renew within the renew deadline stops (the process exits, its supervisor restarts
        it as a candidate) well before the lease expires for the others: two replicas never act at once.

        The deadline is watched apart from the renewals: a request hanging on a dead network (the client's
        timeouts and retries) must not keep a leader acting after its claim ended for the others. A renewal
        counts from when it was sent (the renewTime it writes is about then).
        """
        stop = self.stop_renewing
        self._renewed_at = time.monotonic()
        self._lost = None
        threading.Thread(target=self._renew_until_stopped, name="lease-renewals", daemon=True).start()
        while not stop.wait(min(0.5, self.timing.retry_period)):
            why = self._lost
            if why is None and time.monotonic() - self._renewed_at >= self.timing.renew_deadline:
                why = not_renewed(self.where, self.timing.renew_deadline, self._error)
            if why is not None and not stop.is_set():
                on_lost(why)
                return

    def _renew_until_stopped(self) -> None:
        stop = self.stop_renewing
        while not stop.wait(self.timing.retry_period) and self._lost is None:
            sent = time.monotonic()
            try:
                if self.try_acquire_or_renew():
                    self._renewed_at = sent
                elif self.last is not None and self.last.action is Action.WAIT:
                    self._lost = f"the {self.where} is now held by {self.last.holder}"
                else:
                    raise RuntimeError("the Lease changed while renewing it (409)")
            except Exception as exc:  # ApiError, LeaseUnavailable, urllib3's connection errors: all "not renewed"
                self._error = exc
                log.warning("cannot renew the %s, retrying: %s", self.where, exc)


def not_renewed(where: str, deadline: float, error: Exception | None) -> str:
    """Why a leader stops: the last renewal's error, or — when every attempt is still waiting — that none answered."""
    cause = str(error) if error is not None else "no answer from the API server (the renewal request is still waiting)"
    return f"could not renew the {where} for {deadline:g}s: {cause}"


# How often a standby says so (info), and how often a paused candidate warns (it cannot take part at all).
STANDBY_LOG_INTERVAL = 60.0
PAUSED_WARNING_INTERVAL = 30.0


def wait_until_leading(elector: LeaseElector, stop: threading.Event) -> bool:
    """Poll every retry period until this candidate holds the lease (True) or `stop` is set (False). The operator
    waits here before Kopf starts.

    Never silent: a standby logs who holds the lease (when it changes, and every STANDBY_LOG_INTERVAL); a
    candidate that cannot read or write the Lease at all warns every PAUSED_WARNING_INTERVAL with the fix, and
    sets `creditjobs_operator_paused` to 1 meanwhile.
    """
    from credit_operator import metrics

    said_at = -float("inf")
    said: tuple[str, str | None] | None = None
    while not stop.is_set():
        try:
            if elector.try_acquire_or_renew():
                metrics.PAUSED.set(0)
                previous = elector.last.holder if elector.last else None
                log.info(
                    "leading: took the %s as %s%s",
                    elector.where,
                    elector.identity,
                    f" (from {previous}, which no longer renews it)" if previous else "",
                )
                return True
            metrics.PAUSED.set(0)
            holder = elector.last.holder if elector.last else None
            state: tuple[str, str | None] = ("standby", holder)
            if state != said or time.monotonic() - said_at >= STANDBY_LOG_INTERVAL:
                expires = elector.last.expires if elector.last else None
                log.info(
                    "standby: the %s is held by %s (until %s unless renewed); taking over when it is released or "
                    "expires, checking every %gs",
                    elector.where,
                    holder or "another candidate",
                    format_micro_time(expires) if expires else "now",
                    elector.timing.retry_period,
                )
                said, said_at = state, time.monotonic()
        except LeaseUnavailable as exc:
            metrics.PAUSED.set(1)
            if said != ("paused", None) or time.monotonic() - said_at >= PAUSED_WARNING_INTERVAL:
                log.warning(
                    "the operator is PAUSED and handles nothing: %s. Leader election needs get/create/patch on "
                    "leases (coordination.k8s.io) in namespace %r. Fix: install the chart (its RBAC grants them), "
                    "or grant them to this identity, or run `credit-jobs operator --standalone` (a single replica, "
                    "e.g. locally: no leader election)",
                    exc,
                    elector.namespace,
                )
                said, said_at = ("paused", None), time.monotonic()
        except Exception as exc:  # ApiError, urllib3's connection errors: the API is not reachable (yet)
            if said != ("unreachable", None) or time.monotonic() - said_at >= PAUSED_WARNING_INTERVAL:
                log.warning(
                    "standby: cannot read the %s, retrying every %gs: %s",
                    elector.where,
                    elector.timing.retry_period,
                    exc,
                )
                said, said_at = ("unreachable", None), time.monotonic()
        stop.wait(_next_poll(elector))
    return False


def _next_poll(elector: LeaseElector) -> float:
    """The retry period, or less when the holder's claim ends sooner (wake up when it expires, not up to 2 s later)."""
    last = elector.last
    if last is None or last.action is not Action.WAIT or last.expires is None:
        return elector.timing.retry_period
    left = (last.expires - elector.clock()).total_seconds() + 0.05
    return max(0.05, min(elector.timing.retry_period, left))


def serve_standby_health(port: int, address: str = "0.0.0.0") -> Any:
    """/healthz for a standby (Kopf's liveness endpoint exists only while Kopf runs): 200 with the role.
    Returns the server; `server.shutdown(); server.server_close()` frees the port for Kopf."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] in ("/healthz", "/")
            body = json.dumps({"role": "standby"} if ok else {"error": "not found"}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # probes every few seconds are not news
            return

    server = ThreadingHTTPServer((address, port), Health)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server
