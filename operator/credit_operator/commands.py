"""The operator's two CLI commands, added to the jobs CLI (`credit-jobs`) by `register(app)`:

- `credit-jobs operator` starts the Kopf operator (settings from the environment, flags override), its
  Prometheus metrics endpoint and Kopf's liveness endpoint; a Lease (leader_election.py) makes only one
  replica active, the others stand by (serving /healthz) until it is released or expires.
- `credit-jobs trigger NAME` asks for a run now: it sets the `credits.dev/run-now` annotation (and
  `credits.dev/run-period` with `--period-key`) and prints the token; the operator does the rest.

`credit_jobs.entrypoints.cli.app` (the composition root) calls `register(app)` and maps ConfigError to exit code 2.
The Kubernetes client is imported by the commands when they run, never by `register`: a job pod's
`credit-jobs run` shares this CLI and must not pay for it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import period_start
from credit_operator.creditjob import (
    ANNOTATION_REQUESTED_BY,
    ANNOTATION_RUN_NOW,
    ANNOTATION_RUN_PERIOD,
    parse_creditjob,
)

if TYPE_CHECKING:
    from credit_operator.kube import KubeApi
    from credit_operator.leader_election import LeaseElector
    from credit_operator.settings import OperatorSettings

log = logging.getLogger("credit_operator")


def new_token(now: datetime | None = None) -> str:
    """A run-now token: readable (when it was asked for) and unique (random suffix)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def request_run(
    api: KubeApi, namespace: str, name: str, period_key: str | None, token: str, requested_by: str | None = None
) -> None:
    """Set the run-now annotations on a CreditJob; ConfigError when it does not exist. `requested_by` (the HTTP
    API's authenticated principal) goes into `credits.dev/requested-by` in the same patch; None removes an old one."""
    from credit_operator.kube import ApiError

    try:
        body = api.get_creditjob(namespace, name)
    except ApiError as exc:
        if exc.status == 404:
            raise ConfigError(f"CreditJob {namespace}/{name} does not exist") from None
        raise ConfigError(f"cannot read CreditJob {namespace}/{name}: {exc}") from None
    if period_key:
        # Refuse a key the operator would refuse (non-canonical, wrong granularity) now, with exit 2, instead of
        # leaving only a RunNowRejected Event. A spec the operator cannot read is left to its own report.
        try:
            schedule = parse_creditjob(body).spec.parsed_schedule
        except ConfigError:
            schedule = None
        if schedule is not None:
            period_start(period_key, schedule.period, schedule.tz)
    # A null run-period removes a key left from an earlier request: this run resolves its own period.
    annotations: dict[str, Any] = {
        ANNOTATION_RUN_NOW: token,
        ANNOTATION_RUN_PERIOD: period_key or None,
        ANNOTATION_REQUESTED_BY: requested_by,
    }
    try:
        api.patch_creditjob(namespace, name, {"metadata": {"annotations": annotations}})
    except ApiError as exc:
        raise ConfigError(f"cannot annotate CreditJob {namespace}/{name}: {exc}") from None


def _loop_recording_signals(stop_requested: threading.Event) -> asyncio.AbstractEventLoop:
    """An event loop for Kopf whose signal handlers first record that a stop was requested.

    Kopf installs its SIGTERM / SIGINT handlers on the loop it runs in; wrapping the installation (rather than
    replacing the handlers later) leaves no moment in which a signal would go unrecorded.
    """
    loop = asyncio.new_event_loop()
    install = loop.add_signal_handler

    def add_signal_handler(sig: int, callback: Callable[..., object], *args: Any) -> None:
        def recording(*callback_args: Any) -> None:
            stop_requested.set()
            callback(*callback_args)

        install(sig, recording, *args)

    setattr(loop, "add_signal_handler", add_signal_handler)  # noqa: B010 - an instance override, on purpose
    return loop


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg")).removeprefix("Value error, ")
        return f"CREDITJOBS_{where.upper()}: {message}" if where else message
    return str(exc).splitlines()[0]


def _become_leader(config: OperatorSettings, stop_requested: threading.Event) -> LeaseElector | None:
    """Stand by until this replica holds the leader Lease (serving /healthz meanwhile), then renew it in a
    thread while Kopf runs. None when a stop was requested first. A lost lease ends the process (exit 1)."""
    import signal
    import socket

    from credit_operator import handlers, metrics
    from credit_operator.leader_election import LeaseElector, identity_for, serve_standby_health, wait_until_leading

    identity = identity_for(config.pod_name or socket.gethostname(), secrets.token_hex(4))
    timing = config.lease_timing()
    # Lease calls must fail within the renew deadline, not the client's default 30 s.
    api = _api(timeout=timing.renew_deadline / 2)
    elector = LeaseElector(
        api,
        config.resolved_lease_namespace(),
        config.lease_name,
        identity,
        timing,
        # A pod name is unique while the pod lives; a host name is not (two local runs share it).
        predecessor_of=config.pod_name or None,
    )
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    health = serve_standby_health(config.health_port)
    metrics.LEADER.set(0)
    try:
        leading = wait_until_leading(elector, stop_requested)
    finally:
        health.shutdown()
        health.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not leading or stop_requested.is_set():
        if leading:
            elector.release()
        return None
    metrics.LEADER.set(1)

    def lost(why: str) -> None:
        metrics.LEADER.set(0)
        log.error(
            "no longer the leader (%s): exiting with code %d so that nothing acts twice; the supervisor "
            "restarts this replica as a standby",
            why,
            handlers.EXIT_CODE_KOPF_STOPPED,
        )
        handlers.exit_now(handlers.EXIT_CODE_KOPF_STOPPED)

    threading.Thread(target=elector.keep_leading, args=(lost,), name="lease-renew", daemon=True).start()
    return elector


