"""The image, as far as it can be checked without a container engine: what the Dockerfile does, step
by step — the package and its dependencies turned into wheels (`pip wheel ".[s3,api,operator]"`), installed from those
wheels alone into a clean virtualenv (`pip install --no-index --find-links`) — then `credit-jobs run distribute-credits`
run the way the chart runs the image: as uid/gid 10001, on a read-only root filesystem with only /tmp writable,
`LOG_FORMAT=json`, `DATABASE_URL` from the environment, against a real PostgreSQL. bubblewrap (Debian `bubblewrap`,
`make system-deps`) provides the user namespace and the read-only root. What only a real build checks (the base
image, `useradd`, the entrypoint) is left to `docker build`; tests/chart/test_dockerfile.py lints the Dockerfile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.ledger import ELIGIBLE_SQL, add_policy, add_users, scalar
from tests.support.socket_forwarder import UnixSocketForwarder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
IMAGE_UID = 10001  # the Dockerfile's `USER 10001:10001`, and the chart's runAsUser / runAsGroup


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_image_install_runs_a_distribution_as_uid_10001_on_a_read_only_root(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is missing: `make system-deps` installs it (Debian package bubblewrap)"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    source, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    # The build stage's COPY: only these go into the image.
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("jobs", "operator"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    python = getattr(sys, "_base_executable", sys.executable)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), ".[s3,api,operator]"], cwd=source)
    _run([python, "-m", "venv", str(venv)])
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": os.environ["PATH"]}
    pip = [str(venv / "bin/pip"), "install", "-q", "--no-index", "--find-links", str(wheels)]
    # Without the `operator` extra (a laptop's install): no Kopf, no Kubernetes client; the commands that need them
    # say how to get them (exit 2) instead of a traceback.
    _run([*pip, f"credit-jobs[s3,api]=={version}"], env=env)
    for command in (["operator"], ["trigger", "grant"]):
        done = subprocess.run(
            [str(venv / "bin/credit-jobs"), *command], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 2, done.stderr
        assert "which is not installed: pip install 'credit-jobs[operator]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    _run([*pip, f"credit-jobs[s3,api,operator]=={version}"], env=env)  # the image's set

    add_policy(engine, "pro", "subscription", 100, None)
    add_users(engine, [(u, "pro", "active", False, False) for u in range(1, 51)])
    with UnixSocketForwarder(database_url) as forwarder:
        url = forwarder.url().replace("postgresql+psycopg://", "postgresql://", 1)
        sandbox = [
            bwrap,
            "--ro-bind", "/", "/",  # the root filesystem, read-only (readOnlyRootFilesystem)
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",  # the chart's emptyDir at /tmp: the only writable place
            "--ro-bind", str(venv), str(venv),  # the image's site-packages (under /tmp here, so bound back)
            "--unshare-user", "--uid", str(IMAGE_UID), "--gid", str(IMAGE_UID),
            "--chdir", "/tmp",  # the Dockerfile's WORKDIR
            "--clearenv",
            "--setenv", "PATH", f"{venv}/bin:/usr/bin:/bin",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "LOG_FORMAT", "json",
            "--setenv", "DATABASE_URL", url,
            "--setenv", "CREDITJOB_NAME", "monthly-credits",
        ]  # fmt: skip
        whoami = _run(
            [*sandbox, "sh", "-c", "id -u; id -g; touch /usr/x 2>/dev/null && echo writable || echo read-only"]
        )
        assert whoami.stdout.split() == [str(IMAGE_UID), str(IMAGE_UID), "read-only"]
        done = _run([*sandbox, "credit-jobs", "run", "distribute-credits", "--period-key", "2026-11"])
    assert "run.finished" in done.stderr
    assert '"status": "succeeded"' in done.stderr
    assert (
        scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key = '2026-11'")
        == scalar(engine, ELIGIBLE_SQL)
        == 50
    )
    assert scalar(engine, "SELECT status FROM job_runs") == "succeeded"
