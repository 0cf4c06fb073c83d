"""No log line over about a kilobyte: samples capped and counted, long text cut.

Seen: the import dry-run's `run.finished` line alone was ~5 KB, and runs printed key=value lines of 300-5,000
characters. The audit row keeps every sample; the log shows the first few and how many more there are.
"""

from __future__ import annotations

import json

import pytest
import structlog

from credit_jobs.observability.logging import LOG_SAMPLE_ITEMS, configure_logging


def _one_json_line(capsys: pytest.CaptureFixture[str], **fields: object) -> tuple[str, dict[str, object]]:
    configure_logging("json", "info")
    structlog.get_logger().info("run.finished", **fields)
    (line,) = capsys.readouterr().err.splitlines()
    return line, json.loads(line)


def test_a_twenty_item_sample_shows_five_and_counts_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    sample = [{"user_id": f"user-{n:04d}", "period_key": "2026-11", "template_id": n} for n in range(20)]
    line, event = _one_json_line(capsys, period_already_granted_sample=sample, granted=3)
    assert len(line.encode()) <= 1024, len(line)
    shown = event["period_already_granted_sample"]
    assert isinstance(shown, list)
    assert shown[:LOG_SAMPLE_ITEMS] == sample[:LOG_SAMPLE_ITEMS]
    assert shown[LOG_SAMPLE_ITEMS:] == ["… 15 more"]
    assert event["granted"] == 3


def test_long_text_is_cut_and_says_how_long_it_was_but_a_traceback_is_kept_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line, event = _one_json_line(capsys, error="x" * 5000)
    assert len(line.encode()) <= 1024
    assert str(event["error"]).endswith("… (5000 characters)")
    _, crashed = _one_json_line(capsys, traceback="frame\n" * 400)
    assert crashed["traceback"] == "frame\n" * 400


def test_in_a_terminal_the_default_level_is_warning_and_on_a_pipe_info(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    configure_logging("auto")
    structlog.get_logger().info("run.started")
    structlog.get_logger().warning("run.clock_skew")
    shown = capsys.readouterr().err
    assert "run.clock_skew" in shown
    assert "run.started" not in shown
    configure_logging("auto", "info")  # LOG_LEVEL=info or -v
    structlog.get_logger().info("run.started")
    assert "run.started" in capsys.readouterr().err
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    configure_logging("auto")
    structlog.get_logger().info("run.started")
    assert json.loads(capsys.readouterr().err)["event"] == "run.started"