def _run_kopf(config: OperatorSettings, stop_requested: threading.Event, elector: LeaseElector | None) -> None:
    """Kopf, standalone (the Lease decides who acts; Kopf's peering would only pause replicas)."""
    import kopf

    from credit_operator import handlers, metrics

    memo = kopf.Memo(config=config, stop_requested=stop_requested, identity=elector.identity if elector else None)
    loop = _loop_recording_signals(stop_requested)
    try:
        kopf.run(
            loop=loop,
            clusterwide=config.clusterwide,
            namespaces=config.namespace_list,
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz",
            memo=memo,
        )
    finally:
        loop.close()
        if elector is not None:
            # Kopf has stopped acting: hand over at once (a standby's next poll) instead of after 15 s.
            elector.stop_renewing.set()
            metrics.LEADER.set(0)
            elector.release()
    if memo.get("kopf_stopped") or not stop_requested.is_set():
        handlers.exit_now(handlers.EXIT_CODE_KOPF_STOPPED)


def require_kubernetes(what: str, modules: tuple[str, ...] = ("kubernetes",)) -> None:
    """Kopf and the Kubernetes client are the `operator` extra (the image has it; a laptop running the demo does
    not need 126 MB of them): without them, a one-line ConfigError (exit 2) with the install command."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"{what} needs {' and '.join(missing)}, which is not installed: pip install 'credit-jobs[operator]' "
            "(the image and `make test` install it)"
        )


def _api(timeout: float = 30.0, what: str = "credit-jobs trigger") -> KubeApi:
    require_kubernetes(what)
    from credit_operator.kube import KubeApi, connect

    try:
        return KubeApi(connect(), timeout=timeout)
    except Exception as exc:  # no kubeconfig, no service account: a usage problem, not a crash
        raise ConfigError(f"no Kubernetes API configuration found (kubeconfig or in-cluster): {exc}") from None


def register(app: typer.Typer) -> None:
    """Add `operator` and `trigger` to the credit-jobs CLI."""

    @app.command("operator")
    def operator_command(
        namespace: Annotated[
            list[str] | None,
            typer.Option("--namespace", "-n", help="Namespace to watch (repeatable); default CREDITJOBS_NAMESPACES."),
        ] = None,
        standalone: Annotated[
            bool,
            typer.Option(
                "--standalone", help="No leader election: act at once, alone (CREDITJOBS_LEADER_ELECTION=false)."
            ),
        ] = False,
        metrics_port: Annotated[int | None, typer.Option(help="Port of /metrics (CREDITJOBS_METRICS_PORT).")] = None,
        health_port: Annotated[int | None, typer.Option(help="Port of /healthz (CREDITJOBS_HEALTH_PORT).")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", help="Log Kopf's own decisions too.")] = False,
    ) -> None:
        """Run the CreditJob operator (the chart's Deployment runs this with no arguments)."""
        require_kubernetes("credit-jobs operator", ("kopf", "kubernetes"))
        from credit_operator import handlers, metrics
        from credit_operator.logs import configure_operator_logging
        from credit_operator.settings import OperatorSettings

        overrides: dict[str, Any] = {}
        if namespace:
            overrides["namespaces"] = ",".join(namespace)
        if metrics_port is not None:
            overrides["metrics_port"] = metrics_port
        if health_port is not None:
            overrides["health_port"] = health_port
        if standalone:
            overrides["leader_election"] = False
        try:
            config = OperatorSettings(**overrides)
        except ValueError as exc:  # pydantic's ValidationError: name the variable and the rule, exit 2
            raise ConfigError(f"invalid operator settings: {_first_error(exc)}") from None
        configure_operator_logging(config.log_format, verbose=verbose)
        metrics.serve(config.metrics_port)
        assert handlers.creditjob_changed  # importing the module registered the handlers
        # SIGTERM / SIGINT are a requested stop (exit 0); Kopf stopping on its own is not (handlers.stop exits 1,
        # so a supervisor restarts the operator instead of a process that does nothing).
        stop_requested = threading.Event()
        elector = _become_leader(config, stop_requested) if config.leader_election else None
        if config.leader_election and elector is None:
            return  # stopped while standing by: a requested stop, exit 0
        _run_kopf(config, stop_requested, elector)

    @app.command("trigger")
    def trigger_command(
        name: Annotated[str, typer.Argument(help="The CreditJob to run now.")],
        namespace: Annotated[str, typer.Option("--namespace", "-n", help="Its namespace.")] = "default",
        period_key: Annotated[
            str | None, typer.Option("--period-key", help="Run this period (e.g. 2026-10) instead of the current one.")
        ] = None,
    ) -> None:
        """Ask the operator to run a CreditJob now; prints the run-now token."""
        token = new_token()
        request_run(_api(), namespace, name, period_key, token)
        typer.echo(token)
