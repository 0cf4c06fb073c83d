"""Benchmark: how fast a job pod's `credit-jobs run` reaches the database, next to a bare interpreter's start-up.

Not a test (`python bench/bench_startup.py`). These machines are shared and noisy, so every figure is printed next
to a baseline measured in the same run: `python -c pass` (the interpreter alone). For each of `--repeat` rounds:

  baseline     wall time of `python -c pass`
  drivers      wall time and CPU of `python -c "import sqlalchemy, psycopg"`: what any job in Python that talks
               to PostgreSQL through SQLAlchemy pays before its first statement (target: first SQL ≤ 1.5x this)
  connected    process start → the first database connection is open (SQLAlchemy's pool `connect` event)
  first SQL    process start → the first statement the run sends through its engine (`before_cursor_execute`)
  CPU          user + system CPU seconds the probe process used up to that statement (less sensitive than wall
               time to the other processes sharing the machine's cores)

The probe process runs `credit_jobs.entrypoints.cli.main(["run", "expire-credits"])` — the console script's
`main`, what the CronJob container runs (a `run` line: the run command's own Typer app, `entrypoints/cli/run_app.py`) —
against a
migrated embedded PostgreSQL, and exits at its first statement. The medians are printed, with first SQL minus
baseline (what credit-jobs itself costs) and `python -X importtime` of the probe up to that statement: its top
entries (cumulative) and its self time summed per top-level package (where the time goes). Target: first SQL
within 0.5 s of process start.

The image installs wheels, which pip byte-compiles: so does this bench (`compileall` on jobs/ and operator/, the
`__pycache__` directories are git-ignored) — otherwise a PYTHONDONTWRITEBYTECODE shell would time the compiler.

`--against DIR` also probes another checkout (e.g. /work/main: its jobs/ and operator/ on PYTHONPATH), alternating
with this one every round, so that a before/after comparison shares the machine's load, and prints the ratio.
A checkout of an earlier commit, without touching the repository: `git archive COMMIT jobs operator | tar -x -C DIR`.

Then the commands people type, each as a whole process, median wall time and CPU next to the same baseline:
`--version`, `schedule @monthly` (no database), `balance`, `grants`, `runs list` against the running
server by DATABASE_URL, and `balance` on the embedded default (CREDITJOBS_DATA_DIR; its server already running,
as after the first command of a session) — the last line is its cost over the same command by DATABASE_URL.
Targets on a quiet machine: `--version` and `schedule` ≤ 0.3 s, the database commands ≤ 0.8 s, the embedded default
≤ 0.1 s over DATABASE_URL.

Usage: python bench/bench_startup.py [--repeat 7] [--top 12] [--against DIR]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from credit_jobs.adapters.embedded_database import start_embedded
from credit_jobs.adapters.schema_migrations import upgrade_schema

TARGET_S = 0.5
DRIVERS_TARGET = 1.5  # first SQL ≤ 1.5x a bare `import sqlalchemy, psycopg`
ROOT = Path(__file__).resolve().parents[1]

# Runs in the measured process: two event hooks, then the console script's own main().
PROBE = """
import os, sys, time
import sqlalchemy as sa

marks = {}

@sa.event.listens_for(sa.pool.Pool, "connect")
def _connected(*_):
    marks.setdefault("connected", time.time())

@sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
def _first_statement(*_):
    print(marks.get("connected", 0.0), time.time(), flush=True)
    os._exit(0)

from credit_jobs.entrypoints.cli import main
main(["run", "expire-credits"])
print("no statement", flush=True)
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wall(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    cpu, started = _children_cpu(), time.time()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{args[:3]} failed: {done.stderr[-2000:]}")
    return time.time() - started, _children_cpu() - cpu


def _probe(env: dict[str, str]) -> tuple[float, float, float]:
    cpu, started = _children_cpu(), time.time()
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=False)
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 2:
        raise SystemExit(f"probe failed: {done.stdout} {done.stderr[-2000:]}")
    connected, first = (float(f) for f in fields)
    return connected - started, first - started, _children_cpu() - cpu


