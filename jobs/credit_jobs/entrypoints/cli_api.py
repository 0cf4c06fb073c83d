"""`credit-jobs api`: serve the HTTP API (docs/api.md) with uvicorn. `register(app)` adds the command to the CLI.

Called by `entrypoints.cli_app` (one line next to the operator's commands). FastAPI, uvicorn and the Kubernetes client
are imported inside the command: `credit-jobs run` shares this CLI and must not pay for them. The command refuses
to start (ConfigError: exit 2, one line) without credentials, with a bad setting, or in cluster mode without a
Kubernetes configuration.
"""

from __future__ import annotations

import signal
from typing import Annotated, Any

import typer

from credit_jobs.domain.errors import ConfigError
from credit_jobs.entrypoints.cli_options import DatabaseUrlOption
from credit_jobs.entrypoints.cli_support import CliState, engine_for, run_timeouts, state
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

    from credit_jobs.entrypoints.api.app import ApiState, create_app
    from credit_jobs.entrypoints.api.settings import load_api_config
    from credit_jobs.entrypoints.api.triggers import ClusterTriggers, LocalTriggers, Triggers

    config = load_api_config()  # before anything connects: no credentials, no start
    settings = cli.settings
    # A server's request log is its output, in a terminal too (other commands show only warnings there).
    configure_logging(settings.log_format, settings.log_level or "info")
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
    api_state = ApiState(config=config, engine=engine, triggers=triggers)
    app = create_app(api_state)
    bind_host = host or config.settings.creditjobs_api_host
    bind_port = port if port is not None else config.settings.creditjobs_api_port
    metrics_port = config.settings.creditjobs_api_metrics_port
    if metrics_port == bind_port:
        raise ConfigError(
            f"CREDITJOBS_API_METRICS_PORT={metrics_port} is the API's own port: metrics are served on a port of "
            "their own (what Prometheus scrapes; callers of the API need not reach it)"
        )
    metrics_server = _serve_metrics(api_state, bind_host, metrics_port)
    for warning in config.warnings:
        structlog.get_logger().warning("api.weak_password", warning=warning)
    structlog.get_logger().info(
        "api.starting",
        host=bind_host,
        port=bind_port,
        metrics_port=metrics_port,
        mode=config.settings.creditjobs_api_mode,
        credentials=[c.principal for c in config.credentials],
    )
    # uvicorn stops gracefully on SIGTERM / SIGINT, then re-raises the signal to the handler found at start: with
    # the default one the process would die by the signal after a clean stop. A requested stop exits 0.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: None)
    try:
        uvicorn.run(
            app,
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
        triggers.close()
        engine.dispose()


def _serve_metrics(api_state: Any, host: str, port: int) -> Any:
    """`GET /metrics` (Prometheus text) on its own port, in a thread: prometheus-client's own server."""
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr=host, registry=api_state.metrics.registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} (CREDITJOBS_API_METRICS_PORT): {exc.strerror or exc}"
        ) from None
    return server
