"""The docs describe the code as it is: every `credit-jobs <command>` and every environment variable that README.md
and docs/*.md mention exists, and no project file cites the design brief users do not have.

Commands come from the Typer app the console script runs; variables from the jobs `Settings`, the operator's
`OperatorSettings`, the container environment the operator renders, and the few names adapters read from
`os.environ` directly. Run by `make test` with the other unit tests.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import typer

from credit_jobs.entrypoints.api.settings import ApiSettings
from credit_jobs.entrypoints.cli.app import app
from credit_jobs.entrypoints.settings import VARIABLES
from credit_operator.creditjob import parse_creditjob
from credit_operator.cronjob_manifest import ManifestDefaults, build_cronjob, build_job_from_cronjob
from credit_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"```.*?```", re.S)
_SPAN = re.compile(r"`([^`\n]+)`")
# `credit-jobs WORD [WORD]`, where the words are followed by a space, a closing quote/bracket or the end: this
# leaves out `helm install credit-jobs charts/credit-jobs` and image names.
_COMMAND = re.compile(r"(?:^|[\s($])credit-jobs ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?(?=[\s`'\")]|$)", re.M)
_OUR_VARIABLE = re.compile(r"\bCREDITJOBS?_[A-Z0-9_]+\b")
_TABLE_VARIABLE = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \|", re.M)
# Variables the docs name that belong to other programs (boto3's credential chain), not to credit-jobs.
_FOREIGN = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def _code(text: str) -> str:
    """Only what the docs show as code: fenced blocks and inline spans (prose says "credit-jobs runs a …")."""
    blocks = _FENCE.findall(text)
    spans = _SPAN.findall(_FENCE.sub("", text))
    return "\n".join(blocks + spans)


def _commands() -> dict[str, set[str]]:
    """Top-level command → its subcommands (empty for a plain command)."""
    root: Any = typer.main.get_command(app)
    return {name: set(getattr(command, "commands", {})) for name, command in root.commands.items()}


def _rendered_env() -> set[str]:
    job = parse_creditjob(
        {
            "metadata": {"name": "monthly", "namespace": "billing"},
            "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", "parallelism": 2},
        }
    )
    cronjob = build_cronjob(job, ManifestDefaults(image="img", pushgateway_url="http://pushgateway:9091"))
    manual = build_job_from_cronjob(cronjob, name="monthly-m-1", trigger="manual", period_key="2026-10")
    names: set[str] = set()
    for body in (cronjob["spec"]["jobTemplate"], manual):
        for container in body["spec"]["template"]["spec"]["containers"]:
            names |= {env["name"] for env in container["env"]}
    return names


def _known_variables() -> set[str]:
    jobs = set(VARIABLES) | {name.upper() for name in ApiSettings.model_fields}
    operator: set[str] = set()
    prefix = str(OperatorSettings.model_config.get("env_prefix", ""))
    for name, info in OperatorSettings.model_fields.items():
        aliases = getattr(info.validation_alias, "choices", None)
        operator |= {str(a).upper() for a in aliases} if aliases else {f"{prefix}{name}".upper()}
    read_directly: set[str] = set()
    for source in (ROOT / "jobs" / "credit_jobs").rglob("*.py"):
        read_directly |= set(re.findall(r"environ(?:\.get\(|\[)\"([A-Z][A-Z0-9_]+)\"", source.read_text()))
    return jobs | operator | _rendered_env() | read_directly | {"JOB_COMPLETION_INDEX"}


def test_every_documented_command_exists() -> None:
    commands = _commands()
    missing: list[str] = []
    for doc in DOCS:
        for first, second in _COMMAND.findall(_code(doc.read_text())):
            if first not in commands:
                missing.append(f"{doc.name}: credit-jobs {first}")
            elif commands[first] and second and second not in commands[first]:
                missing.append(f"{doc.name}: credit-jobs {first} {second}")
    assert not missing, "the docs mention commands the CLI does not have:\n" + "\n".join(missing)


def test_the_scan_sees_the_commands_the_docs_show() -> None:
    """Guard against a scan that finds nothing (and so can never fail)."""
    seen = {first for doc in DOCS for first, _ in _COMMAND.findall(_code(doc.read_text()))}
    assert {"run", "check", "runs", "db", "operator", "trigger", "schedule"} <= seen


def test_documented_usecases_exist() -> None:
    from credit_jobs.usecases.registry import USECASES

    pattern = re.compile(r"credit-jobs run ([a-z][a-z-]*)(?=[\s`'\")]|$)", re.M)
    bad = [
        f"{doc.name}: credit-jobs run {name}"
        for doc in DOCS
        for name in pattern.findall(_code(doc.read_text()))
        if name not in USECASES
    ]
    assert not bad, "the docs run usecases that do not exist:\n" + "\n".join(bad)


def test_every_documented_environment_variable_exists() -> None:
    known = _known_variables()
    unknown: list[str] = []
    for doc in DOCS:
        text = doc.read_text()
        named = set(_OUR_VARIABLE.findall(text)) | set(_TABLE_VARIABLE.findall(text))
        unknown += [f"{doc.name}: {name}" for name in sorted(named - known - _FOREIGN)]
    assert not unknown, "the docs mention variables nothing reads or sets:\n" + "\n".join(unknown)


def test_every_setting_is_documented() -> None:
    """The other direction: a variable the code reads is in the docs, so nobody has to read the source."""
    documented = "\n".join(doc.read_text() for doc in DOCS)
    undocumented = sorted(name for name in _known_variables() if f"`{name}`" not in documented)
    assert not undocumented, f"variables read or set by the code but not documented: {undocumented}"


def test_no_project_file_cites_the_design_brief() -> None:
    brief = "design" + ".md"  # spelled apart so this file does not cite it
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    citing = [
        name
        for name in files
        if (ROOT / name).is_file() and brief in (ROOT / name).read_text(encoding="utf-8", errors="replace")
    ]
    assert not citing, f"files citing {brief}, which users do not have (cite docs/contract.md): {citing}"
