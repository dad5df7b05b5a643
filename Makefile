# Two commands from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
DB     ?= var/tlswatch.duckdb

.PHONY: run test lint typecheck unit bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: set up, load sample_reports/ into $(DB), print the summary, then serve on loopback
run: $(STAMP)
	@mkdir -p var
	-$(BIN)/tlswatch --db $(DB) ingest --format table sample_reports/valid
	$(BIN)/tlswatch --db $(DB) summary --format text
	$(BIN)/tlswatch --db $(DB) summary --format table
	@echo
	@echo "Receivers and dashboard start now (Ctrl-C stops them)."
	@echo "Dashboard: http://127.0.0.1:8080/    Send a new report from another terminal"
	@echo "(yesterday's, a new report-id each time; it prints what to look at):"
	@echo "  $(BIN)/python tools/send_report.py --db $(DB)"
	@# The samples' domains are documentation names (RFC 2606): no daily checks of them.
	TLSWATCH_CHECK_INTERVAL_HOURS=0 $(BIN)/tlswatch --db $(DB) serve --spool var/spool

## system-deps: Debian packages the tests start: Dovecot (IMAP), Chromium (dashboard), nginx (proxy),
## and promtool (Debian's prometheus, without its recommends) to check deploy/prometheus-alerts.yml
## Postfix (relay, LMTP and pipe, as deploy/postfix.md says), systemd (systemd-analyze verify),
## PostgreSQL 15 (the tests start their own cluster in a temp dir, on a unix socket),
## BIND 9 (the tests start their own named in a temp dir, on a loopback port, for DNS updates),
## pebble (a test ACME server: the tests obtain certificates from it on loopback)
system-deps:
	@missing=""; \
	command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ] || missing="$$missing postfix"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing="$$missing dovecot-imapd"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql-15"; \
	command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ] || missing="$$missing bind9"; \
	command -v pebble >/dev/null 2>&1 || missing="$$missing pebble"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (the tests run them for real)"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v promtool >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

## test: set up, then lint, type-check and run the tests
test: system-deps lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check tlswatch tests bench

typecheck: $(STAMP)
	$(BIN)/mypy tlswatch

# The tests that run a second time with the store in PostgreSQL (the rest is about files,
# processes and receivers, the same whatever the engine).
PG_TESTS = tests/store tests/analytics tests/web tests/test_cli.py tests/test_exports.py \
	tests/test_late_reports.py tests/test_lake.py tests/test_tenants.py tests/mtasts/test_policyops.py

unit: $(STAMP)
	$(BIN)/pytest -q
	TLSWATCH_TEST_ENGINE=postgresql $(BIN)/pytest -q $(PG_TESTS)

## bench: the benchmarks (installs parsedmarc into the venv for the comparison)
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/ingest_floor.py
	$(BIN)/python bench/summary_bench.py
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/receiver_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
