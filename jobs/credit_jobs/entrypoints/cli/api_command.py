"""`credit-jobs api`: serve the HTTP API (docs/api.md) with uvicorn. `register(app)` adds the command to the CLI.

FastAPI, uvicorn and the Kubernetes client are imported inside the command (the start-up rule: `cli/__init__.py`).
The command refuses to start (ConfigError: exit 2, one line) without credentials, with a bad setting,
or in cluster mode without a Kubernetes configuration.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import Annotated, Any

import typer

from credit_jobs.domain.errors import ConfigError
from credit_jobs.entrypoints.cli.options import DatabaseUrlOption
from credit_jobs.entrypoints.cli.support import CliState, engine_for, run_timeouts, state
from credit_jobs.observability.logging import configure_logging


def register(app: typer.Typer) -> None:
    @app.command("api")
    def api_command(
        ctx: typer.Context,
        host: Annotated[
            str | None, typer.Option(help="Listen address (CREDITJOBS_API_HOST, default 127.0.0.1).")
        ] = None,
        port: Annotated[int | None, typer.Option(help="Listen port (CREDITJOBS_API_PORT, default 8080).")] = None,
        database_url: DatabaseUrlOption = None,
    ) -> int:
        """Serve the HTTP API: trigger runs, read the run audit trail, use the ledger (docs/api.md)."""
        serve(state(ctx), host, port, database_url)
        return 0


def serve(cli: CliState, host: str | None, port: int | None, database_url: str | None) -> None:
    import structlog
    import uvicorn

    from credit_jobs.entrypoints.api.app import create_app
    from credit_jobs.entrypoints.api.settings import load_api_config

    config = load_api_config()  # before anything connects: no credentials, no start
    settings = cli.settings
    # A server's request log is its output, in a terminal too (other commands show only warnings there).
    configure_logging(settings.log_format, settings.log_level or "info")
    bind_host = host or config.settings.creditjobs_api_host
    bind_port = port if port is not None else config.settings.creditjobs_api_port
    metrics_port = config.settings.creditjobs_api_metrics_port
    if metrics_port == bind_port:
        raise ConfigError(
            f"CREDITJOBS_API_METRICS_PORT={metrics_port} is the API's own port: metrics are served on a port of "
            "their own (what Prometheus scrapes; callers of the API need not reach it)"
        )
    workers = config.settings.creditjobs_api_workers
    metrics_dir = None
    if workers == 1:
        api_state = api_state_for(cli, config, database_url)
        served: Any = create_app(api_state)  # its lifespan closes the state when the server stops
        registry = api_state.metrics.registry
    else:
        # Everything a worker would refuse is checked here first, once: a worker that fails to start is restarted
        # by uvicorn, over and over. The workers read the URL resolved here (the embedded default's included).
        os.environ["DATABASE_URL"] = _checked_url(cli, config, database_url)
        os.environ["CREDITJOBS_API_SUPERVISOR_PID"] = str(os.getpid())  # the process the workers end with
        metrics_dir, registry = _shared_metrics()
        served = WORKER_APP
    metrics_server = _serve_metrics(registry, bind_host, metrics_port)
    for warning in config.warnings:
        structlog.get_logger().warning("api.weak_password", warning=warning)
    structlog.get_logger().info(
        "api.starting",
        host=bind_host,
        port=bind_port,
        metrics_port=metrics_port,
        mode=config.settings.creditjobs_api_mode,
        workers=workers,
        credentials=[c.principal for c in config.credentials],
    )
    # uvicorn stops gracefully on SIGTERM / SIGINT, then re-raises the signal to the handler found at start: with
    # the default one the process would die by the signal after a clean stop. A requested stop exits 0.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: None)
    try:
        uvicorn.run(
            served,
            factory=workers > 1,
            workers=workers,
            host=bind_host,
            port=bind_port,
            log_config=None,  # our structlog lines; uvicorn's own access log would repeat every request
            access_log=False,
            timeout_graceful_shutdown=30,
            # X-Forwarded-* only from the configured proxies (none by default): uvicorn's own default would believe
            # any local peer, and a sidecar proxy connects from localhost — anyone could name their address.
            proxy_headers=bool(config.trusted_proxies),
            forwarded_allow_ips=config.trusted_proxies or None,
        )
    finally:
        metrics_server.shutdown()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def api_state_for(cli: CliState, config: Any, database_url: str | None) -> Any:
    """One serving process's state: the request engine, the run triggers of the configured mode, the limits."""
    from credit_jobs.entrypoints.api.app import ApiState
    from credit_jobs.entrypoints.api.triggers import ClusterTriggers, LocalTriggers, Triggers

    settings = cli.settings
    # Not verified here: a database that is down or behind on its schema makes /readyz fail, not the process.
    # The request engine: short per-transaction timeouts, a connection for every worker thread (docs/api.md).
    engine = engine_for(database_url, cli, verify=False, timeouts=config.request_timeouts, pool=config.request_pool)
    triggers: Triggers
    if config.settings.creditjobs_api_mode == "cluster":
        from credit_operator.commands import _api as kube_api  # ConfigError (exit 2) without a kubeconfig

        triggers = ClusterTriggers(kube_api(what="credit-jobs api in cluster mode"))
    else:
        # Local runs are runs: each on its own engine with a run's timeouts, as `credit-jobs run` (checked now:
        # an out-of-range value stops the start, exit 2, not the first triggered run).
        timeouts = run_timeouts(settings)
        triggers = LocalTriggers(lambda: engine_for(database_url, cli, verify=False, timeouts=timeouts), settings)
    return ApiState(config=config, engine=engine, triggers=triggers, close_on_shutdown=True)


