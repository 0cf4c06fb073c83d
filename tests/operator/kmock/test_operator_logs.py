"""`credit-jobs operator` logs JSON lines with the field names the jobs and the metrics use:
its own decisions carry `creditjob`, `namespace`, `reason`, `decision`; Kopf's and the libraries' lines come through
the same formatter (structlog's ProcessorFormatter), so every line parses. LOG_FORMAT=console is for people."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from operator_kmock_support import CJ_PATH, creditjob, get
from operator_replicas import Replica, wait_for


async def test_the_operator_logs_json_lines_with_the_shared_field_names(kube: Any, tmp_path: Path) -> None:
    replica = await Replica("logs", tmp_path / "operator.log").start()
    try:
        await kube.post(CJ_PATH.format(ns="logs"), json=creditjob("monthly", "logs"))
        await wait_for(lambda: get(kube, "cronjobs", "logs", "monthly"), 15, "the CronJob")
        created = await wait_for(
            lambda: [r for r in replica.records() if r.get("reason") == "CronJobCreated"], 5, "the decision line"
        )
    finally:
        assert await replica.stop(signal.SIGTERM) == 0
    records = replica.records()  # every line is JSON (records() fails on any other)
    (line,) = created
    assert (line["creditjob"], line["namespace"], line["level"]) == ("monthly", "logs", "info")
    assert line["decision"]  # what was decided, as the Event's message says it
    assert line["timestamp"].endswith("Z")
    assert {r["logger"].split(".")[0] for r in records} >= {"credit_operator", "kopf"}  # Kopf's lines too
    assert all({"event", "level", "timestamp"} <= r.keys() for r in records)


async def test_log_format_console_is_for_people(kube: Any, tmp_path: Path) -> None:
    replica = await Replica("people", tmp_path / "operator.log", extra_env={"LOG_FORMAT": "console"}).start()
    try:
        await kube.post(CJ_PATH.format(ns="logs"), json=creditjob("weekly", "logs", schedule="0 0 * * 1"))
        await wait_for(lambda: "CronJobCreated" in replica.text(), 15, "the decision line")
    finally:
        assert await replica.stop(signal.SIGTERM) == 0
    line = next(line for line in replica.text().splitlines() if "CronJobCreated" in line)
    assert "creditjob=weekly" in line
    try:
        json.loads(line)
    except ValueError:
        pass
    else:
        raise AssertionError(f"a JSON line with LOG_FORMAT=console: {line}")
