"""The HTTP API against an attacker: nothing unauthenticated costs memory, a guesser locks out nobody else, a
spoofed proxy header changes nothing. `credit-jobs api` as a real process on loopback with the chart's defaults
where the Seen was measured that way (memory, client addresses), in process otherwise.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.support.api import (
    BASIC_PASSWORD,
    BASIC_USER,
    LEDGER_TOKEN,
    READ_TOKEN,
    api_client,
    basic,
    bearer,
    served_api_process,
)
from tests.support.ledger import add_users, scalar

CHART_MEMORY_LIMIT = 256 * 1024 * 1024  # charts/credit-jobs values.yaml: api.resources.limits.memory (256Mi)
BIG_BODY = 150 * 1024 * 1024
CONSUME = "/api/v1/users/u1/consume"


@pytest.fixture
def api_process(database_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """`credit-jobs api` on a free loopback port; its JSON log lines go to a file."""
    log = tmp_path / "api.log"
    with served_api_process(database_url, log) as (base, process):
        yield base, process, log


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak resident set size: a spike between two samples counts too
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _post_huge_body(base: str, headers: dict[str, str], answers: list[int | str]) -> None:
    """Stream BIG_BODY bytes of JSON-looking junk with a Content-Length; record the status, or how it ended."""
    host, port = base.removeprefix("http://").split(":")
    head = [f"POST {CONSUME} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {BIG_BODY}", "", ""]
    chunk = b"[" + b"1," * (512 * 1024)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall("\r\n".join(head).encode())
        sent = 0
        try:
            while sent < BIG_BODY:
                sock.sendall(chunk[: BIG_BODY - sent])
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed without reading the rest: the point
        try:
            status_line = sock.recv(4096).split(b"\r\n", 1)[0].decode()
            answers.append(int(status_line.split()[1]))
        except (OSError, IndexError, ValueError):
            answers.append(f"closed after {sent} bytes")


def test_unauthenticated_huge_bodies_are_refused_before_they_are_read(
    api_process: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base, process, _ = api_process
    answers: list[int | str] = []
    threads = [threading.Thread(target=_post_huge_body, args=(base, {}, answers)) for _ in range(3)]
    threads.append(threading.Thread(target=_post_huge_body, args=(base, basic(BASIC_USER, "wrong"), answers)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 4
    assert all(a in (401, 413) for a in answers), answers
    assert _rss(process.pid) < CHART_MEMORY_LIMIT
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # still serving


def test_an_authenticated_body_over_the_limit_is_413_and_a_small_one_is_served(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    add_users(engine, [("u1", "pro", "active", False, False)])
    with api_client(monkeypatch, engine) as (client, _):
        too_big = client.post(
            CONSUME,
            content=b'{"amount": 1, "pad": "' + b"x" * 70_000 + b'"}',
            headers={**bearer(LEDGER_TOKEN), "Idempotency-Key": "k1", "Content-Type": "application/json"},
        )
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["code"] == "payload_too_large"
        assert "65536 bytes" in too_big.json()["error"]
        chunked = client.post(  # no Content-Length: counted as it arrives
            CONSUME,
            content=iter([b'{"amount": 1, "pad": "', b"x" * 70_000, b'"}']),
            headers={**bearer(LEDGER_TOKEN), "Idempotency-Key": "k2", "Content-Type": "application/json"},
        )
        assert chunked.status_code == 413, chunked.text
        small = client.post(CONSUME, json={"amount": 1}, headers={**bearer(LEDGER_TOKEN), "Idempotency-Key": "k3"})
        assert small.status_code == 404, small.text  # no credit account: the body was read and served


def test_malformed_json_without_credentials_is_401_not_a_parse_error(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    with api_client(monkeypatch, engine) as (client, _):
        answer = client.post(CONSUME, content=b"{not json", headers={"Content-Type": "application/json"})
        assert answer.status_code == 401, answer.text
        assert "WWW-Authenticate" in answer.headers


def test_a_password_guesser_locks_out_no_other_credential_from_its_address(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    """The Seen: 200 wrong passwords from one address, then the billing app's bearer token from the same address
    was answered 429. The guesser is held to its budget (20 failures a minute by default); nobody else is."""
    add_users(engine, [("u1", "pro", "active", False, False)])
    with api_client(monkeypatch, engine) as (client, _):
        statuses = [
            client.get("/api/v1/users/u1/balance", headers=basic(BASIC_USER, f"guess-{n}")).status_code
            for n in range(200)
        ]
        assert statuses.count(401) == 20, statuses
        assert statuses.count(429) == 180
        app = client.get("/api/v1/users/u1/balance", headers=bearer(LEDGER_TOKEN))
        assert app.status_code == 200, app.text
        other_user = client.get("/api/v1/users/u1/balance", headers=basic("someone-else", "x"))
        assert other_user.status_code == 401  # its own budget, not the guesser's
        held = client.get("/api/v1/users/u1/balance", headers=basic(BASIC_USER, BASIC_PASSWORD))
        assert held.status_code == 429  # the principal under attack, from the attacker's address, waits
        assert int(held.headers["Retry-After"]) >= 1


def test_a_spoofed_forwarded_for_header_changes_nothing(
    api_process: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base, _, log = api_process
    statuses = [
        httpx.get(
            f"{base}/api/v1/users/u1/balance",
            headers={**basic(BASIC_USER, "wrong"), "X-Forwarded-For": f"9.9.9.{n}"},
            timeout=10,
        ).status_code
        for n in range(25)
    ]
    assert statuses.count(401) == 20, statuses  # rotating the header does not escape the failed-auth budget
    assert statuses.count(429) == 5
    clients = {
        json.loads(line).get("client")
        for line in log.read_text().splitlines()
        if line.startswith("{") and json.loads(line).get("event") == "api.request"
    }
    assert clients == {"127.0.0.1"}, clients


def test_a_utf8_idempotency_key_is_read_as_the_caller_wrote_it(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    """The Seen: a UTF-8 key was refused with mojibake in the message ('ÐºÐ»Ñ…'). It is the caller's text."""
    add_users(engine, [("u1", "pro", "active", False, False)])
    headers = {**bearer(LEDGER_TOKEN), "Idempotency-Key": "заказ-7".encode()}
    with api_client(monkeypatch, engine) as (client, _):
        first = client.post("/api/v1/users/u1/grants", json={"amount": 5, "type": "gift"}, headers=headers)
        assert first.status_code == 201, first.text
        assert scalar(engine, "SELECT idempotency_key FROM credit_grants") == "заказ-7"
        again = client.post("/api/v1/users/u1/grants", json={"amount": 5, "type": "gift"}, headers=headers)
        assert (again.status_code, again.json()["data"]["replayed"]) == (200, True)