# CREDITJOBS_API_WORKERS > 1: uvicorn starts that many processes on one listening socket (the kernel spreads the
# connections), each building its app with `worker_app` from the environment; this process supervises them (a
# worker that dies is replaced) and serves their summed metrics.
WORKER_APP = "credit_jobs.entrypoints.cli.api_command:worker_app"
_PR_SET_PDEATHSIG = 1


def worker_app() -> Any:
    """One worker's app (uvicorn calls it in the worker process): settings and credentials read again, the same
    environment as the parent's, which checked them."""
    from credit_jobs.entrypoints.api.app import create_app
    from credit_jobs.entrypoints.api.settings import load_api_config
    from credit_jobs.entrypoints.settings import load_settings

    _end_with_parent()
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level or "info")
    return create_app(api_state_for(CliState(settings), load_api_config(), None))


def _end_with_parent() -> None:
    """The kernel sends this worker SIGTERM when the process that started it ends, however it ends (SIGKILL, the
    OOM killer): no worker goes on serving the port unsupervised (Linux's PR_SET_PDEATHSIG)."""
    import ctypes

    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != os.environ.get("CREDITJOBS_API_SUPERVISOR_PID"):  # it ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _checked_url(cli: CliState, config: Any, database_url: str | None) -> str:
    """The database URL the workers use (the embedded default started and migrated here), with the kubeconfig of
    cluster mode checked: what `api_state_for` would refuse, refused once, before any worker starts."""
    api_state = api_state_for(cli, config, database_url)
    try:
        return str(api_state.engine.url.render_as_string(hide_password=False))
    finally:
        api_state.close()


def _shared_metrics() -> tuple[str, Any]:
    """prometheus-client's multiprocess mode: each worker writes its counts to files in a fresh directory (under
    /tmp, the chart's emptyDir), this process serves their sum. Set before any worker starts: a worker reads it when
    it imports prometheus-client."""
    import tempfile

    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = tempfile.mkdtemp(prefix="credit-jobs-api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return directory, registry


def _serve_metrics(registry: Any, host: str, port: int) -> Any:
    """`GET /metrics` (Prometheus text) on its own port, in a thread: prometheus-client's own server."""
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} (CREDITJOBS_API_METRICS_PORT): {exc.strerror or exc}"
        ) from None
    return server