def _import_profile(env: dict[str, str]) -> list[tuple[int, int, str]]:
    """`python -X importtime` of the probe itself — every import up to the run's first statement — as (cumulative
    µs, self µs, indented name) rows."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROBE], env=env, capture_output=True, text=True, check=False
    )
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), int(parts[0]), parts[2].rstrip()))
    if not rows or done.returncode != 0:
        raise SystemExit(f"importtime probe failed: {done.stderr[-2000:]}")
    return rows


def _by_package(rows: list[tuple[int, int, str]]) -> list[tuple[int, str]]:
    """Self import time summed per top-level package (the standard library's modules each under their own name)."""
    totals: dict[str, int] = {}
    for _, own, name in rows:
        package = name.strip().split(".")[0]
        totals[package] = totals.get(package, 0) + own
    return sorted(((micros, package) for package, micros in totals.items()), reverse=True)


COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "--version": (["--version"], 0.3),
    "schedule @monthly": (["schedule", "@monthly"], 0.3),
    "balance": (["balance", "1"], 0.8),
    "grants": (["grants", "1"], 0.8),
    "runs list": (["runs", "list"], 0.8),
}


def _commands(env: dict[str, str], url: str, repeat: int) -> dict[str, tuple[float, float, float | None]]:
    """(median wall, median CPU, target) of each command people type; the embedded default on a server started by
    the first command (as in a session), stopped at the end with `credit-jobs db stop`."""
    cli = str(Path(sys.executable).with_name("credit-jobs"))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO credit_eligibility (user_id, plan_code, status) VALUES ('1', 'pro', 'active')")
        )
        conn.execute(sa.text("SELECT credit_grant('1', 100, 'gift', 'bench-startup')"))
    engine.dispose()
    with tempfile.TemporaryDirectory() as home:
        embedded = {k: v for k, v in env.items() if k != "DATABASE_URL"} | {"CREDITJOBS_DATA_DIR": home}
        _wall([cli, "demo", "seed", "--users", "1"], embedded)  # starts the embedded server, user '1' with credits
        runs: dict[str, tuple[list[str], dict[str, str], float | None]] = {
            name: ([cli, *args], env, target) for name, (args, target) in COMMANDS.items()
        }
        runs["balance (embedded default)"] = ([cli, "balance", "1"], embedded, None)
        try:
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
            for _ in range(repeat):
                for name, (argv, command_env, _target) in runs.items():
                    samples[name].append(_wall(argv, command_env))
        finally:
            _wall([cli, "db", "stop"], embedded)
    return {
        name: (
            statistics.median(wall for wall, _ in samples[name]),
            statistics.median(cpu_used for _, cpu_used in samples[name]),
            runs[name][2],
        )
        for name in runs
    }


