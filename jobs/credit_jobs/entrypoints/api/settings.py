"""The API's configuration: listen address, mode, rate limits, credentials and the request engine's database limits
(per-transaction timeouts, a pool sized to the worker threads), read once from the environment.

Read before anything is served. Credentials come from the seed's Basic pair (`CRON_JOBS_USERNAME` /
`CRON_JOBS_PASSWORD`) and from bearer tokens, one `name:scopes:token` per line, in `CREDITJOBS_API_TOKENS` or the file
`CREDITJOBS_API_TOKENS_FILE` (a mounted Secret): several lines at once is how a token is rotated. Every bad value is a
one-line ConfigError (exit 2) that never echoes a secret; no credential at all is one too — an API nobody can call, or
anybody could, is refused at start.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path

from limits import RateLimitItem, parse
from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from credit_jobs.adapters.database import MAX_TIMEOUT_SECONDS, PoolLimits, SessionTimeouts
from credit_jobs.domain.errors import ConfigError

# Scopes a credential can hold: read (balances, runs, CreditJobs), trigger runs, write the ledger (consume, grant).
SCOPE_READ = "read"
SCOPE_RUNS = "runs"
SCOPE_LEDGER = "ledger"
SCOPES = (SCOPE_READ, SCOPE_RUNS, SCOPE_LEDGER)
# The seed's Basic pair was the scheduler's: it may trigger runs and read, never write the ledger.
BASIC_SCOPES = frozenset({SCOPE_READ, SCOPE_RUNS})
MIN_TOKEN_LENGTH = 24  # a bearer token is a random secret: refuse anything a person could have typed
# A Basic password shorter than this is warned about at start, not refused: the seed's CRON_JOBS_PASSWORD moves over
# as it is, and the failed-auth limit holds a guesser to a few guesses a minute per address.
MIN_BASIC_PASSWORD_LENGTH = 16
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MODES = ("local", "cluster")

# The request engine. FastAPI runs every sync route and dependency on a worker thread of anyio's default thread
# limiter, so at most WORKER_THREADS routes use the database at once, one connection each. 40 is anyio's own
# default; the app sets it at start (`app.create_app`'s lifespan), so the pool below is sized from the number in
# force rather than from an assumption about a library default.
WORKER_THREADS = 40
# Connections kept open between bursts (each replica's steady share of max_connections); the others, up to one per
# worker thread, are opened on demand and closed when returned.
POOL_KEEP_OPEN = 10
# With a connection for every worker thread a checkout never waits; this only bounds the wait if that ever breaks
# (a leaked connection): the request then answers 503 database_unavailable instead of hanging.
POOL_TIMEOUT_SECONDS = 10.0
REQUEST_POOL = PoolLimits.for_threads(WORKER_THREADS, keep_open=POOL_KEEP_OPEN, timeout_seconds=POOL_TIMEOUT_SECONDS)
MIN_TIMEOUT_SECONDS = 0.001  # PostgreSQL counts milliseconds: less would round to 0, which means "no timeout"
# A request body: every body the API takes is a few dozen bytes of JSON; 64 KiB leaves room and bounds the memory
# one request can cost. The limit is enforced before the body is read, and only for an authenticated request.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
MAX_RUN_WAIT_SECONDS = 300  # a request thread held for a run: bounded
MAX_BODY_BYTES_RANGE = (1024, 16 * 1024 * 1024)
# Processes serving the API in one pod (uvicorn workers). One process answers at most ~300 consumes a second (its
# request threads share one interpreter lock); each further one adds what a core can do (docs/performance.md).
MAX_WORKERS = 32


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    cron_jobs_username: str | None = None
    cron_jobs_password: str | None = None
    creditjobs_api_tokens: str | None = None
    creditjobs_api_tokens_file: Path | None = None
    creditjobs_api_host: str = "127.0.0.1"
    creditjobs_api_port: int = 8080
    creditjobs_api_metrics_port: int = 9095  # GET /metrics, on a port of its own (Prometheus scrapes it)
    creditjobs_api_mode: str = "local"
    creditjobs_api_default_job: str = "distribute-credits"
    creditjobs_api_default_namespace: str = "default"
    creditjobs_api_rate_limit_global: str = "500/second"
    creditjobs_api_rate_limit_client: str = "50/second"
    creditjobs_api_rate_limit_auth_failures: str = "20/minute"
    creditjobs_api_workers: int = 1
    # A request's transaction: a ledger write takes milliseconds; a row lock held for seconds means a long consume,
    # a period rollback or a stuck session holds the user — answer a retryable 503 instead of holding the thread.
    creditjobs_api_statement_timeout_seconds: float = 30.0
    creditjobs_api_lock_timeout_seconds: float = 5.0
    creditjobs_api_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # The interactive docs and the OpenAPI document (/docs, /redoc, /openapi.json): off where nobody should browse
    # the API's surface (the production values), on for development.
    creditjobs_api_docs: bool = True
    # The seed's route waits this long for the run it started, then answers where it stands (202 and a status URL).
    creditjobs_api_run_wait_seconds: float = 25.0
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (a sidecar or an ingress), as IPs or CIDRs,
    # comma-separated. None by default: a client address is the TCP peer's, which no header can change.
    creditjobs_api_trusted_proxies: str = ""

    @field_validator("creditjobs_api_run_wait_seconds", mode="before")
    @classmethod
    def _wait(cls, value: object) -> float:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(f"{text[:40]!r} is not a number of seconds") from None
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_RUN_WAIT_SECONDS:
            raise ValueError(f"{text[:40]!r} is out of range: 0 to {MAX_RUN_WAIT_SECONDS} seconds")
        return seconds

    @field_validator("creditjobs_api_max_body_bytes", mode="before")
    @classmethod
    def _body_bytes(cls, value: object) -> int:
        text = str(value).strip()
        low, high = MAX_BODY_BYTES_RANGE
        if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            raise ValueError(f"{text[:40]!r} is not a number of bytes from {low} to {high}")
        return int(text)

    @field_validator("creditjobs_api_trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> str:
        entries = [entry.strip() for entry in str(value).split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry[:60]!r} is not an IP address or CIDR range (e.g. 10.0.0.0/8)") from None
        return ",".join(entries)

    @field_validator("creditjobs_api_workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> int:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
            raise ValueError(f"{text[:40]!r} is not a number of processes from 1 to {MAX_WORKERS}")
        return int(text)

    @field_validator("creditjobs_api_mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> str:
        mode = str(value).strip().lower()
        if mode not in MODES:
            raise ValueError(f"CREDITJOBS_API_MODE={str(value)[:40]!r} is not one of {', '.join(MODES)}")
        return mode

    @field_validator(
        "creditjobs_api_rate_limit_global",
        "creditjobs_api_rate_limit_client",
        "creditjobs_api_rate_limit_auth_failures",
        mode="before",
    )
    @classmethod
    def _rate(cls, value: object) -> str:
        text = str(value).strip()
        try:
            parse(text)
        except ValueError:
            raise ValueError(f"rate limit {text[:40]!r} is not a rate such as '50/second' or '20/minute'") from None
        return text

    @field_validator("creditjobs_api_statement_timeout_seconds", "creditjobs_api_lock_timeout_seconds", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> float:
        text = str(value).strip()
        try:
            if "_" in text:  # float() takes `1_000`; an environment value with one is a typo
                raise ValueError(text)
            seconds = float(text)
        except ValueError:
            raise ValueError(f"{text[:40]!r} is not a number of seconds") from None
        if not math.isfinite(seconds) or not MIN_TIMEOUT_SECONDS <= seconds <= MAX_TIMEOUT_SECONDS:
            raise ValueError(
                f"{text[:40]!r} is out of range: seconds from {MIN_TIMEOUT_SECONDS:g} to {MAX_TIMEOUT_SECONDS} "
                "(a request never waits without a limit)"
            )
        return seconds


@dataclass(frozen=True)
class Credential:
    """One accepted credential. `secret` is the password or token; it is compared, never logged or shown."""

    principal: str  # what logs, metrics and audit rows name: `basic:<user>` or `token:<name>`
    scheme: str  # basic | bearer
    scopes: frozenset[str]
    secret: bytes
    username: bytes = b""  # basic only


@dataclass(frozen=True)
class ApiConfig:
    settings: ApiSettings
    credentials: tuple[Credential, ...]
    rate_global: RateLimitItem  # this process's share: the setting divided among the workers
    rate_client: RateLimitItem  # the setting, in each process
    rate_auth_failures: RateLimitItem  # this process's share, as the global limit
    request_timeouts: SessionTimeouts  # every transaction of a request (never a local-mode run's: those are a run's)
    request_pool: PoolLimits = REQUEST_POOL
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    warnings: tuple[str, ...] = ()  # what the start logs as warnings (never a secret)

    @property
    def trusted_proxies(self) -> list[str]:
        text = self.settings.creditjobs_api_trusted_proxies
        return text.split(",") if text else []


def load_api_config() -> ApiConfig:
    """The settings and credentials, or a one-line ConfigError (exit 2) naming the variable (never its value)."""
    try:
        settings = ApiSettings()
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        variable = str(error["loc"][0]).upper() if error.get("loc") else "a setting"
        raise ConfigError(f"{variable}: {str(error['msg']).removeprefix('Value error, ')} (see docs/api.md)") from None
    credentials = (*_basic(settings), *_tokens(settings))
    workers = settings.creditjobs_api_workers
    if workers > 1 and settings.creditjobs_api_mode == "local":
        raise ConfigError(
            f"CREDITJOBS_API_WORKERS={workers}: local mode runs jobs inside the API process and keeps their tokens "
            "there, so it serves from one process; set CREDITJOBS_API_WORKERS=1, or CREDITJOBS_API_MODE=cluster"
        )
    if not credentials:
        raise ConfigError(
            "no API credentials configured: set CRON_JOBS_USERNAME and CRON_JOBS_PASSWORD, or bearer tokens in "
            "CREDITJOBS_API_TOKENS / CREDITJOBS_API_TOKENS_FILE (docs/api.md); the API does not start open"
        )
    return ApiConfig(
        settings=settings,
        credentials=credentials,
        rate_global=process_share(parse(settings.creditjobs_api_rate_limit_global), workers),
        rate_client=parse(settings.creditjobs_api_rate_limit_client),
        rate_auth_failures=process_share(parse(settings.creditjobs_api_rate_limit_auth_failures), workers),
        request_timeouts=SessionTimeouts(
            statement_seconds=settings.creditjobs_api_statement_timeout_seconds,
            lock_seconds=settings.creditjobs_api_lock_timeout_seconds,
        ),
        max_body_bytes=settings.creditjobs_api_max_body_bytes,
        warnings=_weak_password(settings),
    )


def process_share(limit: RateLimitItem, workers: int) -> RateLimitItem:
    """One worker's part of a limit the pod enforces as a whole: the amount divided among the workers, rounded up
    (each process counts in its own memory, and the kernel spreads connections over the workers). The global limit
    and the failed-authentication budget are shared so: the pod never admits more than the setting (a guesser
    spreading connections over the workers gets one budget, not one each). The per-credential limit is not: a caller
    on one keep-alive connection meets one worker, and would otherwise get a fraction of its limit."""
    if workers == 1:
        return limit
    return type(limit)(math.ceil(limit.amount / workers), limit.multiples, limit.namespace)


def _weak_password(settings: ApiSettings) -> tuple[str, ...]:
    password = settings.cron_jobs_password
    if password is None or len(password) >= MIN_BASIC_PASSWORD_LENGTH:
        return ()
    return (
        f"CRON_JOBS_PASSWORD is {len(password)} characters long: a password a person could guess; use at least "
        f"{MIN_BASIC_PASSWORD_LENGTH} random characters (e.g. `openssl rand -base64 24`) — the API starts anyway, and "
        "the failed-authentication limit (CREDITJOBS_API_RATE_LIMIT_AUTH_FAILURES) holds a guesser to its budget",
    )


def _basic(settings: ApiSettings) -> list[Credential]:
    user, password = settings.cron_jobs_username, settings.cron_jobs_password
    if user is None and password is None:
        return []
    if not user or not password:
        raise ConfigError("CRON_JOBS_USERNAME and CRON_JOBS_PASSWORD must be set together (both non-empty)")
    if ":" in user:  # Basic splits at the first colon: the password may hold colons, the user name cannot
        raise ConfigError("CRON_JOBS_USERNAME must not contain ':' (HTTP Basic separates user and password with it)")
    return [Credential(f"basic:{user}", "basic", BASIC_SCOPES, password.encode("utf-8"), username=user.encode("utf-8"))]


def _tokens(settings: ApiSettings) -> list[Credential]:
    sources: list[tuple[str, str]] = []
    if settings.creditjobs_api_tokens:
        sources.append(("CREDITJOBS_API_TOKENS", settings.creditjobs_api_tokens))
    if settings.creditjobs_api_tokens_file is not None:
        path = settings.creditjobs_api_tokens_file
        try:
            sources.append((f"CREDITJOBS_API_TOKENS_FILE ({path})", path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"CREDITJOBS_API_TOKENS_FILE: cannot read {path}: {type(exc).__name__}") from None
    credentials: list[Credential] = []
    for where, text in sources:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                credentials.append(parse_token_line(line.strip(), f"{where} line {number}"))
    if len({c.secret for c in credentials}) != len(credentials):
        raise ConfigError("two bearer token lines hold the same token: give every client its own token")
    return credentials


def parse_token_line(line: str, where: str) -> Credential:
    """`name:scope[,scope…]:token`. The token is everything after the second colon (it may hold colons)."""
    name, _, rest = line.partition(":")
    scopes_text, _, token = rest.partition(":")
    if not _TOKEN_NAME.fullmatch(name):
        raise ConfigError(f"{where}: the token name must be 1-63 letters, digits, '.', '_' or '-' (name:scopes:token)")
    scopes = frozenset(s.strip() for s in scopes_text.split(",") if s.strip())
    if not scopes or not scopes <= set(SCOPES):
        raise ConfigError(f"{where} ({name}): scopes must be a comma-separated subset of {', '.join(SCOPES)}")
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token) or not token.isprintable():
        raise ConfigError(
            f"{where} ({name}): the token must be at least {MIN_TOKEN_LENGTH} printable characters without spaces "
            "(e.g. `openssl rand -hex 32`)"
        )
    return Credential(f"token:{name}", "bearer", scopes, token.encode("utf-8"))
