#!/usr/bin/env bash
# Run a command with every clock moved to an instant, as a real date would move it: Python's, the embedded
# PostgreSQL's (its `now()` and `clock_timestamp()`), and every `credit-jobs` process a test starts.
#
#   tests/at_instant.sh ZONE INSTANT COMMAND...      e.g. tests/at_instant.sh America/New_York 2026-11-01T05:58:30Z pytest …
#
# ZONE becomes TZ for everything started (the embedded server takes it as its TimeZone at initdb); INSTANT is UTC.
# Both clocks get the same offset from the real time, computed here once, so processes started minutes apart (a CLI
# run, a backend) agree on the time and it keeps moving, as in production:
# - every Python process (pytest, each `credit-jobs` process a test starts): time-machine, started by
#   tests/clock/sitecustomize.py;
# - PostgreSQL (`now()`, `clock_timestamp()`): libfaketime (Debian `faketime`), which that sitecustomize preloads into
#   the server's programs alone (see there why not into Python).
# To test a moment (a month's last second, a DST change), start the clock shortly before it: the session's tests
# then run across it.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 ZONE INSTANT_UTC COMMAND..." >&2
  exit 2
fi
zone=$1 instant=$2
shift 2
target=$(date -u -d "$instant" +%s) || { echo "$0: cannot read the instant '$instant'" >&2; exit 2; }
offset=$((target - $(date -u +%s)))
echo "at_instant: TZ=$zone, clock at $(date -u -d "@$target" +%FT%TZ) (offset ${offset} s): $*" >&2
lib=$(dpkg -L libfaketime 2>/dev/null | grep -m1 '/libfaketime.so.1$') \
  || { echo "$0: libfaketime.so.1 not found (Debian package faketime; make system-deps)" >&2; exit 2; }
export TZ=$zone TEST_CLOCK_OFFSET_S=$offset TEST_CLOCK_FAKETIME_LIB=$lib
# time-machine is imported (by the sitecustomize) before pytest would rewrite its plugin module: say nothing of it
export PYTEST_ADDOPTS="-W ignore::pytest.PytestAssertRewriteWarning${PYTEST_ADDOPTS:+ $PYTEST_ADDOPTS}"
export PYTHONPATH="$(cd "$(dirname "$0")" && pwd)/clock${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
