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

## run: set up, load sample_reports/ into $(DB) and print the summary
run: $(STAMP)
	@mkdir -p var
	-$(BIN)/tlswatch --db $(DB) ingest --format table sample_reports/valid
	$(BIN)/tlswatch --db $(DB) summary --format text
	$(BIN)/tlswatch --db $(DB) summary --format table

## system-deps: Debian packages the tests start (Dovecot for the IMAP tests); needs root
system-deps:
	@if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then \
	  echo "installing dovecot-imapd (the IMAP tests run a real Dovecot)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd; \
	fi

## test: set up, then lint, type-check and run the tests
test: system-deps lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check tlswatch tests bench

typecheck: $(STAMP)
	$(BIN)/mypy tlswatch

unit: $(STAMP)
	$(BIN)/pytest -q

## bench: the benchmarks (installs parsedmarc into the venv for the comparison)
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/summary_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