def _tree_env(env: dict[str, str], tree: Path) -> dict[str, str]:
    """The probe's environment with another checkout's packages first on the path (not byte-compiled here: the
    warm-up probe leaves its .pyc files, as an earlier run of that checkout will have)."""
    return env | {"PYTHONPATH": f"{tree / 'jobs'}{os.pathsep}{tree / 'operator'}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--against", type=Path, help="another checkout, probed alternately (before/after)")
    options = parser.parse_args()

    for package in ("jobs", "operator"):
        compileall.compile_dir(ROOT / package, quiet=1)
    server = start_embedded()
    try:
        admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE bench_startup"))
        admin.dispose()
        url = server.url("bench_startup")
        upgrade_schema(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOB", "PUSHGATEWAY"))}
        env |= {"DATABASE_URL": url.replace("postgresql+psycopg://", "postgresql://", 1), "LOG_FORMAT": "json"}

        other_env = _tree_env(env, options.against) if options.against else None
        _probe(env)  # warm the OS page cache and the .pyc files: every round then starts alike
        if other_env is not None:
            _probe(other_env)
        baseline, baseline_cpu, connected, first, cpu = [], [], [], [], []
        drivers, drivers_cpu = [], []
        other_first: list[float] = []
        other_cpu: list[float] = []
        for _ in range(options.repeat):
            wall, wall_cpu = _wall([sys.executable, "-c", "pass"], env)
            baseline.append(wall)
            baseline_cpu.append(wall_cpu)
            wall, wall_cpu = _wall([sys.executable, "-c", "import sqlalchemy, psycopg"], env)
            drivers.append(wall)
            drivers_cpu.append(wall_cpu)
            to_connect, to_first, probe_cpu = _probe(env)
            connected.append(to_connect)
            first.append(to_first)
            cpu.append(probe_cpu)
            if other_env is not None:
                _, to_first, probe_cpu = _probe(other_env)
                other_first.append(to_first)
                other_cpu.append(probe_cpu)
        profile = _import_profile(env)
        commands = _commands(env, url, options.repeat)
    finally:
        server.stop()

    base, base_cpu, conn_s, first_s, cpu_s = (
        statistics.median(v) for v in (baseline, baseline_cpu, connected, first, cpu)
    )
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"startup ({options.repeat} rounds, medians)  python -c pass: {base:.3f} s wall, {base_cpu:.3f} s CPU")
    print(f"  credit-jobs run → connected:   {conn_s:.3f} s  ({conn_s / base:.1f}x baseline)")
    print(
        f"  credit-jobs run → first SQL:   {first_s:.3f} s  ({first_s / base:.1f}x baseline, "
        f"{first_s - base:.3f} s over it; target ≤ {TARGET_S} s: {'met' if first_s <= TARGET_S else 'NOT met'})"
    )
    print(f"  CPU to first SQL:              {cpu_s:.3f} s  ({cpu_s / base_cpu:.1f}x baseline CPU)")
    drivers_s, drivers_cpu_s = statistics.median(drivers), statistics.median(drivers_cpu)
    print(
        f"  import sqlalchemy, psycopg:    {drivers_s:.3f} s wall, {drivers_cpu_s:.3f} s CPU → first SQL "
        f"{first_s / drivers_s:.2f}x its wall, {cpu_s / drivers_cpu_s:.2f}x its CPU "
        f"(target ≤ {DRIVERS_TARGET}x: {'met' if first_s / drivers_s <= DRIVERS_TARGET else 'NOT met'})"
    )
    print("  first SQL, every round: " + " ".join(f"{v:.3f}" for v in first))
    if options.against:
        other_s, other_cpu_s = statistics.median(other_first), statistics.median(other_cpu)
        print(
            f"  {options.against} (alternating): first SQL {other_s:.3f} s ({other_s / base:.1f}x baseline), "
            f"CPU {other_cpu_s:.3f} s ({other_cpu_s / base_cpu:.1f}x baseline CPU)"
        )
        print(f"  this tree / {options.against}: first SQL {first_s / other_s:.2f}x, CPU {cpu_s / other_cpu_s:.2f}x")
    print(f"commands people type ({options.repeat} rounds, medians; baseline python -c pass {base:.3f} s):")
    for name, (wall, cpu_used, target) in commands.items():
        verdict = "" if target is None else f"; target ≤ {target} s: {'met' if wall <= target else 'NOT met'}"
        print(f"  {name:<34} {wall:.3f} s wall ({wall / base:.1f}x), {cpu_used:.3f} s CPU{verdict}")
    over = commands["balance (embedded default)"][0] - commands["balance"][0]
    print(f"  the embedded default costs {over:+.3f} s over DATABASE_URL (target ≤ +0.1 s)")
    total = sum(row[1] for row in profile) / 1e6
    print(f"python -X importtime of the probe (every import up to the first SQL statement): {total:.3f} s")
    print(f"  top {options.top}, cumulative:")
    for micros, _, name in sorted(profile, reverse=True)[: options.top]:
        print(f"  {micros / 1e6:7.3f} s  {name}")
    print(f"  top {options.top} packages, self time summed:")
    for micros, package in _by_package(profile)[: options.top]:
        print(f"  {micros / 1e6:7.3f} s  {package}")


if __name__ == "__main__":
    main()