def test_an_idempotency_key_that_is_not_utf8_is_a_clear_422(
    api_process: tuple[str, subprocess.Popen[str], Path],
) -> None:
    """Raw bytes on a real socket (an HTTP client library would re-encode them)."""
    base, _, _ = api_process
    host, port = base.removeprefix("http://").split(":")
    body = b'{"amount": 5, "type": "gift"}'
    request = (
        (
            f"POST /api/v1/users/u1/grants HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {LEDGER_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        ).encode()
        + b"Idempotency-Key: \xff\xfeorder\r\n\r\n"
        + body
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"422", answer
    assert json.loads(payload)["error"] == "the Idempotency-Key header is not valid UTF-8: send UTF-8 text"


@pytest.mark.parametrize("path", ["/api/v1/users/%FF/balance", "/api/v1/users/ab%E2%82/balance"])
def test_a_path_that_is_not_utf8_is_a_clear_400_never_a_replacement_character(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, path: str
) -> None:
    """The Seen: `%FF` in a path became `�` silently (here: "no user �")."""
    with api_client(monkeypatch, engine) as (client, _):
        answer = client.get(path, headers=bearer(READ_TOKEN))
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "invalid_path"
        assert "not UTF-8 once percent-decoded" in answer.json()["error"]
        assert "\ufffd" not in answer.text
        assert client.get("/api/v1/users/%D0%B7/balance", headers=bearer(READ_TOKEN)).json()["code"] == "unknown_user"


def test_an_amount_of_thousands_of_digits_is_a_400_that_says_what_and_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    headers = {**bearer(LEDGER_TOKEN), "Idempotency-Key": "k-1", "Content-Type": "application/json"}
    with api_client(monkeypatch, engine) as (client, _):
        answer = client.post("/api/v1/users/u1/consume", headers=headers, content=b'{"amount": ' + b"9" * 5000 + b"}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_request"
    assert "a number of more than 4300 digits" in answer.json()["error"]
    assert 'send e.g. {"amount": 25}' in answer.json()["error"]
    assert scalar(engine, "SELECT count(*) FROM credit_requests") == 0


def test_the_api_docs_and_openapi_document_can_be_switched_off(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    with api_client(monkeypatch, engine, CREDITJOBS_API_DOCS="false") as (client, _):
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404, path
        assert client.get("/healthz").status_code == 200
    monkeypatch.delenv("CREDITJOBS_API_DOCS")
    with api_client(monkeypatch, engine) as (client, _):  # the default: on, for development
        assert client.get("/openapi.json").status_code == 200
